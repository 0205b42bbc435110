"""Assembling the parts of ``--shard i/n --shard-by samples`` runs into finished cells (for ``merge``).

A sample shard ``i`` of ``n`` writes, for every cell of the plan, a part file (``parts/`` of its results directory,
see :mod:`robustbench_rpc.results.store`) with the records of the canonical batches ``b % n == i`` and ``part``
metadata: index, count, plan hash, batch size, dataset size (``total``), the batch numbers it holds, their load
accounting and the files missing from the dataset's list. :func:`assemble_cell` checks that the ``n`` parts of a
cell fit together (same plan, batch size and data; every canonical batch exactly once; no sample twice) and returns
the records sorted by dataset index with one combined load report: the cell a single-process run with the same
``--batch-size`` writes.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.results.schema import CONTENT_KEYS
from robustbench_rpc.results.store import CellFile, ResultsStore

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Keys of a part's ``extra`` that describe the part alone and are recomputed for the assembled cell.
PART_ONLY_EXTRA = ("seconds", "load_report", "world_size")


@dataclass(frozen=True)
class StoredPart:
    """A verified part file and the results directory it lies in."""

    store: ResultsStore
    file: CellFile

    @property
    def meta(self) -> dict[str, Any]:
        """The part's ``part`` metadata (index, count, plan hash, batch size, batches, ...)."""
        return self.file.meta["part"]

    @property
    def index(self) -> int:
        """The shard index i of this part."""
        return int(self.meta["index"])

    @property
    def count(self) -> int:
        """The number of shards n."""
        return int(self.meta["count"])

    @property
    def label(self) -> str:
        """``i/n``."""
        return f"{self.index}/{self.count}"

    @property
    def path(self) -> Path:
        """The part file."""
        return self.file.path


def missing_indices(parts: Sequence[StoredPart], count: int) -> list[int]:
    """Return the shard indices in ``0..count-1`` that have no part among ``parts``."""
    present = {p.index for p in parts}
    return [i for i in range(count) if i not in present]


def expected_batches(total: int, batch_size: int, index: int, count: int) -> list[int]:
    """Return the canonical batch numbers of sample shard ``index`` of ``count`` for a dataset of ``total``."""
    return [b for b in range(-(-total // batch_size)) if b % count == index]


def _content(fingerprint: dict[str, Any]) -> str:
    return json.dumps({k: fingerprint.get(k) for k in CONTENT_KEYS if k in fingerprint}, sort_keys=True)


def _check_parts(slug: str, parts: Sequence[StoredPart], plan: dict[str, Any]) -> None:
    """Raise a UserError when the parts of one cell do not fit together or do not belong to ``plan``."""
    first = parts[0]
    for part in parts:
        meta = part.meta
        if meta.get("plan_hash") != plan["hash"]:
            raise UserError(f"Part {part.label} of cell {slug} ({part.path}) was computed for plan "
                            f"{str(meta.get('plan_hash'))[:12]}, not {plan['hash'][:12]}; re-run that shard.")
        if int(meta.get("batch_size", -1)) != int(plan["batch_size"]):
            raise UserError(f"Part {part.label} of cell {slug} ({part.path}) used --batch-size "
                            f"{meta.get('batch_size')}, not {plan['batch_size']}; run every shard with the same "
                            "--batch-size.")
        if int(meta["total"]) != int(first.meta["total"]):
            raise UserError(f"Parts {first.label} and {part.label} of cell {slug} saw datasets of different sizes "
                            f"({first.meta['total']} and {meta['total']} samples); run every shard on the same data.")
        mine = _content(part.file.meta.get("extra", {}).get("dataset_fingerprint") or {})
        theirs = _content(first.file.meta.get("extra", {}).get("dataset_fingerprint") or {})
        if mine != theirs:
            raise UserError(f"Parts {first.label} ({first.path}) and {part.label} ({part.path}) of cell {slug} were "
                            "computed on different data; run every shard on the same data.")
        want = expected_batches(int(meta["total"]), int(meta["batch_size"]), part.index, part.count)
        if [int(b) for b in meta.get("batches", [])] != want:
            raise UserError(f"Part {part.label} of cell {slug} ({part.path}) holds batches {meta.get('batches')} "
                            f"where sample shard {part.label} should hold {want}; re-run that shard.")


def combine_load_reports(parts: Sequence[StoredPart]) -> dict[str, Any]:
    """Return the load report of the whole cell: the dataset's missing files, then each batch's, in batch order."""
    skipped = [tuple(x) for x in parts[0].meta.get("missing", [])]
    converted: Counter = Counter()
    loads = sorted((load for p in parts for load in p.meta.get("batch_loads", [])), key=lambda x: int(x["number"]))
    for load in loads:
        skipped.extend(tuple(x) for x in load.get("skipped", []))
        converted.update(mode for _, mode in load.get("converted", []))
    reasons = Counter(str(reason).split(" (")[0] for _, reason in skipped)
    return {
        "loaded": sum(int(p.meta.get("loaded", 0)) for p in parts),
        "skipped": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped_files": [{"sample_id": s, "reason": r} for s, r in skipped],
        "converted": dict(sorted(converted.items())),
    }


def assemble_cell(parts: Sequence[StoredPart], plan: dict[str, Any]
                  ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Return (records sorted by dataset index, provenance, extra) of the cell made of its ``n`` parts."""
    import pandas as pd

    parts = sorted(parts, key=lambda p: p.index)
    spec = parts[0].file.spec
    slug = spec.slug()
    count = parts[0].count
    if [p.index for p in parts] != list(range(count)) or any(p.count != count for p in parts):
        labels = ", ".join(p.label for p in parts)
        raise UserError(f"Cell {slug} needs exactly the parts 0/{count}..{count - 1}/{count}, got {labels}.")
    _check_parts(slug, parts, plan)
    frames = [frame for p in parts if not (frame := p.store.read_part_records(p.file)).empty]
    if not frames:
        raise UserError(f"Every part of cell {slug} is empty; there is nothing to merge.")
    records = pd.concat(frames, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    twice = records["index"][records["index"].duplicated()].tolist()
    if twice:
        raise UserError(f"The parts of cell {slug} hold dataset position(s) {twice[:5]} more than once; re-run the "
                        "shards into new directories.")
    first = parts[0].file.meta
    extra = {k: v for k, v in (first.get("extra") or {}).items() if k not in PART_ONLY_EXTRA}
    extra["seconds"] = round(sum(float((p.file.meta.get("extra") or {}).get("seconds", 0.0)) for p in parts), 3)
    extra["load_report"] = combine_load_reports(parts)
    extra["merged_parts"] = [{"shard": p.label, "run_id": p.file.meta.get("run_id"), "source": str(p.store.root),
                              "rows": p.file.num_rows} for p in parts]
    return records, first.get("provenance") or {}, extra
