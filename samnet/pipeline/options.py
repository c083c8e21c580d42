"""The typed options of the pipeline's commands: plain data, no heavy imports.

A command builds them from its parsed arguments before ``configure_environment()``,
then imports the pipeline function that takes them (nnunetv2, under the pipeline, reads
the ``nnUNet_*`` variables at import).
"""

from __future__ import annotations

from dataclasses import dataclass

from samnet.core.errors import SamnetError
from samnet.core.layout import BASELINE_PLANS, RESENC_M_PLANS

METHOD_KINDS = ("sam", "nnunet", "support")
DEFAULT_METHOD_KINDS = ("sam", "nnunet")
# The nnU-Net plans a baseline trains on, by --baselines name: nnU-Net's default planner's
# and its residual-encoder M preset's (nnUNetPlannerResEncM).
BASELINES = {"default": BASELINE_PLANS, "resenc_m": RESENC_M_PLANS}
DEFAULT_BASELINES = ("default",)
FOLDS = range(5)
LAUNCHERS = ("local", "torchrun", "slurm")


@dataclass(frozen=True)
class BudgetOptions:
    """The budget the user asked for; each None is the device's default by the fairness
    rule (``samnet.core.methods.Budget``): nnU-Net's steps and each method's own plan's
    batch on GPU, a CPU-sized one shared by the 2d methods on CPU.

    Attributes:
      epochs, iterations_per_epoch: optimizer steps, epoch by epoch.
      val_iterations_per_epoch: validation batches per epoch (None: a fifth of the steps).
      batch_size: of SAM and every 2d method; batch_size_3d: of the 3d baselines.
    """

    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    batch_size: int | None = None
    batch_size_3d: int | None = None


@dataclass(frozen=True)
class LaunchOptions:
    """How ``samnet_plan_and_train`` starts its fold runs.

    Attributes:
      launcher: one of ``LAUNCHERS``.
      nnodes: machines per fold (torchrun, slurm).
      nproc_per_node: processes per machine; None: one per GPU, or 1 on CPU.
      rendezvous: ``HOST:PORT`` where the nodes meet (torchrun with ``nnodes`` > 1).
      sbatch_options: extra ``#SBATCH`` lines (slurm).
    """

    launcher: str = "local"
    nnodes: int = 1
    nproc_per_node: int | None = None
    rendezvous: str | None = None
    sbatch_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for option in self.sbatch_options:
            check_sbatch_option(option)


def check_sbatch_option(option: str) -> None:
    """One sbatch option for an ``#SBATCH`` line: a line break would end that line and
    start a shell command of its own in the job script."""
    if not option.startswith("-") or not option.isprintable():
        raise SamnetError(
            None,
            f"--sbatch-option {option!r} is not one sbatch option on one line",
            "give one option per --sbatch-option, such as --partition=gpu or "
            "--time=24:00:00, without line breaks or other control characters",
        )


@dataclass(frozen=True)
class PlanAndTrainOptions:
    """What ``samnet_plan_and_train`` trains, with what budget, where.

    Attributes:
      folds: cross-validation folds to train.
      configurations: nnU-Net configurations of the baselines (None: 2d and 3d_fullres if
        planned); ``2d_lowres`` is nnU-Net's 2d U-Net on SAM's data.
      methods: ``METHOD_KINDS`` to train.
      baselines: ``BASELINES`` whose plans the nnU-Net baselines train on, each on every
        configuration.
      budget: the user's budget (``BudgetOptions``); what it leaves open follows the
        fairness rule (``samnet.core.methods.Budget``).
      npz: keep validation probabilities (the report's ensembles need them).
      device: ``auto``, ``cpu`` or ``cuda``.
      launch: here, through torchrun or as SLURM jobs.
      overwrite: re-plan, re-preprocess and retrain.
    """

    folds: tuple[int, ...] = tuple(FOLDS)
    configurations: tuple[str, ...] | None = None
    methods: tuple[str, ...] = DEFAULT_METHOD_KINDS
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    budget: BudgetOptions = BudgetOptions()
    npz: bool = False
    device: str = "auto"
    launch: LaunchOptions = LaunchOptions()
    overwrite: bool = False

    def __post_init__(self) -> None:
        # What the command line's choices guard, for callers from Python.
        if not set(self.methods) <= set(METHOD_KINDS):
            raise SamnetError(
                None,
                f"unknown method in {list(self.methods)}",
                f"choose from {', '.join(METHOD_KINDS)}",
            )
        if not self.baselines or not set(self.baselines) <= set(BASELINES):
            raise SamnetError(
                None,
                f"unknown or no baseline in {list(self.baselines)}",
                f"choose from {', '.join(BASELINES)}",
            )
        if not set(self.folds) <= set(FOLDS):
            raise SamnetError(
                None,
                f"unknown fold in {list(self.folds)}",
                f"choose from {', '.join(map(str, FOLDS))}",
            )

    @property
    def baseline_plans(self) -> tuple[str, ...]:
        """The plans identifiers of ``baselines``, nnU-Net's default first."""
        return tuple(
            plans for name, plans in BASELINES.items() if name in self.baselines
        )


@dataclass(frozen=True)
class PretrainOptions:
    """One continued pre-training run: the budget, the masking and where it runs.

    Attributes:
      steps, batch_size: the optimizer's budget; None: the device's default
        (``samnet.pipeline.pretrain_budget``).
      learning_rate: AdamW's peak learning rate.
      mask_ratio: the fraction of each window's patches hidden from the encoder.
      mask_patch: side (px) of a hidden patch.
      device: ``auto``, ``cpu`` or ``cuda``.
      overwrite: start again instead of resuming (or refusing finished weights).
    """

    steps: int | None = None
    batch_size: int | None = None
    learning_rate: float = 1e-4
    mask_ratio: float = 0.6
    mask_patch: int = 32
    device: str = "auto"
    overwrite: bool = False
