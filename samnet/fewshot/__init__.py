"""Few-shot mode (Xie et al., WACV 2024): a few labelled slices prompt SAM's mask decoder.

The frozen encoder's embeddings of the annotated regions of K support slices become class
prototypes; a small prompt projection (plus a learned embedding per class) turns them
into the tokens SAM's mask decoder queries each image embedding with
(``samnet.models.prototype_head``). Only the decoder
and the projection train, on the support slices alone; the prototypes are stored in the
network, so it segments whole volumes slice by slice with no user interaction, through
nnU-Net's predictor and metric like every other samnet method.

Pieces: ``support_selection`` (which slices: a user's file or an automatic choice,
checked against the fold), ``prototypes`` (masked average pooling, leave-one-out
episodes), ``support_set`` (a fold's support windows on the frozen encoder), and the
trainer ``samnet.trainers.fewshot_trainer.nnUNetTrainerSAMFewShot``. Training and
prediction from Python: :mod:`samnet.pipeline.fewshot` (``train_few_shot``,
``predict_few_shot``).
"""
