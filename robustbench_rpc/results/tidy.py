"""Records -> the tidy table: one row per (cell, metric) with the cell's coordinates as columns.

Accuracies and rates are in percent (as the paper reports them); perturbation norms are in pixel units of [0, 1].
Which metrics a cell gets follows from the columns its records have: every cell with labelled samples gets
top-1 / top-5 / error and calibration (ECE, RMS calibration error, AURRA, from ``prob_max``), cells with
``is_ood``/``ood_score`` get AUPR / AUROC / FPR@95%TPR, attack cells get robust accuracy, clean accuracy, attack
success rate and perturbation norms. Corruption cells also feed per-model summary rows (condition
``imagenet-c-summary``: mean accuracy and error, mCE and relative mCE in % of AlexNet's; see
:func:`_summary_metrics`). Segmentation cells (param ``task="segmentation"``) get aAcc / mIoU / mAcc from their
per-image class areas instead, and their corruption cells a mean per model (:mod:`robustbench_rpc.results.
segmentation`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.names import CORRUPTION_SET_NAMES, SUMMARY_CONDITION, dataset_family
from robustbench_rpc.results.schema import CellSpec, is_segmentation
from robustbench_rpc.results.store import ResultsStore, model_identity

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns of the tidy table, in order.
TIDY_COLUMNS = (
    "model",
    "model_label",
    "checkpoint_sha256",
    "model_options",
    "dataset",
    "condition",
    "name",
    "severity",
    "norm",
    "eps",
    "variant",
    "metric",
    "value",
    "n",
    "cell_key",
    "results_dir",
)
#: Record columns the metrics read (others, e.g. ``top5``, are not loaded).
METRIC_COLUMNS = [
    "sample_id",
    "label",
    "prob_max",
    "correct1",
    "correct5",
    "is_ood",
    "ood_score",
    "clean_correct",
    "success",
    "norm_linf",
    "norm_l2",
    "norm_l1",
    "queries",
    "area_intersect",
    "area_union",
    "area_pred",
    "area_label",
]
#: Params that are coordinates of their own; every other param goes into ``variant``.
COORDINATE_PARAMS = ("name", "severity", "norm", "eps")


def _percent(values: Any) -> float:
    return float(values.mean()) * 100.0 if len(values) else float("nan")


def cell_metrics(spec: CellSpec, records: pd.DataFrame) -> list[tuple[str, float, int]]:
    """Return ``(metric, value, n)`` for one cell's records; ``n`` is the number of samples behind the value."""
    rows: list[tuple[str, float, int]] = []
    if spec.condition in ("audit", "diagnose"):  # read by the audit view / the diagnostics, not metrics
        return rows
    if is_segmentation(spec):  # per-image class areas: aAcc / mIoU / mAcc of their totals
        from robustbench_rpc.results.segmentation import segmentation_cell_metrics

        return segmentation_cell_metrics(records)
    labelled = records
    if "label" in records:
        labelled = records[records["label"] >= 0]
    if spec.condition == "attack":
        rows.extend(_attack_metrics(records))
    elif "correct1" in records and len(labelled):
        n = len(labelled)
        top1 = _percent(labelled["correct1"].astype(bool))
        rows.append(("top1", top1, n))
        if "correct5" in records:
            rows.append(("top5", _percent(labelled["correct5"].astype(bool)), n))
        rows.append(("error", 100.0 - top1, n))
        if "prob_max" in records:
            rows.extend(_calibration_metrics(labelled))
    if "is_ood" in records and "ood_score" in records:
        rows.extend(_ood_metrics(records))
    return rows


def _attack_metrics(records: pd.DataFrame) -> list[tuple[str, float, int]]:
    n = len(records)
    rows = [("robust_top1", _percent(records["correct1"].astype(bool)), n)]
    if "correct5" in records:
        rows.append(("robust_top5", _percent(records["correct5"].astype(bool)), n))
    if "clean_correct" in records:
        clean = records["clean_correct"].astype(bool)
        rows.append(("clean_top1", _percent(clean), n))
        if "success" in records:
            # success rate among the samples the model got right before the attack
            rows.append(("success_rate", _percent(records.loc[clean, "success"].astype(bool)), int(clean.sum())))
    for norm in ("linf", "l2", "l1"):
        column = f"norm_{norm}"
        if column in records and n:
            rows.append((f"{norm}_mean", float(records[column].mean()), n))
            rows.append((f"{norm}_max", float(records[column].max()), n))
    if "queries" in records:
        counted = records.loc[records["queries"] >= 0, "queries"]
        if len(counted):
            rows.append(("queries_mean", float(counted.mean()), len(counted)))
    return rows


