"""Semantic segmentation metrics: per-image class histograms, then aAcc / mIoU / mAcc from their totals.

The definitions are mmsegmentation's (``intersect_and_union`` and ``total_area_to_metrics``): for each class c,
the pixels predicted c, labelled c, and both (intersection), over the pixels whose label is not the ignore index;
union = predicted + labelled - intersection. Over a dataset the four histograms are summed first, then

- aAcc = total intersection / total labelled pixels (pixel accuracy),
- IoU_c = intersection_c / union_c and Acc_c = intersection_c / labelled_c, NaN where the denominator is 0,
- mIoU and mAcc = the means of IoU_c and Acc_c over the classes where they are not NaN: a class absent from both
  the predictions and the labels has no IoU; a class absent from the labels has no accuracy.

``reduce_zero_label`` (ADE20K's protocol) maps label 0 ("other") to the ignore index and shifts the others down by
one before counting, so the 150 classes are 0..149. A record stores an image's four histograms, so these metrics
(and their bootstrap over images) are pure functions of records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: mmsegmentation's ignore index.
IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassAreas:
    """Per-class pixel counts of one image or a dataset: intersection, union, predicted, labelled."""

    intersect: np.ndarray
    union: np.ndarray
    pred: np.ndarray
    label: np.ndarray

    def __add__(self, other: ClassAreas) -> ClassAreas:
        return ClassAreas(self.intersect + other.intersect, self.union + other.union, self.pred + other.pred,
                          self.label + other.label)


def reduce_zero(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Map label 0 to ``ignore_index`` and every other label l to l - 1 (the ignore index stays as it is)."""
    label = np.asarray(label).astype(np.int64)
    out = label - 1
    out[label == 0] = ignore_index
    out[label == ignore_index] = ignore_index
    return out


def class_areas(pred: Any, label: Any, num_classes: int, ignore_index: int = IGNORE_INDEX,
                reduce_zero_label: bool = False) -> ClassAreas:
    """Count one image's pixels per class (``pred`` and ``label`` of the same shape, integer class indices).

    Pixels labelled ``ignore_index`` are left out; a label outside ``0..num_classes-1`` (other than the ignore
    index) is a ``ValueError``, as is a prediction outside it.
    """
    pred = np.asarray(pred).astype(np.int64)
    label = np.asarray(label).astype(np.int64)
    if pred.shape != label.shape:
        raise ValueError(f"prediction of shape {pred.shape} and label of shape {label.shape} differ")
    if reduce_zero_label:
        label = reduce_zero(label, ignore_index)
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    for name, values in (("label", label), ("prediction", pred)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(f"{name} value {int(values[bad][0])} is outside the {num_classes} classes "
                             f"(0..{num_classes - 1}, ignore index {ignore_index})")
    area_intersect = np.bincount(label[pred == label], minlength=num_classes)
    area_pred = np.bincount(pred, minlength=num_classes)
    area_label = np.bincount(label, minlength=num_classes)
    return ClassAreas(area_intersect, area_pred + area_label - area_intersect, area_pred, area_label)


def total_areas(areas: Any) -> ClassAreas:
    """Sum per-image areas (a sequence of :class:`ClassAreas`, or stacked ``[N, C]`` arrays as a ClassAreas)."""
    if isinstance(areas, ClassAreas):
        if areas.intersect.ndim == 1:
            return areas
        return ClassAreas(*(np.asarray(a).sum(axis=0) for a in (areas.intersect, areas.union, areas.pred,
                                                                  areas.label)))
    items = list(areas)
    if not items:
        raise ValueError("segmentation metrics need at least one image")
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def segmentation_metrics(areas: Any) -> dict[str, Any]:
    """Return aAcc, mIoU, mAcc (in %) and the per-class IoU and Acc (in %, NaN where undefined) of the totals."""
    total = total_areas(areas)
    iou = _ratio(total.intersect, total.union) * 100
    acc = _ratio(total.intersect, total.label) * 100
    labelled = float(np.sum(total.label))
    return {
        "aAcc": float(np.sum(total.intersect)) / labelled * 100 if labelled else float("nan"),
        "mIoU": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mAcc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "IoU": iou,
        "Acc": acc,
    }


def bootstrap_segmentation(areas: ClassAreas, metric: str = "mIoU", resamples: int = 2000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a dataset metric when the images are resampled with replacement.

    ``areas`` holds stacked per-image histograms (``[N, C]`` arrays); the metric of each resample is computed from
    the totals of the drawn images, as for the dataset itself.
    """
    stacked = [np.asarray(a, dtype=np.int64) for a in (areas.intersect, areas.union, areas.pred, areas.label)]
    n = stacked[0].shape[0]
    if n == 0:
        raise ValueError("a bootstrap needs at least one image")
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for r in range(resamples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        totals = [counts @ a for a in stacked]
        values[r] = segmentation_metrics(ClassAreas(*totals))[metric]
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_segmentation_difference(baseline: ClassAreas, model: ClassAreas, metric: str = "mIoU",
                                      resamples: int = 2000, seed: int = 0,
                                      level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``metric(model) - metric(baseline)`` when the same images are resampled for both.

    ``baseline`` and ``model`` hold stacked per-image histograms (``[N, C]``) of the same N images in the same
    order; each resample draws one multiset of images and computes both models' metrics from its totals.
    """
    stacks = [[np.asarray(a, dtype=np.int64) for a in (areas.intersect, areas.union, areas.pred, areas.label)]
              for areas in (baseline, model)]
    n = stacks[0][0].shape[0]
    if n == 0 or stacks[1][0].shape[0] != n:
        raise ValueError("a paired bootstrap needs the same, non-zero number of images for both models")
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for r in range(resamples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        base, other = (segmentation_metrics(ClassAreas(*[counts @ a for a in stack]))[metric] for stack in stacks)
        values[r] = other - base
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)
