"""Every name samnet gives to something on disk: one home, so that readers and writers agree.

Existing plans and results folders are found by these names: changing one orphans them.
"""

# Plans and configurations in nnUNet_preprocessed/DATASET/.
SAM_PLANS = "samnetPlans"
SAM_CONFIGURATION = "sam_2d"
# nnU-Net's 2d U-Net at SAM's in-plane spacing (planned when SAM downsamples the slices).
LOWRES_2D_CONFIGURATION = "2d_lowres"
# nnU-Net's default plans identifier: SAMPlanner's nnU-Net configurations reuse its data.
BASELINE_PLANS = "nnUNetPlans"
# nnU-Net's residual-encoder M preset (nnUNetPlannerResEncM); its 2d and 3d_fullres reuse
# BASELINE_PLANS' data.
RESENC_M_PLANS = "nnUNetResEncUNetMPlans"

# Files in a fold folder, nnUNet_results/DATASET/TRAINER__PLANS__CONFIGURATION/fold_k/.
# Written by samnet.pipeline.train_fold into each fold folder; read by the report.
# The fold's cost, written last, once validation completed: it marks the fold done.
FOLD_STATS_FILE = "samnet_fold_stats.json"
FOLD_BUDGET_FILE = "samnet_budget.json"
# What the fold trains on: a hash of its configuration and preprocessed data's stamp.
FOLD_ORIGIN_FILE = "samnet_trained_from.json"
FINAL_CHECKPOINT = "checkpoint_final.pth"
LATEST_CHECKPOINT = "checkpoint_latest.pth"
FEW_SHOT_SUPPORT_FILE = "fewshot_support.json"
SUPPORT_SLICES_FILE = "support_slices.json"
# The report's NSD and HD95 of the fold's validation cases (samnet.evaluation.surface);
# an ensemble folder in ENSEMBLES_FOLDER holds one too.
SURFACE_METRICS_FILE = "samnet_surface_metrics.json"

# Folders and files samnet writes in nnUNet_results/DATASET/.
REPORT_FOLDER = "samnet_report"
ENSEMBLES_FOLDER = "samnet_ensembles"
# Written last into an ensemble folder: what it was made from.
ENSEMBLE_SOURCES_FILE = "samnet_ensemble_sources.json"
BOXPLOT_FILE = "dice_boxplot.png"
CURVES_FILE = "training_curves.png"
POSTPROCESSING_SUMMARY = "postprocessing.json"
SLURM_FOLDER = "samnet_slurm"
PRETRAIN_FOLDER = "samnet_pretrain"
PRETRAIN_STATE_FILE = "state.pth"
PRETRAIN_BUDGET_FILE = "budget.json"
PRETRAIN_RECORD_FILE = "pretrain.json"
PRETRAIN_CURVE_FILE = "pretrain_loss.png"
# The weights file is BACKBONE + this.
PRETRAINED_WEIGHTS_SUFFIX = "_pretrained.pth"

# Folders samnet adds to nnUNet_preprocessed/DATASET/.
CACHE_FOLDER = "samnet_cache"
CACHE_INFO_FILE = "cache.json"

# Records and files beside what samnet writes for the user.
PREDICTION_RECORD = "samnet_prediction.json"
SUBMISSION_RECORD = "samnet_submission.json"
COMBINED_SUBMISSION_ZIP = "msd_submission.zip"
IDENTITY_SUFFIX = ".identity.json"

# nnU-Net's cross-validation splits in nnUNet_preprocessed/DATASET/.
SPLITS_FILE = "splits_final.json"
# DATA_IDENTIFIER.json in it: written by samnet.pipeline.planning once nnU-Net's
# preprocessing of that data folder has finished, the settings and cases it was made
# with. Beside the data folders, not in them: nnU-Net infers a folder's storage format
# from the file endings it holds.
PREPROCESSED_STAMPS_FOLDER = "samnet_preprocessed"
# Lock files (and their holders) of runs on a dataset, in nnUNet_preprocessed/DATASET/.
LOCK_FOLDER = ".samnet_locks"
# What samnet wrote into a user's output folder: --overwrite replaces only these.
MANIFEST = ".samnet_outputs.json"
