"""The record schema shared by the engine, the results store and the metrics.

A *cell* is one model under one condition on one dataset. Running a cell yields one *record* per sample; the
records of a cell are a :class:`pandas.DataFrame` with the columns below. Every metric is a pure function of records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: Fields of a cell's stored dataset fingerprint that identify the data's content (not where it lies on disk).
CONTENT_KEYS = ("num_files", "paths_sha256", "num_samples", "sha256")

#: Version of the on-disk results layout; bumped on incompatible changes.
SCHEMA_VERSION = 1

#: Columns every record has. ``top5`` is a list of 5 class indices (fewer when a dataset has < 5 classes).
BASE_COLUMNS: dict[str, str] = {
    "sample_id": "str: stable id of the sample (path relative to the dataset root, or an index)",
    "index": "int: position of the sample in the dataset order",
    "label": "int: true class index in the canonical order (-1 for out-of-distribution samples)",
    "pred": "int: top-1 predicted class index",
    "top5": "list[int]: the 5 highest-scoring class indices, best first",
    "prob_max": "float: maximum softmax probability (over the evaluated classes)",
    "correct1": "bool: pred == label",
    "correct5": "bool: label in top5",
}

#: Extra columns of out-of-distribution cells (ImageNet-O).
OOD_COLUMNS: dict[str, str] = {
    "is_ood": "bool: the sample is out of distribution (a positive for detection)",
    "ood_score": "float: anomaly score, higher = more anomalous (negative max softmax probability)",
}

#: Extra columns of attack cells.
ATTACK_COLUMNS: dict[str, str] = {
    "clean_pred": "int: top-1 prediction on the clean image",
    "clean_correct": "bool: clean_pred == label",
    "success": "bool: clean-correct sample whose adversarial prediction is wrong",
    "norm_linf": "float: L-infinity norm of the perturbation actually applied (pixel units in [0, 1])",
    "norm_l2": "float: L2 norm of the perturbation",
    "norm_l1": "float: L1 norm of the perturbation",
    "queries": "int: model queries used (black-box attacks; -1 when not counted)",
    # attack traces (white-box attacks; see robustbench_rpc.attacks.tracing). An untraced attack (black-box,
    # transfer, eps 0, compat mode) has trace_steps 0, an empty trace_loss and grad_norm0 NaN.
    "trace_loss": "list[float]: cross-entropy against the attack labels at each gradient evaluation on the whole "
    "batch, thinned to at most 33 evenly spaced points (first and last kept)",
    "trace_steps": "int: gradient evaluations observed (0: not traced)",
    "grad_norm0": "float: L2 norm of the input gradient at the first gradient evaluation (NaN: none or non-finite)",
    "grad_zero_steps": "int: gradient evaluations whose input gradient was exactly zero for this sample",
    "grad_nonfinite_steps": "int: gradient evaluations whose input gradient had NaN or infinite entries",
    "iterate_adv": "bool: some point the attack evaluated inside the budget was misclassified",
    "attack_returned_adv": "bool: the attack's own output was misclassified (before the best-iterate rule)",
    "best_iterate_used": "bool: the stored prediction is for the best in-budget iterate, because the attack's own "
    "output was not adversarial (a silent success recovered)",
    "eot_iter": "int: forward passes averaged per gradient (expectation over transformation; 1: none)",
}

#: Extra columns of the audit's stability probe (condition ``audit``, params ``probe="stability"``).
PROBE_COLUMNS: dict[str, str] = {
    "pred_changed": "bool: a repeated forward pass on the same clean image predicted another class",
    "noise_pred_changed": "bool: the prediction changed under uniform noise far below the audited budgets",
    "max_logit_diff": "float: largest absolute logit change between the repeated passes",
}
#: Extra column of audit check cells (condition ``audit``, params ``check=ID``): their records are the evidence.
CHECK_COLUMNS: dict[str, str] = {
    "flagged": "bool: this sample is evidence for the check firing (e.g. broken by FGSM but not by PGD)",
}

#: Columns of diagnose cells (condition ``diagnose``): one record per attention layer, head, iteration and quantity
#: (see :mod:`robustbench_rpc.diagnostics`), not per sample, so they replace :data:`BASE_COLUMNS` there.
DIAGNOSE_COLUMNS: dict[str, str] = {
    "layer": "int: position of the attention layer in the forward pass (0-based)",
    "module": "str: the layer's module path in the model, e.g. blocks.0.attn",
    "attention": "str: symmetric, rpc, scaled_s, scaled_alpha, kpca or softmax (a timm ViT)",
    "head": "int: attention head (0-based; -1: the layer's heads together)",
    "iteration": "int: PAP attention evaluation (1-based) for pap_residual and pap_sparsity; 0 otherwise",
    "quantity": "str: recon_log_error, pap_residual, pap_sparsity, pap_output_change, value_alignment, "
    "value_alignment_chance or value_alignment_readout (see robustbench_rpc.diagnostics.layers.QUANTITIES)",
    "value": "float: the measured value",
    "n": "int: samples behind the value",
}

#: Columns of segmentation cells (param ``task="segmentation"``): one record per image holding its per-class pixel
#: counts (:func:`robustbench_rpc.metrics.segmentation.class_areas`), so aAcc / mIoU / mAcc are functions of records.
SEGMENTATION_COLUMNS: dict[str, str] = {
    "sample_id": "str: stable id of the image",
    "index": "int: position of the image in the dataset order",
    "area_intersect": "list[int]: per class, pixels predicted and labelled with it (ignored pixels left out)",
    "area_union": "list[int]: per class, pixels predicted or labelled with it",
    "area_pred": "list[int]: per class, pixels predicted with it (among the non-ignored pixels)",
    "area_label": "list[int]: per class, pixels labelled with it",
}
#: Extra column of segmentation attack cells.
SEGMENTATION_ATTACK_COLUMNS: dict[str, str] = {
    "norm_linf": "float: L-infinity norm of the perturbation actually applied (pixel units in [0, 1])",
}
#: The task a cell belongs to is its ``task`` param; cells without one are classification cells.
SEGMENTATION_TASK = "segmentation"

CONDITION_KINDS = ("clean", "corruption", "attack", "ood", "audit", "diagnose")


def required_columns(condition: str, task: str | None = None) -> dict[str, str]:
    """Return the columns every record of a cell of this condition kind (and task) must have."""
    if task == SEGMENTATION_TASK:
        return SEGMENTATION_COLUMNS
    return DIAGNOSE_COLUMNS if condition == "diagnose" else BASE_COLUMNS


def is_segmentation(spec: CellSpec) -> bool:
    """True for a cell of the segmentation task (its records are per-image class areas)."""
    return spec.params.get("task") == SEGMENTATION_TASK


@dataclass(frozen=True)
class CellSpec:
    """Coordinates of one cell: which model, which dataset, which condition with which parameters."""

    model: str
    dataset: str
    condition: str  # one of CONDITION_KINDS
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint_sha256: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellSpec:
        """Build a spec from :meth:`to_dict` output."""
        return cls(**data)

    def key(self) -> str:
        """Return a stable 16-hex-digit identifier of the full spec."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def condition_key(self) -> str:
        """Return a stable identifier of the condition alone (dataset, condition, parameters; no model).

        Random draws are seeded from it, so every model of a comparison sees the same noise and random starts.
        """
        blob = json.dumps({"dataset": self.dataset, "condition": self.condition, "params": self.params},
                          sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def slug(self) -> str:
        """Return a readable file-name stem, e.g. ``imagenet-c.corruption.fog.s3``."""
        parts = [self.dataset, self.condition]
        for name in ("name", "norm", "severity", "eps"):
            if name in self.params:
                value = self.params[name]
                if name == "severity":
                    value = f"s{value}"
                elif name == "eps":
                    value = f"eps{float(value) * 255:.4g}"
                parts.append(str(value))
        safe = ".".join(parts)
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in safe)
