"""SAMPlanner: nnU-Net's experiment planner plus SAM configurations.

It writes ``samnetPlans.json``: nnU-Net's own configurations, unchanged and pointing at
the same preprocessed data as ``nnUNetPlans`` (so baselines and SAM share one
preprocessing), plus ``sam_2d``: nnU-Net's 2d configuration with the spacing, patch
size and batch size SAM needs and a ``sam`` block (``samnet.core.sam_plan``) that the
SAM trainers read. The plans' ``samnet`` entry keeps the fingerprint and hardware the
rules saw.

When SAM sees the slices coarser than nnU-Net's 2d spacing, it also writes ``2d_lowres``:
nnU-Net's own 2d U-Net, planned by nnU-Net's rules at SAM's in-plane spacing and trained on
``sam_2d``'s preprocessed data. It is the baseline at SAM's resolution, which separates
what the resolution costs from what the architecture does, and the 2d baseline that fits
a CPU budget when the native slices are large (a chest X-ray's 2d patch is 896 x 1024).

Use it through nnU-Net's planning API with the class (``-pl`` only searches inside
nnunetv2)::

    plan_experiment_dataset(4, functools.partial(SAMPlanner, overrides={"input_size": 256}))
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

from samnet.core.layout import (
    BASELINE_PLANS,
    LOWRES_2D_CONFIGURATION,
    SAM_CONFIGURATION,
    SAM_PLANS,
)
from samnet.planners.fingerprint import sam_fingerprint
from samnet.planners.hardware import Hardware, detect_hardware
from samnet.planners.planner import Planner, PlanResult
from samnet.planners.plans_file import AtomicPlansMixin
from samnet.pretraining.identity import finished_pretrained_bases

NETWORK_CLASS = "samnet.models.network.SamSegmentationNetwork"


class SAMPlanner(AtomicPlansMixin, ExperimentPlanner):
    """nnU-Net's ``ExperimentPlanner`` that also plans ``sam_2d`` for this machine; the
    plans file is written atomically (``AtomicPlansMixin``).

    Arguments beyond nnU-Net's:
      hardware: the machine to plan for (default: this one, measured).
      overrides: decisions the user fixed, by rule name: the command line's options
        (``samnet.cli.options.OVERRIDE_OPTIONS``: ``backbone``, ``peft``,
        ``peft_parts``, ``encoder_mode``, ``gradient_checkpointing``, ...) and budget
        (``batch_size``, ``epochs``, ``iterations_per_epoch``).
    """

    planned_configurations = (
        *AtomicPlansMixin.planned_configurations,
        SAM_CONFIGURATION,
        LOWRES_2D_CONFIGURATION,
    )

    def __init__(
        self,
        dataset_name_or_id: str | int,
        gpu_memory_target_in_gb: float = 8,
        preprocessor_name: str = "DefaultPreprocessor",
        plans_name: str = SAM_PLANS,
        overwrite_target_spacing: list[float] | None = None,
        suppress_transpose: bool = False,
        hardware: Hardware | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            dataset_name_or_id,
            gpu_memory_target_in_gb,
            preprocessor_name,
            plans_name,
            overwrite_target_spacing,
            suppress_transpose,
        )
        self.hardware = hardware or detect_hardware()
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    def generate_data_identifier(self, configuration_name: str) -> str:
        # The nnU-Net configurations equal nnUNetPlans' ones, so their data is shared.
        return f"{BASELINE_PLANS}_{configuration_name}"

    def plan_experiment(self) -> dict:
        plans = super().plan_experiment()
        fingerprint = sam_fingerprint(
            Path(self.raw_dataset_folder), self.dataset_fingerprint
        )
        pretrained = finished_pretrained_bases(self.dataset_name)
        result = Planner(
            fingerprint, self.hardware, dict(self.overrides), pretrained
        ).plan()
        sam_configuration = self.sam_configuration(
            plans["configurations"]["2d"], result
        )
        plans["configurations"][SAM_CONFIGURATION] = sam_configuration
        if result.downsampling != 1:
            plans["configurations"][LOWRES_2D_CONFIGURATION] = self.unet_at_sam_spacing(
                sam_configuration, result.downsampling
            )
        plans["samnet"] = {
            "fingerprint": fingerprint.to_dict(),
            "hardware": self.hardware.to_dict(),
            "overrides": self.overrides,
        }
        self.plans = plans
        self.save_plans(plans)
        return plans

    def sam_configuration(self, plan_2d: dict, result: PlanResult) -> dict:
        """nnU-Net's 2d configuration with SAM's spacing, patch, batch and ``sam`` block."""
        configuration = copy.deepcopy(plan_2d)
        factor = result.downsampling
        spacing = [s * factor for s in plan_2d["spacing"]]
        sam = result.sam.to_dict()
        sam["in_plane_spacing"] = spacing
        configuration.update(
            data_identifier=f"{self.plans_identifier}_{SAM_CONFIGURATION}"
            if factor != 1
            else plan_2d["data_identifier"],
            spacing=spacing,
            median_image_size_in_voxels=[
                round(size / factor) for size in plan_2d["median_image_size_in_voxels"]
            ],
            patch_size=list(result.patch_size),
            batch_size=result.batch_size,
            architecture={
                "network_class_name": NETWORK_CLASS,
                "arch_kwargs": {},
                "_kw_requires_import": [],
            },
            sam=sam,
        )
        return configuration

    def unet_at_sam_spacing(self, sam_configuration: dict, downsampling: float) -> dict:
        """nnU-Net's 2d plan (U-Net, patch, batch) at ``sam_2d``'s spacing, on its data."""
        fingerprint = self.dataset_fingerprint
        fullres_spacing = self.determine_fullres_target_spacing()
        shapes = [
            compute_new_shape(shape, spacing, fullres_spacing)
            for spacing, shape in zip(
                fingerprint["spacings"], fingerprint["shapes_after_crop"]
            )
        ]
        # As nnU-Net's plan_experiment counts it for 2d, with slices downsampled in-plane.
        voxels = float(np.prod(np.median(shapes, 0), dtype=np.float64))
        voxels *= self.dataset_json["numTraining"] / downsampling**2
        configuration = self.get_plans_for_configuration(
            sam_configuration["spacing"],
            sam_configuration["median_image_size_in_voxels"],
            sam_configuration["data_identifier"],
            voxels,
            {},
        )
        configuration["batch_dice"] = True
        return configuration