def _calibration_metrics(labelled: pd.DataFrame) -> list[tuple[str, float, int]]:
    from robustbench_rpc.metrics import calibration

    values = calibration.calibration_metrics(labelled)
    return [(name, 100.0 * values[name], len(labelled)) for name in ("ece", "rms_calibration_error", "aurra")]


def _ood_metrics(records: pd.DataFrame) -> list[tuple[str, float, int]]:
    from robustbench_rpc.metrics import ood

    positive = records["is_ood"].astype(bool).to_numpy()
    score = records["ood_score"].astype(float).to_numpy()
    n = len(records)
    if positive.all() or not positive.any():
        return []  # detection needs both in- and out-of-distribution samples
    return [
        ("aupr", 100.0 * ood.aupr(positive, score), n),
        ("auroc", 100.0 * ood.auroc(positive, score), n),
        ("fpr95", 100.0 * ood.fpr_at_tpr(positive, score, 0.95), n),
    ]


def _coordinates(spec: CellSpec) -> dict[str, Any]:
    params = spec.params
    severity = params.get("severity")
    eps = params.get("eps")
    variant = {k: v for k, v in sorted(params.items()) if k not in COORDINATE_PARAMS}
    return {
        "model": spec.model,
        "checkpoint_sha256": spec.checkpoint_sha256,
        "model_options": json.dumps(spec.model_options, sort_keys=True, default=str),
        "dataset": spec.dataset,
        "condition": spec.condition,
        "name": params.get("name"),
        "severity": None if severity is None else int(severity),
        "norm": params.get("norm"),
        "eps": None if eps is None else float(eps),
        "variant": json.dumps(variant, sort_keys=True, default=str) if variant else "",
        "cell_key": spec.key(),
    }


def _open(source: ResultsStore | str | Path) -> ResultsStore:
    return source if isinstance(source, ResultsStore) else ResultsStore(Path(source), create=False)



def unique_cells(stores: list[ResultsStore]) -> Iterator[tuple[int, ResultsStore, Any]]:
    """Yield (store index, store, cell file) of every finished cell; an empty store or a cell in two is an error."""
    seen: dict[str, Path] = {}
    for index, store in enumerate(stores):
        cells = store.cell_files()
        if not cells:
            if store.parts_dir.is_dir() and any(store.parts_dir.glob("*.parquet")):
                raise UserError(f"Results directory {store.root} holds only parts of cells from a --shard-by "
                                "samples run; combine the shards first: robustbench-rpc merge SHARD_DIRS... --out DIR.")
            raise UserError(f"Results directory {store.root} has no finished cells yet.")
        for cell in cells:
            key = cell.spec.key()
            if key in seen:
                raise UserError(
                    f"Cell {cell.spec.slug()} is in both {seen[key]} and {cell.path}; "
                    f"pass only one of the two results directories."
                )
            seen[key] = cell.path
            yield index, store, cell

def tidy(sources: ResultsStore | str | Path | Iterable[ResultsStore | str | Path]) -> pd.DataFrame:
    """Return the tidy table of one or several results directories (one row per cell and metric)."""
    import pandas as pd

    if isinstance(sources, (ResultsStore, str, Path)):
        sources = [sources]
    stores = [_open(s) for s in sources]
    if not stores:
        raise UserError("No results directory was given; expected at least one.")
    rows: list[dict[str, Any]] = []
    attack_cells: list[tuple[dict[str, Any], CellSpec, pd.DataFrame]] = []
    segmentation_attacks: list[tuple[dict[str, Any], CellSpec, pd.DataFrame]] = []
    roots: dict[str, str] = {}
    for _, store, cell in unique_cells(stores):
        records = store.read_records(cell, METRIC_COLUMNS)
        coords = _coordinates(cell.spec)
        coords["results_dir"] = str(store.root)
        identity = model_identity(cell.spec)
        for metric, value, n in cell_metrics(cell.spec, records):
            rows.append({**coords, "metric": metric, "value": value, "n": n, "_identity": identity})
        if cell.spec.condition == "attack" and "sample_id" in records:
            (segmentation_attacks if is_segmentation(cell.spec) else attack_cells).append(
                (identity, cell.spec, records))
            roots[cell.spec.key()] = str(store.root)
    rows.extend(_worst_case_rows(attack_cells, roots))
    rows.extend(_segmentation_worst_case_rows(segmentation_attacks, roots))
    if not rows:
        raise UserError("The results directories hold no cell with metrics (only audit or diagnose cells).")
    frame = pd.DataFrame(rows)
    frame["model_label"] = model_labels(frame.pop("_identity").tolist())
    from robustbench_rpc.results.segmentation import segmentation_summary

    summaries = [part for part in (corruption_summary(frame), segmentation_summary(frame)) if not part.empty]
    frame = pd.concat([frame, *summaries], ignore_index=True)
    return _typed(frame.reindex(columns=list(TIDY_COLUMNS)))


