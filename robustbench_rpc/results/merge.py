"""Merging the results directories of ``--shard i/n`` runs into one directory.

Each shard directory records its run's plan (hash of the ordered cell keys and the result-changing settings, the
list of planned cells, the shard spec ``i/n`` and how it splits, ``shard_by``) in its run provenance. Merging
checks that every shard holds the same model identity and the same plan, and that all shards split it the same
way (cells or samples: mixing them is refused), then:

- cell shards (``--shard-by cells``): copies the finished cell files (verified, atomically);
- sample shards (``--shard-by samples``): assembles each cell from its ``n`` parts (see
  :mod:`robustbench_rpc.results.parts`): records concatenated and sorted by dataset index, load reports combined,
  written as the finished cell a single-process run with the same ``--batch-size`` writes.

Planned cells that no shard holds, or whose parts are incomplete (the missing shard indices are reported per cell),
refuse the merge unless ``allow_partial``; even then an incomplete cell is left out, never written as finished.
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

from robustbench_rpc.atomic import atomic_write_bytes
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.parts import StoredPart, assemble_cell, missing_indices
from robustbench_rpc.results.provenance import package_versions
from robustbench_rpc.results.store import ResultsStore


@dataclass
class MergeReport:
    """What a merge did: the output, the shards seen, the cells copied or assembled and the planned cells missing."""

    out: Path
    plan_hash: str
    shard_by: str = "cells"
    shards: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # "<file> (<why>)"

    @property
    def complete(self) -> bool:
        """True when every planned cell is in the merged directory."""
        return not self.missing

    def __str__(self) -> str:
        text = f"{len(self.copied)} cell(s) merged from {len(self.shards)} shard(s) into {self.out}"
        if self.missing:
            what = "incomplete or missing" if self.shard_by == "samples" else "missing"
            text += f"; {len(self.missing)} planned cell(s) {what}, left out (partial)"
        return text


def _identity_text(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, default=str)


def _plans(store: ResultsStore) -> list[dict[str, Any]]:
    return [run["plan"] for run in store.runs() if isinstance(run.get("plan"), dict)]


def _shard_label(plans: list[dict[str, Any]]) -> str:
    labels = sorted({str(p.get("shard") or "all") + (" by samples" if p.get("shard_by") == "samples" else "")
                     for p in plans})
    return ",".join(labels)


def _split_modes(store: ResultsStore) -> set[str]:
    """Return how the sharded runs of ``store`` split their plan (cells, samples); empty when none was sharded."""
    return {str(p.get("shard_by") or "cells") for p in _plans(store) if p.get("shard")}


def _check_one_split(stores: Sequence[ResultsStore]) -> str:
    """Return the split mode of the shards (cells when none is sharded); refuse shards split in different ways."""
    seen: dict[str, Path] = {}
    for store in stores:
        for mode in sorted(_split_modes(store)):
            seen.setdefault(mode, store.root)
    if len(seen) > 1:
        raise UserError(f"Shards {seen['cells']} (--shard-by cells) and {seen['samples']} (--shard-by samples) "
                        "split the plan in different ways; merge shards of one kind only (re-run them with the "
                        "same --shard-by).")
    return next(iter(seen), "cells")


def _shard_counts(stores: Sequence[ResultsStore]) -> dict[int, Path]:
    """Return each shard count n of the ``i/n`` runs in ``stores``, with the first directory that has it."""
    counts: dict[int, Path] = {}
    for store in stores:
        for plan in _plans(store):
            if m := re.fullmatch(r"\d+/(\d+)", str(plan.get("shard"))):
                counts.setdefault(int(m.group(1)), store.root)
    return counts


def _sample_count(stores: Sequence[ResultsStore]) -> int:
    """Return n of the sample shards ``i/n``; refuse shards that split the samples into different numbers."""
    counts = _shard_counts(stores)
    if len(counts) > 1:
        (a, da), (b, db) = list(counts.items())[:2]
        raise UserError(f"Shards {da} (of {a}) and {db} (of {b}) split the samples into different numbers of "
                        "shards; merge the shards of one --shard i/n split.")
    return next(iter(counts))


@dataclass
class _ShardFiles:
    """The shards' cell and part files, listed (and verified) once for all the plans of a merge."""

    cells: list[Any]  # every verified cell file, store by store
    parts: list[StoredPart]  # every part file, store by store

    @classmethod
    def of(cls, stores: Sequence[ResultsStore]) -> _ShardFiles:
        """List the cell and part files of ``stores``."""
        return cls([cell for store in stores for cell in store.cell_files()],
                   [StoredPart(store, file) for store in stores for file in store.part_files()])


