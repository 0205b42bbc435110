"""The worst case over attacks, per sample: robust only if no attack run on it at that budget succeeded.

Attack cells of one model are grouped by (dataset, norm, eps, threat model). In a group of two or more cells the
worst case is computed on the samples every member ran on (paired by ``sample_id``): a sample is robust (top-1) only
if it is correctly classified in every member cell, and likewise for top-5. It is computed from the stored records
(nothing is re-run) and is never above any member's robust accuracy on those samples; when every member ran on the
same samples (the usual case) it is never above any member's own number.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from robustbench_rpc.results.schema import CellSpec

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Record columns the worst case reads.
WORST_CASE_COLUMNS = ["sample_id", "correct1", "correct5", "clean_correct"]


def group_key(identity: dict[str, Any], spec: CellSpec) -> str:
    """Return the key of the worst-case group of an attack cell: model identity, dataset, norm, eps, threat model."""
    params = spec.params
    return json.dumps(
        {"identity": identity, "dataset": spec.dataset, "norm": params.get("norm"), "eps": float(params["eps"]),
         "threat_model": params.get("threat_model", "pixel")},
        sort_keys=True, default=str,
    )


def attack_labels(specs: Sequence[CellSpec]) -> list[str]:
    """Return a label per attack cell: its name, plus its options that differ from those of its same-named peers.

    For each option that varies between cells of one attack, the usual value (the most common one; on a tie the
    smallest as text) is left out, e.g. ``pgd``, ``pgd[restarts=2,steps=40]`` and ``pgd[bpda=True]``.
    """
    from collections import Counter

    by_name: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_name.setdefault(str(spec.params.get("name")), []).append(i)
    labels = [""] * len(specs)
    for name, members in by_name.items():
        options = [dict(specs[i].params.get("options") or {}) for i in members]
        keys = sorted({k for o in options for k in o})
        usual: dict[str, str] = {}
        for key in keys:
            counts = Counter(json.dumps(o.get(key), default=str) for o in options)
            if len(counts) > 1:
                usual[key] = min(counts, key=lambda v: (-counts[v], v))
        for i, opts in zip(members, options, strict=True):
            special = [f"{k}={opts.get(k)}" for k in usual if json.dumps(opts.get(k), default=str) != usual[k]]
            labels[i] = name + ("[" + ",".join(special) + "]" if special else "")
    return labels


@dataclass
class WorstCaseGroup:
    """The attack cells of one (model, dataset, norm, eps, threat model) and their records."""

    specs: list[CellSpec] = field(default_factory=list)
    records: list[pd.DataFrame] = field(default_factory=list)

    def add(self, spec: CellSpec, records: pd.DataFrame) -> None:
        """Add one member cell (its records need the :data:`WORST_CASE_COLUMNS`)."""
        self.specs.append(spec)
        self.records.append(records)

    def per_sample(self) -> pd.DataFrame:
        """Return one row per common sample: ``sample_id``, ``correct1``, ``correct5``, ``clean_correct``."""
        import numpy as np
        import pandas as pd

        frames = [r.drop_duplicates("sample_id").set_index("sample_id") for r in self.records]
        common = frames[0].index
        for frame in frames[1:]:
            common = common.intersection(frame.index, sort=False)
        out = pd.DataFrame({"sample_id": list(common)})
        for column in ("correct1", "correct5", "clean_correct"):
            present = [f for f in frames if column in f]
            if not present:
                continue
            values = np.stack([f.loc[common, column].astype(bool).to_numpy() for f in present])
            out[column] = values.all(axis=0) if column != "clean_correct" else values.any(axis=0)
        return out

    def variant(self) -> dict[str, Any]:
        """Describe the group: the attacks it covers (labels) and the threat model."""
        return {"attacks": sorted(attack_labels(self.specs)),
                "threat_model": self.specs[0].params.get("threat_model", "pixel")}


def worst_case_metrics(per_sample: pd.DataFrame) -> list[tuple[str, float, int]]:
    """Return ``(metric, value, n)`` of a worst-case group: robust top-1 / top-5, clean top-1, success rate (%)."""
    n = len(per_sample)
    if n == 0:
        return []

    def percent(values: Any) -> float:
        return float(values.mean()) * 100.0 if len(values) else float("nan")

    rows = [("robust_top1", percent(per_sample["correct1"]), n)]
    if "correct5" in per_sample:
        rows.append(("robust_top5", percent(per_sample["correct5"]), n))
    if "clean_correct" in per_sample:
        clean = per_sample["clean_correct"].astype(bool)
        rows.append(("clean_top1", percent(clean), n))
        broken = clean & ~per_sample["correct1"].astype(bool)
        rows.append(("success_rate", percent(broken[clean]), int(clean.sum())))
    return rows


def worst_case_groups(cells: Iterable[tuple[dict[str, Any], CellSpec, pd.DataFrame]]) -> dict[str, WorstCaseGroup]:
    """Group attack cells ``(identity, spec, records)`` (eps > 0) by :func:`group_key`; keep groups of 2 or more."""
    groups: dict[str, WorstCaseGroup] = {}
    for identity, spec, records in cells:
        if spec.condition != "attack" or not float(spec.params.get("eps") or 0) > 0:
            continue
        groups.setdefault(group_key(identity, spec), WorstCaseGroup()).add(spec, records)
    return {key: group for key, group in groups.items() if len(group.specs) >= 2}
