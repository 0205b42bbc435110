"""Wide views of the tidy table: the paper's main table, corruptions, severities and attacks.

Every view is a pure function of the tidy table and returns a flat :class:`pandas.DataFrame` (no index) whose
model columns follow the order in which the models appear in the tidy table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.names import ALL_CORRUPTIONS, SUMMARY_CONDITION, WORST_CASE, dataset_family, eps_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: ImageNet-C corruption order (the 15 benchmark corruptions, then the 4 extra ones).
CORRUPTION_ORDER = ALL_CORRUPTIONS


def _model_order(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["model_label"]))


def _nonempty(frame: pd.DataFrame, view: str) -> None:
    if frame.empty:
        raise UserError(f"The results have no cells for the {view} view.")


def variant_text(variant: str) -> str:
    """Return the tidy ``variant`` JSON (extra cell params) as ``key=value`` pairs, e.g. ``source=generated``."""
    if not variant:
        return ""
    return ",".join(f"{k}={v}" for k, v in json.loads(variant).items())


def _flat_variant(variant: str) -> dict[str, Any]:
    """Return the variant JSON as a flat dict (nested dicts such as attack options become ``key=value`` pairs)."""
    out: dict[str, Any] = {}
    for key, value in (json.loads(variant) if variant else {}).items():
        if isinstance(value, dict):
            out.update({k: v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _qualifier_text(rows: pd.DataFrame, group: list[str] | None = None) -> pd.Series:
    """Return per-row text telling apart datasets/variants that would otherwise share a row or column.

    Only what differs matters: within each ``group`` of rows (all rows when None), the text names the dataset
    when several datasets share the group and the variant parameters whose values differ inside the group.
    """
    import pandas as pd

    variants = [_flat_variant(v) for v in rows["variant"]]
    keys = [tuple(rows[c].iloc[i] for c in group) if group else () for i in range(len(rows))]
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    texts = [""] * len(rows)
    for idx in members.values():
        use_dataset = len({rows["dataset"].iloc[i] for i in idx}) > 1
        names = sorted({k for i in idx for k in variants[i]})
        varying = [k for k in names if len({json.dumps(variants[i].get(k), default=str) for i in idx}) > 1]
        for i in idx:
            parts = [str(rows["dataset"].iloc[i])] if use_dataset else []
            parts += [f"{k}={variants[i].get(k)}" for k in varying]
            texts[i] = " ".join(parts[:1] + [",".join(parts[1:])] if use_dataset and len(parts) > 1
                                else [",".join(parts)] if not use_dataset else parts)
    return pd.Series(texts, index=rows.index, dtype=object)


def _qualifier(rows: pd.DataFrame) -> pd.Series:
    """Return `` [qualifier]`` suffixes (empty where nothing needs telling apart)."""
    text = _qualifier_text(rows)
    return text.map(lambda t: f" [{t}]" if t else "")


#: Paper view columns: (column label, row filter on the tidy table, metric).
PaperFilter = Callable[["pd.DataFrame"], "pd.Series"]
PAPER_COLUMNS: tuple[tuple[str, PaperFilter, str], ...] = (
    ("clean top-1", lambda f: (f["condition"] == "clean") & (f["family"] == "clean"), "top1"),
    ("clean top-5", lambda f: (f["condition"] == "clean") & (f["family"] == "clean"), "top5"),
    ("ImageNet-C mCE", lambda f: f["condition"] == SUMMARY_CONDITION, "mce"),
    ("ImageNet-C mCE (partial)", lambda f: f["condition"] == SUMMARY_CONDITION, "mce_partial"),
    ("ImageNet-C acc", lambda f: (f["condition"] == SUMMARY_CONDITION) & (f["family"] == "imagenet-c"), "mean_top1"),
    ("corrupted acc", lambda f: (f["condition"] == SUMMARY_CONDITION) & (f["family"] == "clean"), "mean_top1"),
    ("ImageNet-R top-1", lambda f: f["family"] == "imagenet-r", "top1"),
    ("ImageNet-A top-1", lambda f: f["family"] == "imagenet-a", "top1"),
    ("ImageNet-O AUPR", lambda f: f["family"] == "imagenet-o", "aupr"),
    ("ImageNet-V2 top-1", lambda f: f["family"] == "imagenet-v2", "top1"),
    ("ImageNet-Sketch top-1", lambda f: f["family"] == "imagenet-sketch", "top1"),
    ("Stylized-ImageNet top-1", lambda f: f["family"] == "stylized-imagenet", "top1"),
    ("ObjectNet top-1", lambda f: f["family"] == "objectnet", "top1"),
    ("ImageNet-C-bar mean error", lambda f: (f["condition"] == SUMMARY_CONDITION)
     & (f["family"] == "imagenet-c-bar"), "mean_error"),
    ("ImageNet-3DCC mean error", lambda f: (f["condition"] == SUMMARY_CONDITION)
     & (f["family"] == "imagenet-3dcc"), "mean_error"),
)


def paper_view(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model: clean top-1/5, ImageNet-C mCE and mean accuracy, ImageNet-R/A top-1, ImageNet-O AUPR,
    and the worst-case robust top-1 at each budget where several attacks were run (each model's worst case over the
    attacks run on it; ``compare`` restricts it to the attacks two models share).

    Columns without any value are left out; a column whose rows come from several datasets or variants is split
    into one column per dataset/variant (suffix ``[...]``). A single attack's number is not a column here: it is
    no robust accuracy to quote (the attacks view has it).
    """
    import pandas as pd

    from robustbench_rpc.reporting.paper import paper_labels, without_seed

    _nonempty(frame, "paper")
    frame = frame.assign(family=frame["dataset"].map(dataset_family))
    models = _model_order(frame)
    out = pd.DataFrame({"model": models})
    for label, select, metric in PAPER_COLUMNS:
        rows = frame[select(frame) & (frame["metric"] == metric)]
        if rows.empty:
            continue
        rows = rows.assign(variant=rows["variant"].map(without_seed))  # seeds: one column, mean ± std
        rows = rows.assign(column=label + _qualifier(rows))
        wide = rows.groupby(["model_label", "column"], sort=False)["value"].agg(_mean_std).unstack("column")
        for column in dict.fromkeys(rows["column"]):
            out[column] = out["model"].map(wide[column])
    worst = frame[(frame["condition"] == "attack") & (frame["name"] == WORST_CASE) & (frame["metric"] == "robust_top1")]
    if not worst.empty:
        # one column per budget: each model's worst case over the attacks run on it (compare pairs shared attacks)
        worst = worst.sort_values(["norm", "eps"], kind="stable").assign(variant=worst["variant"].map(
            lambda v: json.dumps({k: x for k, x in json.loads(v).items() if k != "attacks"}, sort_keys=True)))
        label = "worst-case robust top-1 " + worst["norm"].astype(str) + " " + worst.apply(
            lambda r: eps_text(r["eps"], r["norm"]), axis=1)
        worst = worst.assign(column=label + _qualifier_text_suffix(worst, ["norm", "eps"]))
        wide = worst.pivot_table(index="model_label", columns="column", values="value", aggfunc="mean")
        for column in dict.fromkeys(worst["column"]):
            out[column] = out["model"].map(wide[column])
    out["model"] = out["model"].map(paper_labels(frame))  # the paper's row labels, from the model options
    return out


