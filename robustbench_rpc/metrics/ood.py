"""Out-of-distribution detection metrics with OOD samples as positives: AUPR, AUROC, FPR at a TPR.

Scores are anomaly scores (higher = more anomalous), e.g. the negative max softmax probability. Written with
numpy; the tests check them against scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustbench_rpc.metrics._inputs import as_array, check_same_length, column


def _prepare(is_ood: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    positive = as_array(is_ood, bool, "is_ood")
    values = as_array(score, float, "score")
    check_same_length(is_ood=positive, score=values)
    if np.isnan(values).any():
        raise ValueError("scores contain NaN")
    if positive.all() or not positive.any():
        raise ValueError("OOD metrics need both positives (OOD) and negatives (in-distribution)")
    return positive, values


def _curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return cumulative (true positives, false positives) at each distinct threshold, from high to low."""
    order = np.argsort(-score, kind="mergesort")
    sorted_score = score[order]
    sorted_pos = positive[order]
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_score))[0], len(sorted_score) - 1]
    tps = np.cumsum(sorted_pos)[last_of_tie].astype(float)
    fps = (last_of_tie + 1) - tps
    return tps, fps


def aupr(is_ood: Any, score: Any) -> float:
    """Return the area under the precision-recall curve as average precision, OOD samples positive.

    AP = sum over thresholds of (R_n - R_{n-1}) * P_n (step-wise, no interpolation), the definition of
    scikit-learn's ``average_precision_score`` and of the ImageNet-O paper's AUPR.
    """
    positive, values = _prepare(is_ood, score)
    tps, fps = _curve(positive, values)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall_steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_steps * precision))


def auroc(is_ood: Any, score: Any) -> float:
    """Return the area under the ROC curve (OOD positive); tied scores count one half."""
    positive, values = _prepare(is_ood, score)
    tps, fps = _curve(positive, values)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))


def fpr_at_tpr(is_ood: Any, score: Any, tpr: float = 0.95) -> float:
    """Return the false positive rate at the highest threshold whose true positive rate reaches ``tpr``."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    positive, values = _prepare(is_ood, score)
    tps, fps = _curve(positive, values)
    reached = np.nonzero(tps / tps[-1] >= tpr - 1e-12)[0][0]
    return float(fps[reached] / fps[-1])


def ood_metrics(records: Any, tpr: float = 0.95) -> dict[str, float]:
    """Return ``{"aupr", "auroc", "fpr95"}`` from records with ``is_ood`` and ``ood_score`` columns."""
    positive = column(records, "is_ood", bool)
    score = column(records, "ood_score", float)
    key = f"fpr{round(tpr * 100)}"
    return {
        "aupr": aupr(positive, score),
        "auroc": auroc(positive, score),
        key: fpr_at_tpr(positive, score, tpr),
    }
