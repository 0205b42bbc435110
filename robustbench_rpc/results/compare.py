"""Side-by-side comparison of models on their shared cells, with paired statistics against a baseline.

Two cells are *the same cell* when their dataset, condition and parameters match (the cell spec minus the
model, its checkpoint and options). Their records are paired by ``sample_id``; every number of a comparison
row is computed on the paired samples only, and ``n`` is their count. Accuracy cells (clean, corruption: top-1
over the labelled samples; attack: robust top-1, i.e. ``correct1`` of the adversarial predictions) get a
paired bootstrap interval of the difference and McNemar's exact test; out-of-distribution cells (records with
``is_ood`` and ``ood_score``) compare AUPR with a paired bootstrap over samples (no McNemar test). Where two
models share two or more attack cells at one budget, a ``worst-case`` row compares their per-sample worst case
over exactly those shared attacks (a sample is robust only if every one of them failed on it): the robust
accuracy to compare.

The statistics are pure functions of per-sample arrays in :mod:`robustbench_rpc.metrics.paired`; this module
reads the stores, pairs the records and builds the comparison frame (:data:`COMPARISON_COLUMNS`), which
:func:`robustbench_rpc.reporting.comparison.comparison_display` turns into the table people read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.metrics.paired import (
    DEFAULT_RESAMPLES,
    bootstrap_accuracy_difference,
    bootstrap_aupr_difference,
    mcnemar_exact,
    weighted_aupr,
)
from robustbench_rpc.names import ALL_CORRUPTIONS, WORST_CASE, eps_text
from robustbench_rpc.results.schema import CellSpec, is_segmentation
from robustbench_rpc.results.store import ResultsStore, model_identity, open_stores

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# ------------------------------------------------------------------------------------------ cells and pairing
#: Record columns a comparison reads.
COMPARE_COLUMNS = ["sample_id", "label", "correct1", "is_ood", "ood_score", "area_intersect", "area_union",
                   "area_pred", "area_label"]
#: Columns of the comparison frame, in order.
COMPARISON_COLUMNS = (
    "cell",
    "dataset",
    "condition",
    "name",
    "severity",
    "norm",
    "eps",
    "variant",
    "metric",
    "baseline",
    "model",
    "n",
    "baseline_value",
    "model_value",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
)
_CONDITION_ORDER = {"clean": 0, "corruption": 1, "attack": 2, "ood": 3}


@dataclass(frozen=True)
class LoadedCell:
    """One finished cell of one model: its display label, spec and the records a comparison needs."""

    label: str
    spec: CellSpec
    records: pd.DataFrame
    path: Path


def load_cells(stores: Iterable[ResultsStore]) -> list[LoadedCell]:
    """Read every finished cell of the stores with its model label (as in the tidy table's ``model_label``).

    Cells come model by model in the order the models were first stored, directory after directory, so the
    first model of the first directory is the default baseline.
    """
    from robustbench_rpc.results.tidy import model_labels, unique_cells

    found = []
    registered_by_store = [
        [json.dumps(ident, sort_keys=True, default=str) for ident in store.model_identities] for store in stores
    ]
    for store_index, store, cell in unique_cells(stores):
        registered = registered_by_store[store_index]
        identity = json.dumps(model_identity(cell.spec), sort_keys=True, default=str)
        rank = (store_index, registered.index(identity) if identity in registered else len(registered))
        found.append((rank, cell, store.read_records(cell, COMPARE_COLUMNS)))
    found.sort(key=lambda item: item[0])  # models in the order they were registered, directory by directory
    labels = model_labels([model_identity(cell.spec) for _, cell, _ in found])
    return [
        LoadedCell(label=label, spec=cell.spec, records=records, path=cell.path)
        for (_, cell, records), label in zip(found, labels, strict=True)
    ]


def shared_key(spec: CellSpec) -> str:
    """Return what makes two models' cells the same cell: dataset, condition and parameters."""
    return json.dumps([spec.dataset, spec.condition, spec.params], sort_keys=True, default=str)


def resolve_baseline(labels: list[str], baseline: str | None) -> str:
    """Return the label named by ``baseline`` (exact, else a unique prefix); the first label when None."""
    if not labels:
        raise UserError("The results hold no model to compare.")
    if baseline is None:
        return labels[0]
    if baseline in labels:
        return baseline
    matches = [label for label in labels if label.startswith(baseline)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(
            f"Baseline {baseline!r} matches several models ({', '.join(matches)}); give the full model label."
        )
    raise UserError(
        f"Baseline {baseline!r} is not a model in the results; expected one of "
        f"{', '.join(labels)}{did_you_mean(baseline, labels)}."
    )


def is_ood_cell(records: pd.DataFrame) -> bool:
    """Return True for records that carry out-of-distribution detection columns."""
    return "is_ood" in records and "ood_score" in records


def _scored(cell: LoadedCell) -> pd.DataFrame:
    """Return the cell's records reduced to ``sample_id`` plus what its comparison metric needs."""
    records = cell.records
    if records["sample_id"].duplicated().any():
        raise UserError(f"Cell file {cell.path} repeats sample ids; expected one record per sample.")
    if is_ood_cell(records):
        return records[["sample_id", "is_ood", "ood_score"]]
    if cell.spec.condition != "attack" and "label" in records:
        records = records[records["label"] >= 0]
    return records[["sample_id", "correct1"]]


def compare_pair(
    baseline: LoadedCell,
    other: LoadedCell,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any] | None:
    """Return the comparison row of two models' records of one cell, or None when they share no sample."""
    base, model = _scored(baseline), _scored(other)
    ood = "is_ood" in base and "is_ood" in model
    paired = base.merge(model, on="sample_id", suffixes=("_b", "_m"))
    n = len(paired)
    if n == 0:
        return None
    row: dict[str, Any] = {"baseline": baseline.label, "model": other.label, "n": n}
    if ood:
        positive = paired["is_ood_b"].astype(bool).to_numpy()
        if (positive != paired["is_ood_m"].astype(bool).to_numpy()).any():
            raise UserError(
                f"Cell {other.spec.slug()} marks different samples as out-of-distribution per model."
            )
        if positive.all() or not positive.any():
            return None
        scores_b = paired["ood_score_b"].astype(float).to_numpy()
        scores_m = paired["ood_score_m"].astype(float).to_numpy()
        ones = np.ones((1, n))
        value_b = float(weighted_aupr(positive, scores_b, ones)[0]) * 100.0
        value_m = float(weighted_aupr(positive, scores_m, ones)[0]) * 100.0
        low, high = bootstrap_aupr_difference(positive, scores_b, scores_m, resamples, seed, level)
        row.update(metric="aupr", p_value=float("nan"))
    else:
        correct_b = paired["correct1_b"].astype(bool).to_numpy()
        correct_m = paired["correct1_m"].astype(bool).to_numpy()
        value_b, value_m = 100.0 * correct_b.mean(), 100.0 * correct_m.mean()
        low, high = bootstrap_accuracy_difference(correct_b, correct_m, resamples, seed, level)
        metric = "robust_top1" if baseline.spec.condition == "attack" else "top1"
        row.update(metric=metric, p_value=mcnemar_exact(correct_b, correct_m))
    row.update(
        baseline_value=float(value_b),
        model_value=float(value_m),
        diff=float(value_m - value_b),
        ci_low=low,
        ci_high=high,
    )
    return row


def cell_text(spec: CellSpec) -> str:
    """Return a short readable name of a cell, e.g. ``imagenet-c fog s3`` or ``imagenet pgd Linf 4/255``."""
    params = dict(spec.params)
    parts = [spec.dataset]
    if spec.condition != "corruption":
        parts.append(str(params.pop("name", spec.condition)))
    else:
        parts.append(str(params.pop("name", "")))
    if "severity" in params:
        parts.append(f"s{params.pop('severity')}")
    if "norm" in params:
        parts.append(str(params.pop("norm")))
    if "eps" in params:
        parts.append(eps_text(params.pop("eps"), spec.params.get("norm")))
    if params:
        parts.append("[" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + "]")
    return " ".join(p for p in parts if p)


def _sort_key(spec: CellSpec) -> tuple[Any, ...]:
    params = spec.params
    name = str(params.get("name", ""))
    rank = ALL_CORRUPTIONS.index(name) if name in ALL_CORRUPTIONS else len(ALL_CORRUPTIONS)
    return (
        _CONDITION_ORDER.get(spec.condition, 9),
        spec.dataset,
        rank,
        name,
        str(params.get("norm", "")),
        float(params.get("eps", 0.0) or 0.0),
        int(params.get("severity", 0) or 0),
        json.dumps(params, sort_keys=True, default=str),
    )


def _worst_case_cell(members: list[LoadedCell]) -> LoadedCell:
    """One model's per-sample worst case over ``members`` (attack cells at one budget), as a loaded cell."""
    from robustbench_rpc.results.worst_case import WorstCaseGroup, attack_labels

    group = WorstCaseGroup([c.spec for c in members], [c.records for c in members])
    first = members[0].spec
    params = {"name": WORST_CASE, "norm": first.params.get("norm"), "eps": first.params.get("eps"),
              "attacks": sorted(attack_labels([c.spec for c in members])),
              "threat_model": first.params.get("threat_model", "pixel")}
    spec = CellSpec(model=first.model, dataset=first.dataset, condition="attack", params=params,
                    checkpoint_sha256=first.checkpoint_sha256, model_options=first.model_options)
    records = group.per_sample()[["sample_id", "correct1"]]
    return LoadedCell(label=members[0].label, spec=spec, records=records, path=members[0].path)


def worst_case_pairs(pairs: list[tuple[LoadedCell, LoadedCell]]) -> list[tuple[LoadedCell, LoadedCell]]:
    """Worst-case cells of (baseline, model) over the attack cells both share at a budget (two or more)."""
    buckets: dict[str, list[tuple[LoadedCell, LoadedCell]]] = {}
    for base, other in pairs:
        params = base.spec.params
        if base.spec.condition != "attack" or not float(params.get("eps") or 0) > 0 or is_segmentation(base.spec):
            continue
        key = json.dumps([other.label, base.spec.dataset, params.get("norm"), float(params["eps"]),
                          params.get("threat_model", "pixel")], default=str)
        buckets.setdefault(key, []).append((base, other))
    return [(_worst_case_cell([b for b, _ in members]), _worst_case_cell([o for _, o in members]))
            for members in buckets.values() if len(members) >= 2]


def compare_cells(
    cells: list[LoadedCell],
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Return one row per shared cell and non-baseline model: values, difference, its interval and p-value."""
    import pandas as pd

    if resamples < 1:
        raise UserError(f"The number of bootstrap resamples must be at least 1, got {resamples}.")
    labels = list(dict.fromkeys(cell.label for cell in cells))
    base_label = resolve_baseline(labels, baseline)
    if len(labels) < 2:
        raise UserError(f"The results hold only model {labels[0]}; a comparison needs at least two models.")
    by_key: dict[str, dict[str, LoadedCell]] = {}
    for cell in cells:
        if cell.spec.condition not in ("audit", "diagnose"):  # audit and diagnose cells are no accuracy
            by_key.setdefault(shared_key(cell.spec), {})[cell.label] = cell
    pairs: list[tuple[LoadedCell, LoadedCell]] = []
    for group in by_key.values():
        if base_label in group:
            pairs.extend((group[base_label], group[label]) for label in labels
                         if label != base_label and label in group)
    pairs.extend(worst_case_pairs(pairs))
    order = {label: i for i, label in enumerate(labels)}
    pairs.sort(key=lambda pair: (_sort_key(pair[0].spec), order[pair[1].label]))
    rows = []
    for base, other in pairs:
        if is_segmentation(base.spec):  # mIoU / mAcc with a paired bootstrap over images
            from robustbench_rpc.results.segmentation import segmentation_comparison_rows

            found = segmentation_comparison_rows(base, other, resamples, seed, level)
        else:
            found = [compare_pair(base, other, resamples, seed, level)]
        for row in found:
            if row is not None:
                rows.append(_with_cell(row, base.spec))
    if not rows:
        others = ", ".join(label for label in labels if label != base_label)
        raise UserError(
            f"Models {others} share no cell (same dataset, condition and parameters, common sample ids) with "
            f"baseline {base_label}; evaluate them on the same cells to compare them."
        )
    frame = pd.DataFrame(rows).reindex(columns=list(COMPARISON_COLUMNS))
    frame["severity"] = frame["severity"].astype("Int64")
    frame["eps"] = frame["eps"].astype(float)
    frame["n"] = frame["n"].astype("int64")
    return frame


def _with_cell(row: dict[str, Any], spec: CellSpec) -> dict[str, Any]:
    """A comparison row with the coordinates of its cell."""
    eps = spec.params.get("eps")
    severity = spec.params.get("severity")
    variant = {k: v for k, v in sorted(spec.params.items()) if k not in ("name", "severity", "norm", "eps")}
    return {**row, "cell": cell_text(spec), "dataset": spec.dataset, "condition": spec.condition,
            "name": spec.params.get("name"), "severity": None if severity is None else int(severity),
            "norm": spec.params.get("norm"), "eps": None if eps is None else float(eps),
            "variant": json.dumps(variant, sort_keys=True, default=str) if variant else ""}


def compare(
    sources: ResultsStore | str | Path | Iterable[ResultsStore | str | Path],
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Compare the models of one or several results directories against ``baseline`` on every shared cell.

    Returns the comparison frame (:data:`COMPARISON_COLUMNS`): values and differences in percent / points, the
    ``level`` percentile bootstrap interval of the difference (``resamples`` resamples, generator ``seed``)
    and McNemar's exact p-value (NaN for AUPR rows). ``baseline`` is a model label or a unique prefix of
    one; by default the first model stored in the first directory.
    """
    return compare_cells(load_cells(open_stores(sources)), baseline, resamples, seed, level)


def report_comparison(
    stores: list[ResultsStore], baseline: str | None, resamples: int, seed: int, level: float = 0.95
) -> tuple[str, pd.DataFrame | str]:
    """Return the baseline label and the comparison frame for a report, or the sentence saying why there is none.

    A wrong ``baseline`` is an error (:class:`UserError`), not a sentence; one model, or models that share no
    cell, give the sentence.
    """
    cells = load_cells(stores)
    labels = list(dict.fromkeys(cell.label for cell in cells))
    base = resolve_baseline(labels, baseline)
    if len(labels) < 2:
        return base, f"Only one model ({base}) is in the results; there is nothing to compare."
    try:
        return base, compare_cells(cells, base, resamples, seed, level)
    except UserError as exc:
        return base, str(exc)