def _worst_case_rows(cells: list[tuple[dict[str, Any], CellSpec, pd.DataFrame]],
                     roots: dict[str, str]) -> list[dict[str, Any]]:
    """Tidy rows of the per-sample worst case over the attacks of each (model, dataset, norm, eps, threat model)."""
    from robustbench_rpc.names import WORST_CASE
    from robustbench_rpc.results.worst_case import worst_case_groups, worst_case_metrics

    rows: list[dict[str, Any]] = []
    for group in worst_case_groups(cells).values():
        first = group.specs[0]
        identity = model_identity(first)
        coords = {**_coordinates(first), "name": WORST_CASE, "cell_key": "", "results_dir": roots[first.key()],
                  "variant": json.dumps(group.variant(), sort_keys=True, default=str)}
        for metric, value, n in worst_case_metrics(group.per_sample()):
            rows.append({**coords, "metric": metric, "value": value, "n": n, "_identity": identity})
    return rows


def _segmentation_worst_case_rows(cells: list[tuple[dict[str, Any], CellSpec, pd.DataFrame]],
                                  roots: dict[str, str]) -> list[dict[str, Any]]:
    """Tidy rows of the lowest mIoU / mAcc / aAcc found at each budget of a segmentation model by its attacks."""
    from robustbench_rpc.names import WORST_CASE
    from robustbench_rpc.results.segmentation import segmentation_worst_case

    groups: dict[str, list[tuple[dict[str, Any], CellSpec, pd.DataFrame]]] = {}
    for identity, spec, records in cells:
        key = json.dumps([identity, spec.dataset, spec.params.get("norm"), spec.params.get("eps")], sort_keys=True,
                         default=str)
        groups.setdefault(key, []).append((identity, spec, records))
    rows: list[dict[str, Any]] = []
    for group in groups.values():
        if len(group) < 2:  # one attack's number is that attack's, not a worst case
            continue
        identity, first, _ = group[0]
        attacks = sorted(_attack_label(spec) for _, spec, _ in group)
        coords = {**_coordinates(first), "name": WORST_CASE, "cell_key": "", "results_dir": roots[first.key()],
                  "variant": json.dumps({"attacks": attacks, "task": "segmentation"}, sort_keys=True)}
        for metric, value, n in segmentation_worst_case([(spec.params["name"], r) for _, spec, r in group]):
            rows.append({**coords, "metric": metric, "value": value, "n": n, "_identity": identity})
    return rows


def _attack_label(spec: CellSpec) -> str:
    """An attack's name with the parameters that tell it apart from others of its name (e.g. ``pgd[steps=20]``)."""
    extra = {k: v for k, v in spec.params.items() if k in ("steps", "seed")}
    return spec.params["name"] + (f"[{','.join(f'{k}={v}' for k, v in sorted(extra.items()))}]" if extra else "")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["severity"] = frame["severity"].astype("Int64")
    frame["eps"] = frame["eps"].astype(float)
    frame["value"] = frame["value"].astype(float)
    frame["n"] = frame["n"].astype("int64")
    return frame


# What an absent model option means, for labels (precision is recorded only when it is not float32).
_OPTION_DEFAULTS: dict[str, Any] = {"precision": "fp32"}


def model_labels(identities: list[dict[str, Any]]) -> list[str]:
    """Return a short display label per identity: the model name, plus what tells same-named models apart."""
    unique: dict[str, dict[str, Any]] = {}
    for identity in identities:
        unique.setdefault(json.dumps(identity, sort_keys=True, default=str), identity)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for identity in unique.values():
        by_name.setdefault(identity["model"], []).append(identity)
    labels: dict[str, str] = {}
    for name, group in by_name.items():
        option_keys = sorted({k for ident in group for k in ident["model_options"]})
        differing = [
            k
            for k in option_keys
            if len({json.dumps(ident["model_options"].get(k, _OPTION_DEFAULTS.get(k)), default=str) for ident in group})
            > 1
        ]
        for ident in group:
            label = name
            if differing:
                options = ident["model_options"]
                label += "[" + ",".join(f"{k}={options.get(k, _OPTION_DEFAULTS.get(k))}" for k in differing) + "]"
            labels[json.dumps(ident, sort_keys=True, default=str)] = label
        counts: dict[str, int] = {}
        for ident in group:
            lab = labels[json.dumps(ident, sort_keys=True, default=str)]
            counts[lab] = counts.get(lab, 0) + 1
        for ident in group:
            key = json.dumps(ident, sort_keys=True, default=str)
            if counts[labels[key]] > 1:
                sha = ident.get("checkpoint_sha256")
                labels[key] += "@" + (sha[:8] if sha else "no-checkpoint")
    return [labels[json.dumps(ident, sort_keys=True, default=str)] for ident in identities]


