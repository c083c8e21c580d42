"""SAMPlanner: nnU-Net's experiment planner plus SAM configurations.

It writes ``samnetPlans.json``: nnU-Net's own configurations, unchanged and pointing at
the same preprocessed data as ``nnUNetPlans`` (so baselines and SAM share one
preprocessing), plus ``sam_2d``: nnU-Net's 2d configuration with the spacing, patch
size and batch size SAM needs and a ``sam`` block (``samnet.planners.sam_plan``) that the
SAM trainers read. The plans' ``samnet`` entry keeps the fingerprint and hardware the
rules saw.

Use it through nnU-Net's planning API with the class (``-pl`` only searches inside
nnunetv2)::

    plan_experiment_dataset(4, functools.partial(SAMPlanner, overrides={"input_size": 256}))
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)

from samnet.planners.fingerprint import sam_fingerprint
from samnet.planners.hardware import Hardware, detect_hardware
from samnet.planners.rules import Planner, PlanResult

SAM_PLANS = "samnetPlans"
SAM_CONFIGURATION = "sam_2d"
# nnU-Net's default plans identifier: SAMPlanner's nnU-Net configurations reuse its data.
BASELINE_PLANS = "nnUNetPlans"
NETWORK_CLASS = "samnet.models.network.SamSegmentationNetwork"


class SAMPlanner(ExperimentPlanner):
    """nnU-Net's ``ExperimentPlanner`` that also plans ``sam_2d`` for this machine.

    Arguments beyond nnU-Net's:
      hardware: the machine to plan for (default: this one, measured).
      overrides: decisions the user fixed, by rule name (``backbone``, ``input_size``,
        ``peft``, ``encoder_mode``, ``lora_rank``, ``batch_size``, ``epochs``,
        ``iterations_per_epoch``, ``learning_rate``, ``max_hours``, ``checkpoint``).
    """

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
        result = Planner(fingerprint, self.hardware, dict(self.overrides)).plan()
        plans["configurations"][SAM_CONFIGURATION] = self.sam_configuration(
            plans["configurations"]["2d"], result
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
