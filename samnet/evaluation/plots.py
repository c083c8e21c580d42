"""The report's figures: per-case Dice box plots and training curves, as PNG files.

Methods are named by their titles (``samnet.evaluation.names``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from samnet.evaluation.names import result_titles
from samnet.evaluation.stats import FOREGROUND, class_title

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@contextmanager
def figure_file(
    path: Path, columns: int, size: tuple[float, float], share_y: bool = False
) -> Iterator[list[Axes]]:
    """Yield the axes of a one-row figure in matplotlib's default style; save it to ``path``.

    The default style is forced because nnU-Net's training log restyles matplotlib globally
    (seaborn, large fonts) in the process that trained, where this report is often drawn.
    """
    # heavy: keeps samnet_compare --help fast; Agg (no display) is chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"):
        figure, axes = plt.subplots(
            1, columns, figsize=size, squeeze=False, sharey=share_y
        )
        try:
            yield axes[0]
            figure.tight_layout()
            figure.savefig(path, dpi=110)
        finally:
            plt.close(figure)


def wrapped(title: str, width: int = 34) -> str:
    """``title`` broken into lines of at most ``width`` characters, for axis labels."""
    return "\n".join(textwrap.wrap(title, width))


def plot_boxplots(report: dict, path: Path) -> None:
    """One panel per class (and foreground), one horizontal box per method and ensemble.

    Methods are labelled by title on the first panel's vertical axis, top to bottom in the
    report's order, so long titles never overlap.
    """
    results = report["methods"] | report["ensembles"]
    titles = result_titles(report["methods"], report["ensembles"])
    labels = [wrapped(titles[name]) for name in results]
    keys = [*report["labels"], FOREGROUND]
    lines = sum(label.count("\n") + 1 for label in labels)
    size = (3.0 + 3.2 * len(keys), 1.2 + 0.2 * lines + 0.25 * len(labels))
    with figure_file(path, len(keys), size, share_y=True) as axes:
        draw_boxplots(axes, report, results, labels, keys)


def draw_boxplots(
    axes: list[Axes],
    report: dict,
    results: dict[str, dict],
    labels: list[str],
    keys: list[str],
) -> None:
    """Into each axis, for its class key, the per-case Dice of every result as a box."""
    positions = range(len(results), 0, -1)
    for axis, key in zip(axes, keys):
        data = [
            [
                row["dice"][key]
                for row in result["per_case"]
                if row["dice"][key] is not None
            ]
            for result in results.values()
        ]
        axis.boxplot(
            data, positions=positions, orientation="horizontal", showmeans=True
        )
        axis.set_title(class_title(report["labels"], key))
        axis.set_xlim(0, 1)
        axis.set_xlabel("Dice per case")
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)


def plot_training_curves(report: dict, path: Path) -> None:
    """Train (solid) and validation (dashed) loss, and EMA pseudo Dice: one colour per method."""
    with figure_file(path, 2, (12, 4.5)) as axes:
        draw_training_curves(*axes, report)


def draw_training_curves(loss_axis: Axes, dice_axis: Axes, report: dict) -> None:
    """Every logged fold of every method as lines; a method's folds share its colour."""
    # heavy: keeps samnet_compare --help fast
    from matplotlib import rcParams
    from matplotlib.ticker import MaxNLocator

    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    titles = result_titles(report["methods"], report["ensembles"])
    for index, (name, method) in enumerate(report["methods"].items()):
        colour = colours[index % len(colours)]
        logged = {f: r["curves"] for f, r in method["folds"].items() if r["curves"]}
        label = f"{titles[name]} (folds {', '.join(logged)})"
        for curves in logged.values():
            loss_axis.plot(curves["train_losses"], color=colour, label=label)
            loss_axis.plot(curves["val_losses"], color=colour, linestyle="--")
            dice_axis.plot(curves["ema_fg_dice"], color=colour, label=label)
            label = None
    loss_axis.set(title="loss: train (solid), validation (dashed)", xlabel="epoch")
    dice_axis.set(title="EMA pseudo Dice (validation)", xlabel="epoch", ylim=(0, 1))
    for axis in (loss_axis, dice_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axis.lines:
            axis.legend(fontsize=6)
        else:
            axis.text(
                0.5,
                0.5,
                "no training log found",
                ha="center",
                transform=axis.transAxes,
            )
