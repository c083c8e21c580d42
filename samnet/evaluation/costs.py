"""What each method's training cost and saw: the report's budget rule and cost table.

Read from each fold's ``samnet_fold_stats.json`` (``samnet.pipeline.fold_stats``, kept in
``report.json`` as the fold's ``training``). Stats written before a field existed still
render: samples seen from the budget's steps x batch (those runs trained their whole
budget before the stats were written), hours as wall-clock hours, memory as peak RSS.
"""

from __future__ import annotations

from samnet.evaluation.sections import (
    MISSING,
    Named,
    Paragraph,
    Table,
    named_once,
    number,
)

# The comparison's budget rule on each device type (samnet_plan_and_train sets it).
BUDGET_RULES = {
    "cuda": "On a GPU every method trains the same epochs x iterations per epoch, each "
    "with its own planned batch: SAM the batch the planner's memory model fits under "
    "AMP, nnU-Net the batch of its own plan (nnU-Net as its authors run it). Methods "
    "therefore see different numbers of samples; the table shows how many.",
    "cpu": "On CPU every method trains the same optimizer steps x batch size (the 2d "
    "methods; a 3d baseline the same steps with the CPU batch of 3d).",
}
# Stats from before samnet recorded what peak_memory_mb measured: the process's peak RSS.
RSS_BEFORE_RECORDED = "peak RSS of the process"


def device_type(training: dict) -> str:
    """``"cuda"`` or ``"cpu"`` of a fold's stats (``cuda:0`` -> ``cuda``)."""
    return training["device"].split(":")[0]


def samples_seen(training: dict) -> int:
    """Slices (2d) or patches (3d) the fold trained on: epochs x iterations x batch."""
    if "samples_seen" in training:
        return training["samples_seen"]
    return training["optimizer_steps"] * training["budget"]["batch_size"]


def training_hours(training: dict) -> str:
    """The epochs' wall clock, labelled: GPU-hours (wall x GPUs) on CUDA, wall-clock hours
    on CPU (not CPU-hours: the threads were not all busy all the time)."""
    hours = training["train_seconds"] / 3600
    if device_type(training) == "cuda":
        return f"{hours * training.get('processes', 1):.3g} GPU-h"
    return f"{hours:.3g} h wall"


def device_cell(training: dict) -> str:
    """The device, with the GPU's name (and count) or the CPU threads where recorded."""
    name = training.get("device_name")
    if name is None:
        return training["device"]
    processes = training.get("processes", 1)
    return f"{processes} x {name}" if processes > 1 else name


def peak_memory_cell(training: dict) -> str:
    """Peak MB, tagged GPU (CUDA allocations) or RSS (the process's resident memory)."""
    measured_gpu = "peak_memory_measure" in training and device_type(training) == "cuda"
    return f"{training['peak_memory_mb']:,.0f} {'GPU' if measured_gpu else 'RSS'}"


def recorded_stats(report: dict) -> list[dict]:
    """The training stats of every fold of every method that has them."""
    return [
        result["training"]
        for method in report["methods"].values()
        for result in method["folds"].values()
        if result["training"]
    ]


def budget_rule(report: dict) -> list[Paragraph]:
    """The budget rule of each device type the report's folds trained on; nothing
    without training stats."""
    devices = {device_type(training) for training in recorded_stats(report)}
    rules = [BUDGET_RULES[device] for device in BUDGET_RULES if device in devices]
    return [Paragraph("Training budget", " ".join(rules))] if rules else []


def cost_note(report: dict) -> str:
    """How the cost table's columns are measured, with each memory measure used."""
    measures = sorted(
        {
            f"{training.get('peak_memory_measure', RSS_BEFORE_RECORDED)} "
            f"({device_type(training)})"
            for training in recorded_stats(report)
        }
    )
    return (
        "Optimizer steps: epochs x iterations per epoch. Samples seen: epochs trained x "
        "iterations x batch (all GPUs together). Training hours: the epochs' wall clock, "
        "as GPU-hours on CUDA (wall x GPUs) and as wall-clock hours on CPU on the threads "
        "named. Peak memory (MB): "
        + "".join(f"{measure}; " for measure in measures)
        + "on CPU the peak of the whole process, which folds trained one after another "
        "in one process share. The embedding cache of a frozen encoder is built once per "
        "dataset and shared by the folds."
    )


def cost_table(report: dict, titles: dict[str, str]) -> Table:
    """Per method and fold: device, budget, samples seen, hours, memory, parameters."""
    rows = []
    for name, method in report["methods"].items():
        for fold, result in method["folds"].items():
            training = result["training"]
            cells = (
                [
                    device_cell(training),
                    str(training["optimizer_steps"]),
                    str(training.get("batch_size", training["budget"]["batch_size"])),
                    f"{samples_seen(training):,}",
                    training_hours(training),
                    number(training.get("embedding_cache_seconds"), 0),
                    peak_memory_cell(training),
                    f"{training['trainable_parameters']:,}",
                ]
                if training
                else [MISSING] * 8
            )
            rows.append([Named(titles[name], name), fold, *cells])
    return Table(
        "Training cost",
        [
            "method",
            "fold",
            "device",
            "optimizer steps",
            "batch",
            "samples seen",
            "training hours",
            "embedding cache s",
            "peak memory (MB)",
            "trainable parameters",
        ],
        named_once(rows),
        cost_note(report),
    )
