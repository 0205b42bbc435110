"""The paper's layout: row labels from the model options, the attack table at the highest budget, seeds, threat models.

* :func:`paper_label` names a model as the paper does: ``SymViT``, ``RPC-SymViT (4 iter/layer 1)``,
  ``RPC-SymViT (2 iter/all layers)`` (FAN likewise), from the architecture and its ``rpc_*`` options.
* :func:`paper_attacks_view`: one row per model, one column per attack (PGD, FGSM, SPSA, SLD, CW, noise,
  AutoAttack, then any other) at the highest budget it was run at, robust top-1 %; with several seeds a cell reads
  ``mean ± std`` (sample standard deviation over the seeds).
* :func:`threat_model_notes`: the sentences every table with attack rows ends with, saying in which space its
  budgets are.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.names import WORST_CASE, eps_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: The attack table's column order and titles (the paper's), other attacks follow in their order of appearance.
PAPER_ATTACKS = {"pgd": "PGD", "fgsm": "FGSM", "spsa": "SPSA", "sld": "SLD", "cw": "CW", "noise": "noise",
                 "autoattack": "AutoAttack"}
#: The families the paper names, by architecture-name prefix.
FAMILIES = (("fan", "FAN"), ("symvit", "SymViT"))
#: What each threat model means, for the notes under a table.
THREAT_MODEL_NOTES = {
    "pixel": "Threat model pixel: budgets in pixel units of images in [0, 1], adversarial images clamped to "
             "[0, 1], true labels.",
    "compat-normalized": "Threat model compat-normalized (official normalized space): eps is applied to "
                         "(x - mean) / std, so 1/255 there is about 0.23/255 in pixels; no clamping, the model's "
                         "clean predictions as labels.",
    "compat-pixel": "Threat model compat-pixel: pixel budgets, but no clamping and the model's clean predictions as "
                    "labels.",
    "paper": "Threat model paper (official normalized space, as the official evaluation computed it): eps is "
             "applied to (x - mean) / std, so 1/255 there is about 0.23/255 in pixels; no clamping, clean "
             "predictions as labels; SLD (L1 10) and noise (0.3) have fixed normalized budgets and CW's eps is its "
             "confidence, not a budget. Defects of the official code are reproduced: SPSA estimates its gradient "
             "at 2x + delta, CW clamps the normalized input to [0, 1]. The official attack code has no "
             "AutoAttack: this AutoAttack (standard, normalized space, clean predictions) is ours, not a "
             "reproduction.",
}


def _strip(value: Any) -> str:
    return str(value).strip().lower()


def paper_label(model: str, options: dict[str, Any]) -> str | None:
    """Return the paper's name of a SymViT / FAN model with its PAP settings, or None for other models."""
    architecture = _strip(options.get("architecture", model))
    base = architecture.removeprefix("rpc_")
    family = next((title for prefix, title in FAMILIES if base.startswith(prefix)), None)
    if family is None:
        return None
    rpc = architecture.startswith("rpc_") or any(k.startswith("rpc_") for k in options)
    if not rpc:
        return family
    iters = options.get("rpc_iters", 4)
    layers = options.get("rpc_layers", "first")
    text = _strip(layers)
    if text in ("first", "0"):
        where = "layer 1"
    elif text in ("all", "-1"):
        where = "all layers"
    else:
        indices = [int(i) + 1 for i in text.replace("(", "").replace(")", "").replace("[", "").replace("]", "")
                   .split(",") if i.strip()]
        where = ("layer " if len(indices) == 1 else "layers ") + ",".join(map(str, indices))
    return f"RPC-{family} ({iters} iter/{where})"


