"""Views of segmentation cells: the paper's segmentation table and the per-corruption mIoU.

:func:`segmentation_view` has one row per model, labelled as the paper labels its variants (``SymViT``,
``RPC-SymViT (4 iter/layer 1)``, from the encoder and its PAP options), and the columns clean mAcc / mIoU, corrupted
mAcc / mIoU (the mean over the corruption cells) and, when attacks were run, robust mAcc / mIoU per attack and
budget. Both are pure functions of the tidy table.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.names import ALL_CORRUPTIONS, WORST_CASE, eps_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Condition of the tidy rows averaging a model's corruption cells (``results.segmentation``'s name).
SUMMARY = "segmentation-c-summary"
#: Attack column titles, in this order; others follow in their order of appearance.
ATTACK_TITLES = {WORST_CASE: "worst case", "pgd": "PGD", "fgsm": "FGSM", "segpgd": "SegPGD"}
#: Suffixes of the registered Segmenter names that name the decoder or the size, not the encoder.
_DECODERS = ("_mask", "_linear")


def segmentation_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The tidy rows of segmentation cells (and their corruption summaries)."""
    if frame.empty or "variant" not in frame:
        return frame.iloc[0:0]
    task = frame["variant"].map(lambda v: bool(v) and json.loads(v).get("task") == "segmentation")
    return frame[task]


def segmentation_label(model: str, options: dict[str, Any]) -> str | None:
    """The paper's name of a Segmenter by its encoder and PAP options (``RPC-SymViT (2 iter/all layers)``)."""
    from robustbench_rpc.reporting.paper import paper_label

    architecture = str(options.get("architecture", model)).strip().lower()
    if not architecture.startswith("segmenter_"):
        return None
    encoder = architecture.removeprefix("segmenter_")
    for suffix in _DECODERS:
        encoder = encoder.removesuffix(suffix)
    return paper_label(encoder, {k: v for k, v in options.items() if k != "architecture"})


def _labels(frame: pd.DataFrame) -> dict[str, str]:
    """``{model_label: row label}``: the paper's names, the model label where there is none or it is shared."""
    found: dict[str, str | None] = {}
    for label, model, options in zip(frame["model_label"], frame["model"], frame["model_options"], strict=True):
        if label not in found:
            found[label] = segmentation_label(str(model), json.loads(options) if options else {})
    counts: dict[str, int] = {}
    for name in found.values():
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    return {label: label if name is None else (name if counts[name] == 1 else f"{name} [{label}]")
            for label, name in found.items()}


def _suffix(rows: pd.DataFrame) -> pd.Series:
    """What tells a column's rows apart: `` [dataset, key=value]`` naming the dataset when there are several and
    the variant parameters whose values differ (e.g. two ``limit``s), else nothing."""
    import pandas as pd

    variants = [json.loads(v) if v else {} for v in rows["variant"]]
    keys = sorted({k for v in variants for k in v})
    differing = [k for k in keys if len({json.dumps(v.get(k), default=str) for v in variants}) > 1]
    several = rows["dataset"].nunique() > 1
    texts = []
    for dataset, variant in zip(rows["dataset"], variants, strict=True):
        parts = ([str(dataset)] if several else []) + [f"{k}={variant.get(k)}" for k in differing]
        texts.append(f" [{', '.join(parts)}]" if parts else "")
    return pd.Series(texts, index=rows.index, dtype=object)


def segmentation_view(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per model: clean mAcc / mIoU, corrupted mAcc / mIoU, attacked mAcc / mIoU per attack and budget."""
    import pandas as pd

    rows = segmentation_rows(frame)
    if rows.empty:
        raise UserError("The results have no segmentation cells for the segmentation view; run evaluate --task "
                        "segmentation first.")
    models = list(dict.fromkeys(rows["model_label"]))
    out = pd.DataFrame({"model": models})
    columns: list[tuple[str, pd.DataFrame]] = []
    for title, condition in (("clean", "clean"), ("corrupted", SUMMARY)):
        for metric in ("mAcc", "mIoU"):
            chosen = rows[(rows["condition"] == condition) & (rows["metric"] == metric)]
            if not chosen.empty:
                columns.append((f"{title} {metric}", chosen))
    attacks = rows[(rows["condition"] == "attack") & rows["metric"].isin(["mAcc", "mIoU"])]
    if not attacks.empty:
        names = list(dict.fromkeys(sorted(attacks["name"].unique(), key=lambda n: (
            list(ATTACK_TITLES).index(n) if n in ATTACK_TITLES else len(ATTACK_TITLES)))))
        for name in names:
            for eps in sorted(attacks.loc[attacks["name"] == name, "eps"].unique()):
                for metric in ("mAcc", "mIoU"):
                    chosen = attacks[(attacks["name"] == name) & (attacks["eps"] == eps)
                                     & (attacks["metric"] == metric)]
                    title = f"{ATTACK_TITLES.get(name, name)} {eps_text(eps, 'Linf')} {metric}"
                    columns.append((title, chosen))
    for title, chosen in columns:
        chosen = chosen.assign(column=title + _suffix(chosen))
        wide = chosen.pivot_table(index="model_label", columns="column", values="value", aggfunc="mean")
        for column in dict.fromkeys(chosen["column"]):
            out[column] = out["model"].map(wide[column])
    out["model"] = out["model"].map(_labels(rows))
    return out


def corruption_miou(frame: pd.DataFrame, metric: str = "mIoU") -> pd.DataFrame:
    """One row per corruption (ImageNet-C order), one column per model: ``metric`` averaged over severities."""
    rows = segmentation_rows(frame)
    rows = rows[(rows["condition"] == "corruption") & (rows["metric"] == metric)]
    if rows.empty:
        raise UserError("The results have no corrupted segmentation cells; run evaluate --task segmentation "
                        "--suite corrupted first.")
    models = list(dict.fromkeys(rows["model_label"]))
    wide = rows.pivot_table(index="name", columns="model_label", values="value", aggfunc="mean")
    order = [c for c in ALL_CORRUPTIONS if c in wide.index] + [c for c in wide.index if c not in ALL_CORRUPTIONS]
    wide = wide.reindex(index=order, columns=models)
    labels = _labels(rows)
    wide.columns = [labels[m] for m in wide.columns]
    return wide.reset_index().rename(columns={"name": "corruption"})
