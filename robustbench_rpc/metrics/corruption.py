"""ImageNet-C metrics: corruption error (CE), mCE and relative mCE, normalized by AlexNet's published errors.

With E(c, s) the top-1 error under corruption c at severity s (Hendrycks & Dietterich, ICLR 2019):

    CE_c          = sum_s E(c, s) / sum_s E_AlexNet(c, s)
    mCE           = mean of CE_c over the 15 standard corruptions
    relative CE_c = sum_s (E(c, s) - E_clean) / sum_s (E_AlexNet(c, s) - E_AlexNet_clean)
    relative mCE  = mean of relative CE_c over the 15 standard corruptions

Values are fractions (mCE of AlexNet itself = 1.0; multiply by 100 for the usual percentages). When only some
severities were evaluated, the AlexNet sums run over the same severities.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from robustbench_rpc.errors import UserError

#: A table of errors: {corruption: {severity: error}}.
ErrorTable = dict[str, dict[int, float]]


@dataclass(frozen=True)
class AlexNetErrors:
    """AlexNet's published ImageNet-C top-1 errors (fractions) per corruption and severity, and clean error."""

    per_severity: dict[str, dict[int, float]]
    clean_error: float
    source: str

    @property
    def corruptions(self) -> tuple[str, ...]:
        """Return the corruptions that have published AlexNet errors (the 15 standard ones)."""
        return tuple(self.per_severity)

    def average(self, corruption: str) -> float:
        """Return AlexNet's error for ``corruption`` averaged over severities 1-5."""
        return float(np.mean(list(self.per_severity[corruption].values())))


@lru_cache(maxsize=1)
def load_alexnet_errors() -> AlexNetErrors:
    """Load the AlexNet errors shipped in ``robustbench_rpc/assets/imagenet/alexnet_errors.json``."""
    text = (resources.files("robustbench_rpc") / "assets" / "imagenet" / "alexnet_errors.json").read_text(
        "utf-8"
    )
    raw = json.loads(text)
    table = {c: {s + 1: float(e) for s, e in enumerate(errs)} for c, errs in raw["per_severity"].items()}
    return AlexNetErrors(table, float(raw["clean_error"]), raw["source"])


#: The 15 standard ImageNet-C corruptions (mCE is over these), in the paper's order.
STANDARD_CORRUPTIONS: tuple[str, ...] = load_alexnet_errors().corruptions


def error_table(errors: Any) -> ErrorTable:
    """Normalize errors to {corruption: {severity: error}}.

    Accepts {(corruption, severity): error}, {corruption: {severity: error}}, {corruption: [e1, ..., e5]}, or a
    DataFrame with columns ``corruption``, ``severity`` and ``error`` (or ``top1``, read as 1 - top1).
    """
    table: ErrorTable = {}
    if hasattr(errors, "columns"):
        if "error" in errors.columns:
            values = errors["error"].to_numpy(float)
        elif "top1" in errors.columns:
            values = 1.0 - errors["top1"].to_numpy(float)
        else:
            raise KeyError("error table needs an 'error' or 'top1' column")
        for corruption, severity, value in zip(errors["corruption"], errors["severity"], values, strict=True):
            table.setdefault(str(corruption), {})[int(severity)] = float(value)
        return table
    for key, value in dict(errors).items():
        if isinstance(key, tuple):
            corruption, severity = key
            table.setdefault(str(corruption), {})[int(severity)] = float(value)
        elif isinstance(value, Mapping):
            table[str(key)] = {int(s): float(e) for s, e in value.items()}
        else:
            table[str(key)] = {s + 1: float(e) for s, e in enumerate(value)}
    return table


def errors_from_records(records_by_cell: Mapping[tuple[str, int], Any]) -> ErrorTable:
    """Return the top-1 error of each (corruption, severity) cell from its records (``correct1`` column)."""
    table: ErrorTable = {}
    for (corruption, severity), records in records_by_cell.items():
        correct = np.asarray(records["correct1"], dtype=bool)
        table.setdefault(corruption, {})[int(severity)] = (
            float(1.0 - correct.mean()) if len(correct) else np.nan
        )
    return table


def mean_errors(errors: Any) -> dict[str, float]:
    """Return each corruption's error averaged over its evaluated severities (not normalized)."""
    return {c: float(np.mean(list(sev.values()))) for c, sev in error_table(errors).items()}