def paper_labels(frame: pd.DataFrame) -> dict[str, str]:
    """Return ``{model_label: row label}``: the paper's name of the model and its PAP settings.

    A label the user gave (``--model-name``, a spec's ``label``) is kept as it is; models the paper does not name
    keep theirs. Models that would share a paper name (the same architecture and PAP settings with other weights)
    get ``, weights <SHA-256 prefix>`` (or their model label in brackets when the weights are the same too).
    """
    found: dict[str, str | None] = {}
    weights: dict[str, str] = {}
    digests = frame["checkpoint_sha256"] if "checkpoint_sha256" in frame else [None] * len(frame)
    for label, model, options, sha in zip(frame["model_label"], frame["model"], frame["model_options"], digests,
                                          strict=True):
        if label not in found:
            opts = json.loads(options) if options else {}
            named = "architecture" in opts and str(model) != str(opts["architecture"])  # the user's own label
            found[label] = None if named else paper_label(str(model), opts)
            weights[label] = str(sha)[:8] if isinstance(sha, str) and sha else "random"
    shared: dict[str, list[str]] = {}
    for label, name in found.items():
        if name is not None:
            shared.setdefault(name, []).append(label)

    def row(label: str, name: str | None) -> str:
        if name is None:
            return label
        group = shared[name]
        if len(group) == 1:
            return name
        if len({weights[other] for other in group}) == len(group):
            return f"{name}, weights {weights[label]}"
        return f"{name} [{label}]"

    return {label: row(label, name) for label, name in found.items()}


def threat_model_of(variant: str) -> str:
    """Return the threat model recorded in a tidy ``variant`` (``pixel`` when absent)."""
    return str(json.loads(variant).get("threat_model", "pixel")) if variant else "pixel"


def without_seed(variant: str) -> str:
    """Return a tidy ``variant`` with its ``seed`` removed (the rows of one condition over several seeds)."""
    if not variant:
        return variant
    values = {k: v for k, v in json.loads(variant).items() if k != "seed"}
    return json.dumps(values, sort_keys=True, default=str) if values else ""


def threat_model_notes(frame: pd.DataFrame) -> list[str]:
    """Return one sentence per threat model of the frame's attack rows (none when it has no attack rows)."""
    if frame.empty or "condition" not in frame:
        return []
    attacks = frame[frame["condition"] == "attack"]
    models = list(dict.fromkeys(threat_model_of(v) for v in attacks["variant"]))
    return [THREAT_MODEL_NOTES.get(m, f"Threat model {m}.") for m in models]


def mean_std_text(values: list[float]) -> Any:
    """Return the mean of one value (a float) or ``mean ± std`` text (sample std) of several."""
    if len(values) == 1:
        return float(values[0])
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} ± {std:.2f}"


def paper_attacks_view(frame: pd.DataFrame, metric: str = "robust_top1") -> pd.DataFrame:
    """One row per model (paper labels), one column per attack and threat model at its highest budget."""
    import pandas as pd

    rows = frame[(frame["condition"] == "attack") & (frame["metric"] == metric) & (frame["name"] != WORST_CASE)]
    if rows.empty:
        raise UserError("The results have no cells for the paper-attacks view.")
    labels = paper_labels(frame)
    models = list(dict.fromkeys(rows["model_label"]))
    rows = rows.assign(threat_model=rows["variant"].map(threat_model_of), condition_variant=rows["variant"].map(
        without_seed))
    known = list(PAPER_ATTACKS)
    attacks = sorted(dict.fromkeys(zip(rows["name"], rows["threat_model"], strict=True)),
                     key=lambda a: (known.index(a[0]) if a[0] in known else len(known), a[1] != "paper", a[1]))
    out = pd.DataFrame({"model": [labels[m] for m in models]})
    for name, threat in attacks:
        cells = rows[(rows["name"] == name) & (rows["threat_model"] == threat)]
        top = cells[cells["eps"] == cells["eps"].max()]
        norm = str(top["norm"].iloc[0])
        title = f"{PAPER_ATTACKS.get(name, name)} {eps_text(float(top['eps'].iloc[0]), norm)}"
        if threat != "pixel":
            title += f" ({threat})"
        if top["condition_variant"].nunique() > 1:  # other options at that budget: one column each
            groups = list(top.groupby("condition_variant", sort=False))
        else:
            groups = [("", top)]
        for i, (_, group) in enumerate(groups):
            column = title if len(groups) == 1 else f"{title} [{i + 1}]"
            values = {m: mean_std_text(group.loc[group["model_label"] == m, "value"].tolist())
                      for m in models if (group["model_label"] == m).any()}
            out[column] = [values.get(m, float("nan")) for m in models]
    return out
