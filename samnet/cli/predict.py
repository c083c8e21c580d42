"""``samnet_predict``: segment a folder of new images with the model the comparison chose.

The model is the best configuration in ``samnet_report/report.json`` (one SAM or nnU-Net
model, or an ensemble of two), or the models named with ``--model``. All the predicting is
nnU-Net's: ``nnUNetPredictor`` runs each model (averaging its folds), ``ensemble_folders``
averages the probabilities of several models, and the ``postprocessing.pkl`` that nnU-Net's
``determine_postprocessing`` wrote for the chosen configuration is applied by
``apply_postprocessing_to_folder``.

Inputs may be NIfTI, MHA, NRRD or PNG (also BMP, TIFF, JPEG), one file per channel named
``CASE_0000.ext`` as in nnU-Net, or one file per case. Files in a format other than the
training data's are converted into it first, keeping their geometry. Each segmentation is
written back in its input's format and geometry as ``OUT/CASE.ext`` (PNG for JPEG inputs:
labels must not be compressed lossily). OUT is never the input folder, inside it or
above it; ``--overwrite`` replaces only the files samnet wrote in OUT before (its
``.samnet_outputs.json`` lists them), never other files there.

The pieces live in :mod:`samnet.inference`; this module is the command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from samnet.cli.model_options import add_model_arguments, selection_and_options
from samnet.core.errors import SamnetError, cli_entry
from samnet.core.layout import MANIFEST, PREDICTION_RECORD
from samnet.core.output_folder import own_outputs, refuse_overlap
from samnet.inference.file_formats import cases_in_folder
from samnet.inference.run import predict_cases
from samnet.inference.selection import channel_names, describe, training_dataset_json


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_predict",
        description="Segment a folder of images (NIfTI, MHA, NRRD, PNG) with the best model "
        "samnet found, or the models you name; outputs in each input's format and geometry.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "-i", "--input", type=Path, required=True, help="folder of images"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="folder for the segmentations, outside -i; with --overwrite, only what "
        f"samnet wrote there before (listed in {MANIFEST}) is replaced",
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        help="a prompts file (JSON: boxes, clicks or 3D boxes per case and class) for a "
        "model trained with --prompts; see the README",
    )
    args = parser.parse_args(argv)
    refuse_overlap(args.input, args.output)
    # torch: here, not at the top, keeps --help fast
    from samnet.inference.interactive import is_prompted, predict_with_prompts

    _, selection, options = selection_and_options(args)
    print(describe(selection))
    channels = channel_names(training_dataset_json(selection))
    cases = cases_in_folder(args.input, len(channels))
    prompted = any(is_prompted(member) for member in selection.members)
    if prompted and args.prompts is None:
        raise SamnetError(
            None,
            f"{selection.name} was trained to follow prompts and segments nothing without them",
            "pass --prompts FILE (see the README), or choose another --model",
        )
    with own_outputs(args.output, args.overwrite) as folder:
        if args.prompts is not None:
            record = predict_with_prompts(
                cases, folder, selection, options, args.prompts
            )
        else:
            record = predict_cases(cases, folder, selection, options)
        (folder / PREDICTION_RECORD).write_text(json.dumps(record, indent=2))
    print(
        f"samnet: {record['cases']} segmentation(s) in {args.output} "
        f"({record['seconds']:.0f} s, {record['seconds_per_case']:.1f} s per case on "
        f"{options.device}); details in {PREDICTION_RECORD}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
