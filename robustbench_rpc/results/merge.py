"""Merging the results directories of ``--shard i/n`` runs into one directory.

Each shard directory records its run's plan (hash of the ordered cell keys and the result-changing settings, the
list of planned cells, the shard spec) in its run provenance. Merging checks that every shard holds the same model
identity and the same plan, copies the cell files (verified, atomically) and reports the planned cells that no
shard holds; a merge with missing cells is refused unless ``allow_partial``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.results.provenance import package_versions
from robustbench_rpc.results.store import ResultsStore, atomic_write_bytes


@dataclass
class MergeReport:
    """What a merge did: the output, the shards seen, the cells copied and the planned cells missing."""

    out: Path
    plan_hash: str
    shards: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every planned cell is in the merged directory."""
        return not self.missing

    def __str__(self) -> str:
        text = f"{len(self.copied)} cell(s) merged from {len(self.shards)} shard(s) into {self.out}"
        if self.missing:
            text += f"; {len(self.missing)} planned cell(s) missing (partial)"
        return text


def _identity_text(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def _plans(store: ResultsStore) -> list[dict[str, Any]]:
    return [run["plan"] for run in store.runs() if isinstance(run.get("plan"), dict)]


def _shard_label(plans: list[dict[str, Any]]) -> str:
    labels = sorted({str(p.get("shard") or "all") for p in plans})
    return ",".join(labels)


def missing_shards(position_slugs: list[tuple[int, str]], count: int | None) -> list[int]:
    """Return the shard indices (of ``count``) that own at least one missing cell position."""
    if not count:
        return []
    return sorted({pos % count for pos, _ in position_slugs})


def merge_results(dirs: Sequence[str | Path], out: str | Path, *, allow_partial: bool = False,
                  command_line: Sequence[str] | None = None) -> MergeReport:
    """Combine shard results directories into ``out``; refuse different models or plans, report missing cells."""
    if not dirs:
        raise UserError("merge needs at least one results directory.")
    out = Path(out)
    stores = []
    for d in dirs:
        if Path(d).resolve() == out.resolve():
            raise UserError(f"--out {out} is also one of the directories to merge; choose a new directory.")
        stores.append(ResultsStore(d))
    identity: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    for store in stores:
        models = store.model_identities
        if len(models) != 1:
            what = "no model" if not models else f"{len(models)} models"
            raise UserError(f"Results directory {store.root} holds {what}; a shard holds exactly one model.")
        if identity is None:
            identity, first = models[0], store.root
        elif _identity_text(models[0]) != _identity_text(identity):
            raise UserError(f"Shards {first} and {store.root} hold different models or checkpoints "
                            f"({_identity_text(identity)} vs {_identity_text(models[0])}); merge refused.")
        plans = _plans(store)
        if not plans:
            raise UserError(f"Results directory {store.root} records no plan (it was written by an older "
                            f"robustbench-rpc); it cannot be merged safely.")
        hashes = {p["hash"] for p in plans}
        if len(hashes) > 1:
            raise UserError(f"Results directory {store.root} mixes runs of {len(hashes)} different plans; "
                            f"merge refused.")
        if plan is None:
            plan, first_plan = plans[0], store.root
        elif plans[0]["hash"] != plan["hash"]:
            raise UserError(f"Shards {first_plan} and {store.root} come from different plans (different cells, "
                            f"seed, batch size or precision: plan {plan['hash'][:12]} vs "
                            f"{plans[0]['hash'][:12]}); run every shard with the same arguments.")
    assert identity is not None and plan is not None
    planned = [(c["key"], c["slug"]) for c in plan["cells"]]
    planned_keys = {k for k, _ in planned}
    found: dict[str, Any] = {}
    report = MergeReport(out, plan["hash"])
    for store in stores:
        report.shards.append(f"{store.root} ({_shard_label(_plans(store))})")
        for cell in store.cell_files():
            key = cell.spec.key()
            if key not in planned_keys:
                report.ignored.append(str(cell.path))
            else:
                found.setdefault(key, cell)
    counts = {int(m.group(1)) for store in stores for p in _plans(store)
              if (m := re.fullmatch(r"\d+/(\d+)", str(p.get("shard"))))}
    count = counts.pop() if len(counts) == 1 else None
    for position, (key, slug) in enumerate(planned):
        if key not in found:
            report.missing.append({"key": key, "slug": slug, "position": position,
                                   "shard": f"{position % count}/{count}" if count else None})
    if report.missing and not allow_partial:
        names = ", ".join(m["slug"] for m in report.missing[:8]) + (" ..." if len(report.missing) > 8 else "")
        shards = sorted({m["shard"] for m in report.missing if m["shard"]})
        where = f" (from shard(s) {', '.join(shards)})" if shards else ""
        raise UserError(f"{len(report.missing)} of {len(planned)} planned cell(s) are in none of the shards"
                        f"{where}: {names}; run the missing shards, or pass --allow-partial to merge what exists.")
    target = ResultsStore(out, create=True)
    target.check_compatible(identity)
    for store in stores:
        for run in store.runs():
            target.import_run(run)
    for key, _slug in planned:
        cell = found.get(key)
        if cell is None:
            continue
        atomic_write_bytes(target.cell_path(cell.spec), Path(cell.path).read_bytes())
        report.copied.append(cell.spec.slug())
    merge_record = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(command_line if command_line is not None else sys.argv),
        "versions": package_versions(),
        "merge": {"sources": [str(s.root) for s in stores], "complete": report.complete,
                  "missing": report.missing, "copied": len(report.copied)},
        "plan": {**plan, "shard": None} if report.complete else {**plan, "shard": "partial-merge"},
    }
    target.start_run(merge_record, model=identity)
    return report
