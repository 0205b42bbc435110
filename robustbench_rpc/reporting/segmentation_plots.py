"""Plots of segmentation results: mIoU per corruption, robust mIoU against the budget, predicted masks.

The first two are functions of the tidy table; :func:`masks_figure` draws images, true masks and predictions that
the caller read (the PNGs a segmentation run saves under ``predictions/`` of its results directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from robustbench_rpc.reporting.plots import _new_figure, _slug, corruption_bars

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure


def corruption_miou_figure(frame: pd.DataFrame, metric: str = "mIoU") -> Figure | None:
    """Grouped bars of the segmentation ``metric`` per corruption (mean over severities), one series per model."""
    from robustbench_rpc.reporting.segmentation import corruption_miou, segmentation_rows

    rows = segmentation_rows(frame)
    if rows[(rows["condition"] == "corruption") & (rows["metric"] == metric)].empty:
        return None
    wide = corruption_miou(frame, metric)
    return corruption_bars(wide, f"Segmentation {metric} per corruption (mean over severities)", f"{metric} (%)")


def attack_miou_figures(frame: pd.DataFrame, metric: str = "mIoU") -> dict[str, Figure]:
    """One figure per segmentation attack: robust ``metric`` against eps (units of 1/255), one line per model."""
    from robustbench_rpc.reporting.segmentation import _labels, segmentation_rows

    rows = segmentation_rows(frame)
    rows = rows[(rows["condition"] == "attack") & (rows["metric"] == metric)]
    figures: dict[str, Figure] = {}
    if rows.empty:
        return figures
    labels = _labels(rows)
    for name, group in rows.groupby("name", sort=True):
        figure = _new_figure()
        axes = figure.add_subplot()
        for model in dict.fromkeys(group["model_label"]):
            points = group[group["model_label"] == model].groupby("eps")["value"].mean().sort_index()
            axes.plot(points.index.to_numpy() * 255.0, points.to_numpy(), marker="o", label=labels[model])
        budgets = sorted({float(e) * 255.0 for e in group["eps"]})
        if 0 < len(budgets) <= 12:
            axes.set_xticks(budgets, [f"{b:.4g}" for b in budgets])
        axes.set_title(f"Robust segmentation {metric} under {name} (Linf)")
        axes.set_xlabel("perturbation budget ε (units of 1/255)")
        axes.set_ylabel(f"robust {metric} (%)")
        axes.grid(alpha=0.3)
        axes.legend(title="model")
        figures[f"segmentation_attacks_{_slug(name)}"] = figure
    return figures


def segmentation_figures(frame: pd.DataFrame) -> dict[str, Figure]:
    """Every segmentation plot the tidy table supports, keyed by file stem."""
    figures = attack_miou_figures(frame)
    bars = corruption_miou_figure(frame)
    if bars is not None:
        figures["segmentation_corruptions"] = bars
    return figures


def masks_figure(title: str, samples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """Rows of (image, true mask, predicted mask) as RGB arrays, each row named by its sample."""
    figure = _new_figure(6.0, 2.0 * len(samples) + 0.6)
    for row, (name, image, truth, pred) in enumerate(samples):
        for col, (array, what) in enumerate(((image, "image"), (truth, "truth"), (pred, "prediction"))):
            axes = figure.add_subplot(len(samples), 3, row * 3 + col + 1)
            axes.imshow(array, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(what)
            if col == 0:
                axes.set_ylabel(name, fontsize=8)
    figure.suptitle(title)
    return figure