def corruption_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Return per-model ImageNet-C summary rows (mean accuracy, mean error, mCE, relative mCE) of a tidy frame."""
    import pandas as pd

    if frame.empty or "condition" not in frame:
        return pd.DataFrame(columns=frame.columns)
    errors = frame[(frame["condition"] == "corruption") & (frame["metric"] == "error")]
    if errors.empty:
        return pd.DataFrame(columns=frame.columns)
    out: list[dict[str, Any]] = []
    group_keys = ["model_label", "dataset", "variant"]
    for (label, dataset, variant), group in errors.groupby(group_keys, sort=False, dropna=False):
        first = group.iloc[0]
        base = {
            "model": first["model"],
            "model_label": label,
            "checkpoint_sha256": first["checkpoint_sha256"],
            "model_options": first["model_options"],
            "dataset": dataset,
            "condition": SUMMARY_CONDITION,
            "name": None,
            "severity": None,
            "norm": None,
            "eps": None,
            "variant": variant,
            "cell_key": "",
            "results_dir": first["results_dir"],
        }
        alexnet = dataset_family(dataset) == "imagenet-c"  # AlexNet's errors normalize ImageNet-C only
        names = CORRUPTION_SET_NAMES.get(dataset_family(dataset))  # C-bar, 3DCC: the mean over their own
        out.extend({**base, **row} for row in _summary_metrics(group, _clean_error(frame, label), alexnet, names))
    return pd.DataFrame(out, columns=frame.columns)


def _summary_metrics(errors: pd.DataFrame, clean_error: float | None, alexnet: bool = True,
                     names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Return summary metric rows of one model's corruption ``error`` rows (values in %).

    ``mean_top1``/``mean_error`` average the cells of the 15 standard corruptions (as published numbers do),
    ``mean_top1_all`` every corruption cell. ``mce``/``relative_mce`` need the full standard grid (15 corruptions x
    severities 1-5); on a partial grid they are reported as ``mce_partial``/``relative_mce_partial`` over the
    standard cells that were evaluated. They are left out (``alexnet=False``) for corrupted datasets other than
    ImageNet-C, where AlexNet's published errors mean nothing. ``names`` (ImageNet-C-bar's 10, ImageNet-3DCC's 12
    corruptions) replaces the 15 standard ones for those datasets: their mean error is over every cell of theirs.
    """
    from robustbench_rpc.metrics import corruption

    rows = [{"metric": "mean_top1_all", "value": 100.0 - float(errors["value"].mean()), "n": len(errors)}]
    standard = errors[errors["name"].isin(names or corruption.STANDARD_CORRUPTIONS)]
    if standard.empty:
        return rows
    n = len(standard)
    mean_error = float(standard["value"].mean())
    rows.append({"metric": "mean_top1", "value": 100.0 - mean_error, "n": n})
    rows.append({"metric": "mean_error", "value": mean_error, "n": n})
    if not alexnet:
        return rows
    table = {
        (str(name), int(sev)): float(err) / 100.0
        for name, sev, err in zip(standard["name"], standard["severity"], standard["value"], strict=True)
    }
    grid = {(c, s) for c in corruption.STANDARD_CORRUPTIONS for s in range(1, 6)}
    partial = not grid.issubset(table)
    suffix = "_partial" if partial else ""
    value = corruption.mce(table, allow_partial=partial)
    rows.append({"metric": "mce" + suffix, "value": 100.0 * value, "n": n})
    if clean_error is not None:
        value = corruption.relative_mce(table, clean_error / 100.0, allow_partial=partial)
        rows.append({"metric": "relative_mce" + suffix, "value": 100.0 * value, "n": n})
    return rows


def _clean_error(frame: pd.DataFrame, label: str) -> float | None:
    """Return the model's clean top-1 error (%) on its clean in-distribution dataset, when exactly one exists."""
    clean = frame[
        (frame["model_label"] == label)
        & (frame["condition"] == "clean")
        & (frame["metric"] == "error")
        & (frame["dataset"].map(dataset_family) == "clean")
    ]
    if clean["dataset"].nunique() != 1 or clean["variant"].nunique() != 1:
        return None
    return float(clean["value"].mean())
