"""Canonical batch numbering, the one definition every batch source and the engine's runner share.

Batch ``b`` of a dataset of ``total`` samples holds the positions ``[b * batch_size, (b + 1) * batch_size)``; a
rank of ``world_size`` evaluates the batches with ``b % world_size == rank``. It lives in ``data`` (the lower layer)
so that sources defined here (segmentation) and in the engine number their batches the same way.
"""

from __future__ import annotations


def canonical_batches(total: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, range]]:
    """Return ``(batch number, dataset positions)`` of the canonical batches this rank evaluates."""
    out = []
    for number, start in enumerate(range(0, total, batch_size)):
        if number % world_size == rank:
            out.append((number, range(start, min(start + batch_size, total))))
    return out