def _collect_parts(parts: Sequence[StoredPart], planned_keys: set[str]) -> tuple[dict[str, list[StoredPart]],
                                                                                 list[str]]:
    """Return the parts of every planned cell (first copy of each shard index), and the second copies as ignored."""
    found: dict[str, dict[int, StoredPart]] = {}
    ignored = []
    for part in parts:
        key = part.file.spec.key()
        if key not in planned_keys:
            continue  # another plan's part, or none's (noted once by _note_unplanned)
        if part.index in found.setdefault(key, {}):
            ignored.append(f"{part.file.path} (part {part.label} is also in {found[key][part.index].path})")
        else:
            found[key][part.index] = part
    return {key: list(by_index.values()) for key, by_index in found.items()}, ignored


def missing_shards(position_slugs: list[tuple[int, str]], count: int | None) -> list[int]:
    """Return the shard indices (of ``count``) that own at least one missing cell position."""
    if not count:
        return []
    return sorted({pos % count for pos, _ in position_slugs})


def merge_results(dirs: Sequence[str | Path], out: str | Path, *, allow_partial: bool = False,
                  command_line: Sequence[str] | None = None) -> MergeReport:
    """Combine shard results directories into ``out``; refuse different models or plans, report missing cells.

    Shards of a benchmark spec (``run SPEC --shard i/n``: several models and plans in each directory) are merged
    plan by plan; they must come from the same spec file (same SHA-256).
    """
    if not dirs:
        raise UserError("merge needs at least one results directory.")
    out = Path(out)
    stores = []
    for d in dirs:
        if Path(d).resolve() == out.resolve():
            raise UserError(f"--out {out} is also one of the directories to merge; choose a new directory.")
        stores.append(ResultsStore(d))
    groups = _spec_groups(stores) if _spec_of(stores[0]) else [_one_plan(stores)]
    shard_by = _check_one_split(stores)
    report = MergeReport(out, ",".join(plan["hash"] for plan, _ in groups), shard_by)
    absent = missing_spec_shards(stores) if _spec_of(stores[0]) else []
    if absent and not allow_partial:
        raise UserError(f"No directory holds shard(s) {', '.join(absent)} of the spec run: a call whose cells "
                        f"all fall in those shards would be missed unnoticed; merge every shard's directory, or "
                        f"pass --allow-partial to merge what exists.")
    report.ignored += [f"shard {label} (no directory given)" for label in absent]
    report.shards = [f"{store.root} ({_shard_label(_plans(store))})" for store in stores]
    files = _ShardFiles.of(stores)
    if shard_by == "samples":
        count: int | None = _sample_count(stores)
    else:
        counts = _shard_counts(stores)
        count = next(iter(counts)) if len(counts) == 1 else None
    gathered = [_gather(files, plan, shard_by, count, report, allow_partial) for plan, _ in groups]
    _note_unplanned(files, {key for plan, _ in groups for key, _ in _planned(plan)}, report)
    planned_total = sum(len(plan["cells"]) for plan, _ in groups)
    if report.missing and not allow_partial:
        names = ", ".join(m["slug"] for m in report.missing[:8]) + (" ..." if len(report.missing) > 8 else "")
        shards = sorted({m["shard"] for m in report.missing if m["shard"]})
        where = f" (from shard(s) {', '.join(shards)})" if shards else ""
        raise UserError(f"{len(report.missing)} of {planned_total} planned cell(s) are in none of the shards"
                        f"{where}: {names}; run the missing shards, or pass --allow-partial to merge what exists.")
    missing_keys = {m["key"] for m in report.missing}
    assembled = [{key: assemble_cell(parts[key], plan) for key, _ in _planned(plan)  # checked before writing
                  if key not in found and key in parts and key not in missing_keys}
                 for (plan, _), (found, parts) in zip(groups, gathered, strict=True)]
    target = ResultsStore(out, create=True, allow_mixed=len(groups) > 1)
    for _, identity in groups:
        target.check_compatible(identity)
    for store in stores:
        for run in store.runs():
            target.import_run(run)
    for (plan, identity), (found, parts), built in zip(groups, gathered, assembled, strict=True):
        for key, _slug in _planned(plan):
            cell = found.get(key)
            if cell is not None:
                atomic_write_bytes(target.cell_path(cell.spec), Path(cell.path).read_bytes())
                report.copied.append(cell.spec.slug())
            elif key in built:
                spec = parts[key][0].file.spec
                records, provenance, extra = built[key]
                target.write_cell(spec, records, provenance, extra=extra)
                report.copied.append(spec.slug())
        complete = not any(m["key"] in {k for k, _ in _planned(plan)} for m in report.missing)
        merge_record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command_line": list(command_line if command_line is not None else sys.argv),
            "versions": package_versions(),
            "merge": {"sources": [str(s.root) for s in stores], "complete": complete,
                      "missing": [m for m in report.missing if m["plan"] == plan["hash"]],
                      "copied": len(report.copied)},
            "plan": {**plan, "shard": None, "shard_by": None} if complete
            else {**plan, "shard": "partial-merge", "shard_by": shard_by},
            **({"spec": _spec_of(stores[0])} if len(groups) > 1 or _spec_of(stores[0]) else {}),
        }
        target.start_run(merge_record, model=identity)
    from robustbench_rpc.results.segmentation import copy_predictions

    merged = {key for (found, _), built in zip(gathered, assembled, strict=True) for key in (*found, *built)}
    copy_predictions([s.root for s in stores], target.root, merged)  # the saved segmentation masks
    return report


