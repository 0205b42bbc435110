"""Selecting samples: named subsets (``robustbench-5k``) and ``--limit N``, with missing files reported."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from robustbench_rpc.data.base import SampleRef
from robustbench_rpc.data.classes import subset_ids
from robustbench_rpc.errors import UserError


def check_limit(limit: int | None) -> int | None:
    """Return ``limit`` after checking it is None or a positive integer."""
    if limit is None:
        return None
    if int(limit) <= 0:
        raise UserError(f"--limit {limit} is not a positive number of images.")
    return int(limit)


def select_samples(
    samples: Sequence[SampleRef], subset: str | None = None, limit: int | None = None
) -> tuple[list[SampleRef], list[tuple[str, str]]]:
    """Return (selected samples, missing) for a named subset and/or a limit.

    With a subset, samples are matched by file name (ImageNet validation names are unique), taken in the
    subset's sorted order, and subset entries absent from the dataset are returned as (sample_id, "missing
    file"); ``limit`` then caps the number of subset entries considered. Without a subset, the first ``limit``
    samples in dataset order are kept.
    """
    limit = check_limit(limit)
    if subset is None:
        return list(samples if limit is None else samples[:limit]), []
    wanted = sorted(subset_ids(subset))
    by_name: dict[str, SampleRef] = {}
    for ref in samples:
        by_name.setdefault(PurePosixPath(ref.sample_id).name, ref)
    selected: list[SampleRef] = []
    missing: list[tuple[str, str]] = []
    for entry in wanted if limit is None else wanted[:limit]:
        ref = by_name.get(PurePosixPath(entry).name)
        if ref is None:
            missing.append((entry, "missing file"))
        else:
            selected.append(ref)
    if not selected:
        raise UserError(
            f"none of the {len(wanted)} images of subset {subset!r} was found; expected files named like "
            f"{wanted[0]!r} under the dataset root."
        )
    return selected, missing
