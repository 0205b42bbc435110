"""Top-1 / top-5 accuracy and error from per-sample records (columns ``correct1``, ``correct5``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from robustbench_rpc.metrics._inputs import as_array, column


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def top1(records: Any) -> float:
    """Return top-1 accuracy in [0, 1] (mean of ``correct1``); NaN for no records."""
    return _mean(column(records, "correct1", bool))


def top5(records: Any) -> float:
    """Return top-5 accuracy in [0, 1] (mean of ``correct5``); NaN for no records."""
    return _mean(column(records, "correct5", bool))


def error(records: Any) -> float:
    """Return top-1 error in [0, 1] (1 - top-1 accuracy)."""
    return 1.0 - top1(records)


def topk_correct(scores: Any, labels: Any, k: int = 1) -> np.ndarray:
    """Return, per row of ``scores`` [N, C], whether ``labels`` is among the k highest scores (ties: lowest index)."""
    matrix = np.asarray(scores.detach().cpu().numpy() if hasattr(scores, "detach") else scores, dtype=float)
    truth = as_array(labels, int, "labels")
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :k]
    return (order == truth[:, None]).any(axis=1)


def accuracy_metrics(records: Any) -> dict[str, float]:
    """Return ``{"top1", "top5", "error", "n"}`` for a cell's records."""
    acc1 = top1(records)
    return {"top1": acc1, "top5": top5(records), "error": 1.0 - acc1, "n": float(len(records["correct1"]))}