def corruption_errors(errors: Any, alexnet: AlexNetErrors | None = None) -> dict[str, float]:
    """Return CE per corruption (fraction; AlexNet = 1.0); NaN for corruptions without AlexNet errors."""
    alexnet = alexnet or load_alexnet_errors()
    out: dict[str, float] = {}
    for corruption, severities in error_table(errors).items():
        base = alexnet.per_severity.get(corruption)
        if base is None or any(s not in base for s in severities):
            out[corruption] = float("nan")
            continue
        out[corruption] = sum(severities.values()) / sum(base[s] for s in severities)
    return out


def relative_corruption_errors(
    errors: Any,
    clean_error: float,
    alexnet: AlexNetErrors | None = None,
    alexnet_clean_error: float | None = None,
) -> dict[str, float]:
    """Return relative CE per corruption: the error increase over clean, relative to AlexNet's increase."""
    alexnet = alexnet or load_alexnet_errors()
    base_clean = alexnet.clean_error if alexnet_clean_error is None else alexnet_clean_error
    out: dict[str, float] = {}
    for corruption, severities in error_table(errors).items():
        base = alexnet.per_severity.get(corruption)
        if base is None or any(s not in base for s in severities):
            out[corruption] = float("nan")
            continue
        gap = sum(e - clean_error for e in severities.values())
        out[corruption] = gap / sum(base[s] - base_clean for s in severities)
    return out


def _check_complete(table: ErrorTable, corruptions: Iterable[str], allow_partial: bool) -> list[str]:
    wanted = list(corruptions)
    present = [c for c in wanted if c in table]
    if allow_partial:
        if not present:
            raise UserError("no standard ImageNet-C corruption was evaluated; mCE needs at least one.")
        return present
    missing = [c for c in wanted if c not in table]
    partial = [c for c in present if sorted(table[c]) != [1, 2, 3, 4, 5]]
    if missing or partial:
        parts = []
        if missing:
            parts.append(f"corruptions {', '.join(missing)} were not evaluated")
        if partial:
            parts.append(f"{', '.join(partial)} lack some of severities 1-5")
        raise UserError(
            "mCE needs all 15 standard corruptions at severities 1-5, but "
            + " and ".join(parts)
            + "; evaluate them or ask for a partial mCE."
        )
    return present


def mce(
    errors: Any,
    alexnet: AlexNetErrors | None = None,
    corruptions: Iterable[str] = STANDARD_CORRUPTIONS,
    allow_partial: bool = False,
) -> float:
    """Return the mean corruption error over the standard corruptions (fraction; AlexNet = 1.0).

    Raises UserError naming what is missing unless ``allow_partial`` (then: mean over what was evaluated).
    """
    table = error_table(errors)
    used = _check_complete(table, corruptions, allow_partial)
    ce = corruption_errors({c: table[c] for c in used}, alexnet)
    return float(np.mean([ce[c] for c in used]))


def relative_mce(
    errors: Any,
    clean_error: float,
    alexnet: AlexNetErrors | None = None,
    alexnet_clean_error: float | None = None,
    corruptions: Iterable[str] = STANDARD_CORRUPTIONS,
    allow_partial: bool = False,
) -> float:
    """Return the relative mCE (fraction; AlexNet = 1.0) given the model's clean top-1 error."""
    table = error_table(errors)
    used = _check_complete(table, corruptions, allow_partial)
    rce = relative_corruption_errors({c: table[c] for c in used}, clean_error, alexnet, alexnet_clean_error)
    return float(np.mean([rce[c] for c in used]))


def corruption_summary(
    errors: Any, clean_error: float | None = None, allow_partial: bool = False
) -> dict[str, Any]:
    """Return mCE, relative mCE (when ``clean_error`` is given), the unnormalized mean error and per-corruption
    error / CE / relative CE, for a results table."""
    table = error_table(errors)
    standard = [c for c in STANDARD_CORRUPTIONS if c in table]
    out: dict[str, Any] = {
        "mce": mce(table, allow_partial=allow_partial) if standard else float("nan"),
        "mean_error": float(np.mean([np.mean(list(table[c].values())) for c in standard]))
        if standard
        else np.nan,
        "error": mean_errors(table),
        "ce": corruption_errors(table),
        "complete": bool(standard)
        and len(standard) == len(STANDARD_CORRUPTIONS)
        and all(sorted(table[c]) == [1, 2, 3, 4, 5] for c in standard),
    }
    if clean_error is not None:
        out["relative_mce"] = (
            relative_mce(table, clean_error, allow_partial=allow_partial) if standard else np.nan
        )
        out["relative_ce"] = relative_corruption_errors(table, clean_error)
    return out
