"""Calibration metrics from confidences (max softmax probability) and correctness: RMS calibration error, ECE,
AURRA (area under the response-rate accuracy curve), as used for ImageNet-A/R by Hendrycks et al.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustbench_rpc.metrics._inputs import as_array, check_same_length, column


def _prepare(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = as_array(confidence, float, "confidence")
    right = as_array(correct, float, "correct")
    check_same_length(confidence=conf, correct=right)
    if len(conf) == 0:
        raise ValueError("calibration metrics need at least one sample")
    return conf, right


def rms_calibration_error(
    confidence: Any, correct: Any, bin_size: int = 100, include_last_bin: bool = True
) -> float:
    """Return the RMS calibration error with adaptive bins of ``bin_size`` samples sorted by confidence.

    sqrt(sum_b |b|/n * (mean conf_b - mean correct_b)^2); the last bin takes the remainder (n < bin_size gives
    one bin). ``include_last_bin=False`` reproduces the reference code of the ImageNet-A paper, whose loop
    leaves out the last bin.
    """
    conf, right = _prepare(confidence, correct)
    if bin_size < 1:
        raise ValueError("bin_size must be >= 1")
    order = np.argsort(conf, kind="mergesort")
    conf, right = conf[order], right[order]
    n = len(conf)
    starts = list(range(0, max(n // bin_size, 1) * bin_size, bin_size))
    ends = starts[1:] + [n]
    if not include_last_bin:
        starts, ends = starts[:-1], ends[:-1]
    total = 0.0
    for lo, hi in zip(starts, ends, strict=True):
        gap = conf[lo:hi].mean() - right[lo:hi].mean()
        total += (hi - lo) / n * gap * gap
    return float(np.sqrt(total))


def ece(confidence: Any, correct: Any, n_bins: int = 15) -> float:
    """Return the expected calibration error with ``n_bins`` equal-width confidence bins on [0, 1].

    Bins are (i/n_bins, (i+1)/n_bins], the first one also holding confidence 0.
    """
    conf, right = _prepare(confidence, correct)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    index = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in np.unique(index):
        members = index == b
        total += members.mean() * abs(conf[members].mean() - right[members].mean())
    return float(total)


def aurra(confidence: Any, correct: Any) -> float:
    """Return the area under the response-rate accuracy curve.

    Samples are answered from most to least confident (ties in input order); the curve is the accuracy of the
    first k answers, k = 1..n, and AURRA its mean.
    """
    conf, right = _prepare(confidence, correct)
    order = np.argsort(-conf, kind="mergesort")
    accuracy_at_rate = np.cumsum(right[order]) / np.arange(1, len(conf) + 1)
    return float(accuracy_at_rate.mean())


def calibration_metrics(records: Any, bin_size: int = 100, n_bins: int = 15) -> dict[str, float]:
    """Return ``{"rms_calibration_error", "ece", "aurra"}`` from records (``prob_max``, ``correct1``)."""
    conf = column(records, "prob_max", float)
    right = column(records, "correct1", float)
    return {
        "rms_calibration_error": rms_calibration_error(conf, right, bin_size),
        "ece": ece(conf, right, n_bins),
        "aurra": aurra(conf, right),
    }
