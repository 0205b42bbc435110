"""Metrics: pure functions of per-sample records (see ``robustbench_rpc.results.schema``) or of arrays.

No I/O and no model: accuracy (top-1/top-5), ImageNet-C CE / mCE / relative mCE (AlexNet-normalized), OOD
detection (AUPR, AUROC, FPR at 95% TPR), calibration (RMS calibration error, ECE, AURRA) and paired statistics of
two models on the same samples (McNemar's exact test, paired bootstrap intervals, weighted AUPR).
"""

from __future__ import annotations

from robustbench_rpc.metrics.accuracy import accuracy_metrics, error, top1, top5, topk_correct
from robustbench_rpc.metrics.calibration import aurra, calibration_metrics, ece, rms_calibration_error
from robustbench_rpc.metrics.corruption import (
    STANDARD_CORRUPTIONS,
    AlexNetErrors,
    corruption_errors,
    corruption_summary,
    error_table,
    errors_from_records,
    load_alexnet_errors,
    mce,
    mean_errors,
    relative_corruption_errors,
    relative_mce,
)
from robustbench_rpc.metrics.ood import aupr, auroc, fpr_at_tpr, ood_metrics
from robustbench_rpc.metrics.paired import (
    bootstrap_accuracy_difference,
    bootstrap_aupr_difference,
    mcnemar_exact,
    weighted_aupr,
)

__all__ = [
    "STANDARD_CORRUPTIONS",
    "AlexNetErrors",
    "accuracy_metrics",
    "aupr",
    "auroc",
    "aurra",
    "bootstrap_accuracy_difference",
    "bootstrap_aupr_difference",
    "calibration_metrics",
    "corruption_errors",
    "corruption_summary",
    "ece",
    "error",
    "error_table",
    "errors_from_records",
    "fpr_at_tpr",
    "load_alexnet_errors",
    "mce",
    "mcnemar_exact",
    "mean_errors",
    "ood_metrics",
    "relative_corruption_errors",
    "relative_mce",
    "rms_calibration_error",
    "top1",
    "top5",
    "topk_correct",
    "weighted_aupr",
]