def _note_unplanned(files: _ShardFiles, planned_keys: set[str], report: MergeReport) -> None:
    """Note the cells and parts that belong to none of the merged plans (they are not copied)."""
    for path, spec in [*((c.path, c.spec) for c in files.cells), *((p.file.path, p.file.spec) for p in files.parts)]:
        if spec.key() not in planned_keys:
            report.ignored.append(f"{path} (not in the plan)")


def _planned(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["key"], c["slug"]) for c in plan["cells"]]


def _one_plan(stores: Sequence[ResultsStore]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan and model of shards of one command: one model and one plan in every directory, the same in all."""
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
    return plan, identity


def _spec_of(store: ResultsStore) -> dict[str, Any] | None:
    """The benchmark spec (path, SHA-256, name) that the runs of ``store`` name, if any."""
    specs = [run["spec"] for run in store.runs() if isinstance(run.get("spec"), dict)]
    return specs[0] if specs else None


def _spec_groups(stores: Sequence[ResultsStore]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every plan of the shards of one benchmark spec, with its model, in the order the runs were made."""
    first = _spec_of(stores[0])
    assert first is not None
    groups: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for store in stores:
        spec = _spec_of(store)
        if spec is None or spec.get("sha256") != first.get("sha256"):
            other = "no spec" if spec is None else f"spec {spec.get('path')} (sha256 {str(spec.get('sha256'))[:12]})"
            raise UserError(f"Shards {stores[0].root} and {store.root} come from different runs: "
                            f"{first.get('path')} (sha256 {str(first.get('sha256'))[:12]}) vs {other}; merge the "
                            f"shards of one spec file.")
        for run in store.runs():
            plan = run.get("plan")
            if isinstance(plan, dict) and isinstance(run.get("model"), dict):
                groups.setdefault(plan["hash"], (plan, run["model"]))
    if not groups:
        raise UserError(f"Results directory {stores[0].root} records no plan; it cannot be merged safely.")
    return list(groups.values())


def missing_spec_shards(stores: Sequence[ResultsStore]) -> list[str]:
    """The shards ``i/n`` of a spec's split that none of ``stores`` ran (their calls' plans cannot be known)."""
    seen = {str(p.get("shard")) for store in stores for p in _plans(store) if p.get("shard")}
    counts = _shard_counts(stores)
    if len(counts) != 1:
        return []
    n = next(iter(counts))
    return [f"{i}/{n}" for i in range(n) if f"{i}/{n}" not in seen]


def _gather(files: _ShardFiles, plan: dict[str, Any], shard_by: str, count: int | None, report: MergeReport,
            allow_partial: bool) -> tuple[dict[str, Any], dict[str, list[StoredPart]]]:
    """Find the finished cells (and, for sample shards, the parts) of one plan; note its missing cells.

    ``count`` is n of the shards' i/n split (None when they do not share one).
    """
    planned = _planned(plan)
    planned_keys = {k for k, _ in planned}
    found: dict[str, Any] = {}
    for cell in files.cells:
        key = cell.spec.key()
        if key in planned_keys:
            found.setdefault(key, cell)
    before = len(report.missing)
    if shard_by == "samples":
        assert count is not None
        parts, ignored = _collect_parts(files.parts, planned_keys)
        report.ignored += ignored
        _missing_parts(planned, found, parts, count, report, allow_partial)
    else:
        parts = {}
        for position, (key, slug) in enumerate(planned):
            if key not in found:
                report.missing.append({"key": key, "slug": slug, "position": position,
                                       "shard": f"{position % count}/{count}" if count else None})
    for entry in report.missing[before:]:
        entry["plan"] = plan["hash"]
    return found, parts


def _missing_parts(planned: list[tuple[str, str]], found: dict[str, Any], parts: dict[str, list[StoredPart]],
                   count: int, report: MergeReport, allow_partial: bool) -> None:
    """Note each planned cell that is neither finished nor complete in parts, with the missing shard indices."""
    for position, (key, slug) in enumerate(planned):
        if key in found:
            continue
        absent = missing_indices(parts.get(key, []), count)
        if absent:
            report.missing.append({"key": key, "slug": slug, "position": position, "missing_parts": absent,
                                   "shard": ", ".join(f"{i}/{count}" for i in absent)})
    if report.missing and not allow_partial:
        shards = sorted({i for m in report.missing for i in m["missing_parts"]})
        names = ", ".join(f"{m['slug']} (no part {m['shard']})" for m in report.missing[:6])
        more = " ..." if len(report.missing) > 6 else ""
        raise UserError(f"{len(report.missing)} of {len(planned)} planned cell(s) lack the parts of sample shard(s) "
                        f"{', '.join(f'{i}/{count}' for i in shards)}: {names}{more}; run the missing shards, or "
                        "pass --allow-partial to merge the complete cells and leave the others out.")
