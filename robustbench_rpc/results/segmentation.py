"""Segmentation cells in the tidy table: aAcc / mIoU / mAcc from the records' class areas, and the corrupted mean.

A segmentation cell's records (:data:`robustbench_rpc.results.schema.SEGMENTATION_COLUMNS`) hold per-image class
histograms; the cell's metrics are those of their totals (:func:`robustbench_rpc.metrics.segmentation.
segmentation_metrics`), in %. Per model and dataset, the corruption cells also give summary rows (condition
:data:`SEGMENTATION_SUMMARY_CONDITION`): aAcc, mIoU and mAcc averaged over the corruption cells, as the paper's
"corrupted" columns are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustbench_rpc.metrics.segmentation import ClassAreas, segmentation_metrics

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Folder of a results directory where the first clean predictions of each segmentation cell are kept, one
#: sub-folder ``<slug>-<key>`` per cell.
PREDICTIONS_DIR = "predictions"
#: Record columns of a segmentation cell that the metrics read.
AREA_COLUMNS = ("area_intersect", "area_union", "area_pred", "area_label")
#: The dataset-level metrics of a segmentation cell, in this order.
SEGMENTATION_METRICS = ("aAcc", "mIoU", "mAcc")
#: Condition of the rows averaging a model's corruption cells of one segmentation dataset.
SEGMENTATION_SUMMARY_CONDITION = "segmentation-c-summary"


def areas_of_records(records: pd.DataFrame) -> ClassAreas:
    """Stack the records' per-image histograms into ``[N, C]`` arrays, in the records' order."""
    if records.empty:
        raise ValueError("a segmentation cell needs at least one record")
    return ClassAreas(*(np.asarray([list(v) for v in records[c]], dtype=np.int64) for c in AREA_COLUMNS))


def segmentation_cell_metrics(records: pd.DataFrame) -> list[tuple[str, float, int]]:
    """Return ``(metric, value %, n images)`` for aAcc, mIoU and mAcc of one cell, plus the mean Linf norm of
    attack cells' perturbations."""
    if records.empty:
        return []
    values = segmentation_metrics(areas_of_records(records))
    n = len(records)
    rows = [(name, float(values[name]), n) for name in SEGMENTATION_METRICS]
    if "norm_linf" in records:
        rows.append(("linf_max", float(records["norm_linf"].max()), n))
    return rows


def segmentation_worst_case(cells: list[tuple[str, pd.DataFrame]]) -> list[tuple[str, float, int]]:
    """The lowest aAcc / mIoU / mAcc found at one budget by the attacks ``(name, records)`` run on one model.

    On the images every attack ran on, each metric is the lowest of: each attack's value, and the value of the
    per-image combination (for every image, the adversarial example with the lowest pixel accuracy, whichever
    attack found it). Each is the metric of perturbations within the budget, so each is an upper bound of the
    robust value, and so is their minimum: the number to quote. Returns ``(metric, value %, n images)``.
    """
    common = set.intersection(*(set(records["sample_id"]) for _, records in cells))
    ordered = sorted(common)
    if not ordered:
        return []
    areas = []
    for _, records in cells:
        chosen = records.set_index("sample_id").loc[ordered].reset_index()
        areas.append(areas_of_records(chosen))
    correct = np.stack([a.intersect.sum(axis=1) for a in areas])  # [attacks, images]: correctly labelled pixels
    labelled = np.stack([a.label.sum(axis=1) for a in areas])
    accuracy = np.where(labelled > 0, correct / np.maximum(labelled, 1), 1.0)
    pick = accuracy.argmin(axis=0)  # per image: the attack whose example leaves the fewest pixels right
    rows = np.arange(len(ordered))
    combined = ClassAreas(*(np.stack([getattr(a, f) for a in areas])[pick, rows]
                            for f in ("intersect", "union", "pred", "label")))
    candidates = [segmentation_metrics(combined), *(segmentation_metrics(a) for a in areas)]
    return [(name, float(min(c[name] for c in candidates)), len(ordered)) for name in SEGMENTATION_METRICS]


