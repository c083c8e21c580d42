"""Segmenting new images with trained models, for ``samnet_predict`` and ``samnet_export_msd``.

- ``selection``: which trained models predict (the comparison's best configuration or the
  models named), their folds, and the postprocessing nnU-Net determined for them;
- ``file_formats``: the cases of an input folder, their conversion into the training data's
  format, and the segmentations written back in each input's format and geometry;
- ``run``: nnU-Net's predictor per model, ensembling, postprocessing: ``predict_cases``;
- ``interactive``: a model trained with prompts segments from an annotator's boxes and clicks.
"""