def _qualifier_text_suffix(rows: pd.DataFrame, group: list[str]) -> pd.Series:
    text = _qualifier_text(rows, group)
    return text.map(lambda t: f" [{t}]" if t else "")


def _attack_text(rows: pd.DataFrame) -> pd.Series:
    """The attack column: the attack's name, and for worst-case rows the attacks they cover."""
    def text(name: Any, variant: str) -> str:
        if name != WORST_CASE:
            return str(name)
        return f"{WORST_CASE} of " + ", ".join(_flat_variant(variant).get("attacks", []))

    return rows.apply(lambda r: text(r["name"], r["variant"]), axis=1)


def _pivot_models(rows: pd.DataFrame, index: list[str], models: list[str], how: Any = "mean") -> pd.DataFrame:
    """One column per model of ``value`` aggregated by ``how`` (a pandas aggregation: mean, first, a function)."""
    wide = rows.groupby([*index, "model_label"], sort=False, dropna=False)["value"].agg(how).unstack("model_label")
    wide = wide.reindex(columns=[m for m in models if m in wide.columns])
    wide.columns.name = None
    return wide.reset_index()


def corruptions_view(frame: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Corruption x model: ``metric`` (default top-1 %) averaged over severities, plus a ``mean`` row."""
    import pandas as pd

    rows = frame[(frame["condition"] == "corruption") & (frame["metric"] == metric)]
    _nonempty(rows, "corruptions")
    models = _model_order(rows)
    rows, seeds = _split_seeds(rows)
    rows = rows.assign(corruption=rows["name"].astype(str) + _qualifier(rows))
    order = {name: i for i, name in enumerate(CORRUPTION_ORDER)}
    per_seed, per_corruption = _over_seeds(rows, seeds, ["corruption", "name"])
    wide = _pivot_models(per_corruption, ["corruption", "name"], models, "first")
    wide["_order"] = wide["name"].map(lambda n: order.get(n, len(order)))
    wide = wide.sort_values(["_order", "corruption"], kind="stable").drop(columns=["_order", "name"])
    # the mean row: each seed's mean over the corruptions, then mean ± std over the seeds
    seed_means = per_seed.groupby(["model_label", "_seed"], sort=False, dropna=False)["value"].mean()
    mean = {"corruption": "mean", **{m: _mean_std(seed_means[m]) for m in models if m in wide}}
    return pd.concat([wide, pd.DataFrame([mean])], ignore_index=True)


def _split_seeds(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[Any]]:
    """Return the rows with ``seed`` taken out of their variant, and each row's seed (None when it has none)."""
    from robustbench_rpc.reporting.paper import without_seed

    seeds = [_flat_variant(v).get("seed") if v else None for v in rows["variant"]]
    return rows.assign(variant=rows["variant"].map(without_seed)), seeds


def _mean_std(values: Any) -> Any:
    """The values' mean, or ``mean ± std`` text over several seeds (a pandas aggregation)."""
    from robustbench_rpc.reporting.paper import mean_std_text

    return mean_std_text(list(values))


def _over_seeds(rows: pd.DataFrame, seeds: list[Any], index: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each seed's mean per (index, model), and their ``mean ± std`` over the seeds (a float for one seed)."""
    keys = [*index, "model_label"]
    per_seed = rows.assign(_seed=seeds).groupby([*keys, "_seed"], sort=False, dropna=False)["value"].mean()
    per_seed = per_seed.reset_index()
    return per_seed, per_seed.groupby(keys, sort=False, dropna=False)["value"].agg(_mean_std).reset_index()


def severity_view(frame: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """Severity x model: ``metric`` (default top-1 %) averaged over the corruptions present."""
    rows = frame[(frame["condition"] == "corruption") & (frame["metric"] == metric)]
    _nonempty(rows, "severity")
    models = _model_order(rows)
    rows, seeds = _split_seeds(rows)
    qualifier = _qualifier(rows)
    index = ["severity"]
    if (qualifier != "").any():
        rows = rows.assign(source=_qualifier_text(rows))
        index = ["source", "severity"]
    _, per_severity = _over_seeds(rows, seeds, index)
    wide = _pivot_models(per_severity, index, models, "first")
    return wide.sort_values(index, kind="stable").reset_index(drop=True)


def attacks_view(frame: pd.DataFrame, metric: str = "robust_top1") -> pd.DataFrame:
    """Attack x norm x eps rows, one column per model: ``metric`` (default robust top-1 %).

    ``eps`` is the budget as written on the command line (``4/255``; L2 and other budgets their exact value); the
    tidy view keeps the float.

    ``worst-case of ...`` rows (several attacks at one budget) count a sample robust only if every attack listed
    failed on it: the robust accuracy to quote. Cells run with several seeds read ``mean ± std`` over the seeds.
    """
    from robustbench_rpc.reporting.paper import without_seed

    rows = frame[(frame["condition"] == "attack") & (frame["metric"] == metric)]
    _nonempty(rows, "attacks")
    models = _model_order(rows)
    seeded = rows["variant"].map(without_seed)
    several_seeds = bool((rows.assign(v=seeded).groupby(["model_label", "name", "norm", "eps", "v"], dropna=False)
                          .size() > 1).any())
    rows = rows.assign(variant=seeded)
    rows = rows.assign(
        attack=_attack_text(rows),
        norm=rows["norm"].fillna("").astype(str),
        _eps=rows["eps"].fillna(0.0).astype(float),
    )
    rows = rows.assign(eps=[eps_text(e, n) for e, n in zip(rows["_eps"], rows["norm"], strict=True)])
    index = ["attack", "norm", "_eps", "eps"]
    qualifier = _qualifier_text(rows, ["attack", "norm", "_eps"])
    if (qualifier != "").any():
        rows = rows.assign(variant=qualifier)
        index.append("variant")
    wide = _pivot_models(rows, index, models, _mean_std if several_seeds else "mean")
    return wide.sort_values(index, kind="stable").drop(columns="_eps").reset_index(drop=True)


def tidy_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The tidy table itself (one row per cell and metric)."""
    _nonempty(frame, "tidy")
    return frame.reset_index(drop=True)


def paper_attacks_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's attack table: one row per model, one column per attack at its highest budget."""
    from robustbench_rpc.reporting.paper import paper_attacks_view as view

    return view(frame)


def segmentation_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The paper's segmentation table: per model clean / corrupted (/ attacked) mAcc and mIoU."""
    from robustbench_rpc.reporting.segmentation import segmentation_view as view

    return view(frame)


VIEWS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "paper": paper_view,
    "paper-attacks": paper_attacks_view,
    "corruptions": corruptions_view,
    "severity": severity_view,
    "attacks": attacks_view,
    "tidy": tidy_view,
    "segmentation": segmentation_view,
}


#: The view of the audit frame (:func:`robustbench_rpc.results.verdicts.audit_frame`), not of the tidy table.
AUDIT_VIEW = "audit"
#: Every view name the ``table`` command knows.
VIEW_NAMES = (*VIEWS, AUDIT_VIEW)


def audit_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The audit's verdicts: model, check, budget, status (pass / flag / skip), value, threshold, detail, evidence.

    Rows follow the models' order, then the checks' order; ``value`` and ``threshold`` share the unit given.
    """
    if frame.empty:
        raise UserError("The results have no audit verdicts; run 'robustbench-rpc audit' on them first.")
    models = _model_order(frame)
    rows = frame.assign(_model=frame["model_label"].map({m: i for i, m in enumerate(models)}))
    rows = rows.sort_values(["_model", "order", "norm", "eps"], kind="stable", na_position="first")
    eps = [eps_text(e, n) if e == e else "" for e, n in zip(rows["eps"], rows["norm"], strict=True)]
    out = rows.assign(model=rows["model_label"], eps=eps)
    return out[["model", "check", "norm", "eps", "status", "value", "threshold", "unit", "detail",
                "evidence"]].reset_index(drop=True)


def check_view(view: str) -> None:
    """Raise :class:`UserError` for an unknown view name."""
    if view not in VIEW_NAMES:
        raise UserError(f"Unknown view {view!r}; expected one of {', '.join(VIEW_NAMES)}"
                        f"{did_you_mean(view, VIEW_NAMES)}.")


def build_view(frame: pd.DataFrame, view: str) -> pd.DataFrame:
    """Return the named view (``paper``, ``corruptions``, ``severity``, ``attacks`` or ``tidy``) of a tidy table."""
    check_view(view)
    return VIEWS[view](frame)