def segmentation_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Return per (model, dataset, variant) rows of aAcc / mIoU / mAcc averaged over the corruption cells."""
    import json

    import pandas as pd

    if frame.empty or "variant" not in frame:
        return pd.DataFrame(columns=frame.columns)
    is_seg = frame["variant"].map(lambda v: bool(v) and json.loads(v).get("task") == "segmentation")
    rows = frame[is_seg & (frame["condition"] == "corruption") & frame["metric"].isin(SEGMENTATION_METRICS)]
    out: list[dict[str, Any]] = []
    for (label, dataset, variant, metric), group in rows.groupby(["model_label", "dataset", "variant", "metric"],
                                                                 sort=False):
        first = group.iloc[0]
        out.append({"model": first["model"], "model_label": label, "checkpoint_sha256": first["checkpoint_sha256"],
                    "model_options": first["model_options"], "dataset": dataset,
                    "condition": SEGMENTATION_SUMMARY_CONDITION, "name": None, "severity": None, "norm": None,
                    "eps": None, "variant": variant, "metric": metric, "value": float(group["value"].mean()),
                    "n": len(group), "cell_key": "", "results_dir": first["results_dir"]})
    return pd.DataFrame(out, columns=frame.columns)


def segmentation_comparison_rows(baseline: Any, other: Any, resamples: int, seed: int,
                                 level: float) -> list[dict[str, Any]]:
    """Comparison rows (mIoU, mAcc) of two models' records of one segmentation cell, on the images both have.

    The interval is a paired bootstrap over images (:func:`robustbench_rpc.metrics.segmentation.
    bootstrap_segmentation_difference`): each resample draws the same images for both models. No McNemar test:
    mIoU is no per-image proportion.
    """
    from robustbench_rpc.errors import UserError
    from robustbench_rpc.metrics.segmentation import bootstrap_segmentation_difference

    for cell in (baseline, other):
        if cell.records["sample_id"].duplicated().any():
            raise UserError(f"Cell file {cell.path} repeats sample ids; expected one record per image.")
    columns = ["sample_id", *AREA_COLUMNS]
    paired = baseline.records[columns].merge(other.records[columns], on="sample_id", suffixes=("_b", "_m"))
    if paired.empty:
        return []
    base = areas_of_records(paired.rename(columns={f"{c}_b": c for c in AREA_COLUMNS}))
    model = areas_of_records(paired.rename(columns={f"{c}_m": c for c in AREA_COLUMNS}))
    base_values, model_values = segmentation_metrics(base), segmentation_metrics(model)
    rows = []
    for metric in ("mIoU", "mAcc"):
        low, high = bootstrap_segmentation_difference(base, model, metric, resamples, seed, level)
        rows.append({"baseline": baseline.label, "model": other.label, "n": len(paired), "metric": metric,
                     "p_value": float("nan"), "baseline_value": float(base_values[metric]),
                     "model_value": float(model_values[metric]),
                     "diff": float(model_values[metric] - base_values[metric]), "ci_low": low, "ci_high": high})
    return rows


def copy_predictions(sources: list[Path], target: Path, keys: set[str]) -> int:
    """Copy the saved predictions of the cells ``keys`` from results directories into ``target`` (atomically,
    files already there are kept); return the number of files copied. Used when shards are merged."""
    from robustbench_rpc.atomic import atomic_write_bytes

    copied = 0
    for root in sources:
        folder = Path(root) / PREDICTIONS_DIR
        for cell_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not cell_dir.is_dir() or cell_dir.name.rsplit("-", 1)[-1] not in keys:
                continue
            (target / PREDICTIONS_DIR / cell_dir.name).mkdir(parents=True, exist_ok=True)
            for path in sorted(cell_dir.glob("*.png")):
                destination = target / PREDICTIONS_DIR / cell_dir.name / path.name
                if not destination.exists():
                    atomic_write_bytes(destination, path.read_bytes())
                    copied += 1
    return copied
