"""Spreading a run: torch.distributed ranks (launched by torchrun) and ``--shard i/n`` for job arrays.

torchrun: every rank builds the same plan, the ranks check that their plans agree, each rank evaluates the
canonical batches ``b`` of every cell with ``b % world_size == rank`` (batch ``b`` holds dataset positions
``[b * batch_size, (b + 1) * batch_size)``, exactly as in a single-process run, so seeds keyed on batches and
batch-dependent numerics are unchanged), the per-batch records are gathered to rank 0, which sorts them and
writes the cell. Other ranks write nothing. Results equal a single-process run with the same ``--batch-size``.

Shards (job arrays): ``--shard i/n`` (0-based, ``0 <= i < n``) evaluates a deterministic part of the plan into
its own results directory, and ``robustbench-rpc merge`` combines the shard directories. ``--shard-by`` says how:

- ``cells`` (default): the shard keeps the cells at positions ``p`` of the plan with ``p % n == i`` and writes them
  as finished cells.
- ``samples``: the shard runs every cell of the plan, but only on the canonical batches ``b`` with ``b % n == i``
  (the split torchrun uses), and writes each cell's share as a *part* (``parts/`` of the results directory, never
  read as a result). ``merge`` checks that all ``n`` parts of a cell are there and assembles the records, sorted by
  dataset index, into the cell a single-process run with the same ``--batch-size`` writes; seeds are keyed on the
  batch start, so the records are the same. Under torchrun a sample shard spreads its batches over its ranks:
  effective rank ``i + n * rank`` of world ``n * world_size`` (:func:`sample_shard_rank`), which keeps
  ``b % n == i`` whatever the number of ranks of each shard.

The split mode is recorded with the plan (``shard_by``); merging shards of different modes is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from robustbench_rpc.data.batches import canonical_batches as canonical_batches  # the shared numbering
from robustbench_rpc.errors import UserError, did_you_mean

T = TypeVar("T")

_SHARD = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")
#: How ``--shard i/n`` splits a plan: by cells of the plan, or by canonical batches of samples of every cell.
SHARD_MODES = ("cells", "samples")


#: Set once this process has created a process group (the CLI then ends the process without C++ teardown).
_CREATED_GROUP = False


def created_group() -> bool:
    """True when this process created a torch.distributed process group (left or not)."""
    return _CREATED_GROUP


class CollectiveError(UserError):
    """A UserError that every rank raises at the same point of the run (so the ranks can still meet at a barrier)."""


@dataclass(frozen=True)
class DistContext:
    """The process's place in a distributed run (world size 1 and rank 0 when not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        """True when several processes share the work."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes results (rank 0)."""
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """Return (world size, rank, local rank) from the torchrun environment (1, 0, 0 when absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them).") from None
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"Distributed environment is inconsistent: RANK={rank}, WORLD_SIZE={world}.")
    return world, rank, local


def init_distributed(device_name: str | None, timeout_s: float = 1800.0) -> tuple[DistContext, str | None]:
    """Join the torchrun process group when WORLD_SIZE > 1; return the context and the device to use.

    The backend is NCCL when the run uses CUDA (device ``cuda:LOCAL_RANK`` unless a device index is given) and
    gloo on the CPU. Without torchrun this returns a single-process context and the device unchanged.
    """
    import torch.distributed as dist

    world, rank, local = env_world()
    if world == 1:
        return DistContext(), device_name
    use_cuda = torch.cuda.is_available() and (device_name in (None, "", "auto") or
                                              str(device_name).startswith("cuda"))
    if use_cuda:
        device_name = device_name if str(device_name).startswith("cuda:") else f"cuda:{local}"
        torch.cuda.set_device(torch.device(device_name))
    else:
        device_name = "cpu"
    backend = os.environ.get("ROBUSTBENCH_RPC_BACKEND") or ("nccl" if use_cuda else "gloo")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        owns = True
        global _CREATED_GROUP
        _CREATED_GROUP = True
    return DistContext(dist.get_world_size(), dist.get_rank(), local, backend, owns), device_name


def shutdown(ctx: DistContext, finished: bool = True) -> None:
    """Leave the process group if this module created it.

    After a finished run, or an error that every rank raised at the same point (:class:`CollectiveError`), the ranks
    first meet at a barrier, so that no rank tears down its connections while a peer still uses them (gloo's
    threads otherwise abort the process at exit now and then). After any other failure there is no barrier: a
    peer may be gone, and the error is reported at once. A barrier that fails (rank 0 failed while writing, after
    the last collective) is passed over: that rank reports the error, and torchrun stops the others.
    """
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        if finished:
            with contextlib.suppress(Exception):  # a peer that failed after the last collective reports its error
                dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device_name: str | None) -> Iterator[DistContext]:
    """Join the torchrun process group once for a sequence of runs (each run finds the group and leaves it alone).

    A group created, destroyed and created again on torchrun's store hangs in its second run, so a command that
    makes several runs (a benchmark spec, an audit) holds the group around all of them.
    """
    ctx, _ = init_distributed(device_name)
    try:
        yield ctx
    except BaseException as exc:
        shutdown(ctx, finished=isinstance(exc, CollectiveError))
        raise
    shutdown(ctx)


def all_gather(ctx: DistContext, obj: T) -> list[T]:
    """Return every rank's ``obj`` (rank order); ``[obj]`` when not distributed."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(ctx: DistContext, obj: T) -> list[T] | None:
    """Return every rank's ``obj`` on rank 0 (rank order) and None elsewhere; ``[obj]`` when not distributed."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def collective_step(ctx: DistContext, step: Callable[[], T], what: str) -> T:
    """Run ``step`` on every rank; if it raises a UserError on any rank, raise it on every rank.

    Every rank reaches the same collective whatever happens, so no rank waits forever for a rank that failed.
    """
    try:
        value, error = step(), None
    except UserError as exc:
        value, error = None, str(exc)
    if not ctx.enabled:
        if error is not None:
            raise UserError(error)
        return value  # type: ignore[return-value]
    errors = all_gather(ctx, error)
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if failed:
        rank, message = failed[0]
        raise CollectiveError(f"{message} (rank {rank} of {ctx.world_size}, while {what})")
    return value  # type: ignore[return-value]


def main_step(ctx: DistContext, step: Callable[[], T], what: str) -> T:
    """Run ``step`` on rank 0 only and hand its value to every rank; a UserError there is raised everywhere."""
    if not ctx.enabled:
        return step()
    import torch.distributed as dist

    payload: list[Any] = [None]
    if ctx.is_main:
        try:
            payload = [("ok", step())]
        except UserError as exc:
            payload = [("error", str(exc))]
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise CollectiveError(value if ctx.is_main else f"{value} (on rank 0, while {what})")
    return value


def check_plan_agreement(ctx: DistContext, fingerprint: str, described: dict[str, Any]) -> None:
    """Raise a UserError on every rank when the ranks were launched with different plans."""
    gathered = all_gather(ctx, (fingerprint, described))
    prints = {fp for fp, _ in gathered}
    if len(prints) > 1:
        if len({json.dumps(d, sort_keys=True, default=str) for _, d in gathered}) == 1:
            lines = ("their settings agree but their cells differ (model, checkpoint, datasets, --limit, --subset, "
                     "corruptions or attack options): " +
                     "; ".join(f"rank {r}: plan {fp[:12]}" for r, (fp, _) in enumerate(gathered)))
        else:
            lines = "; ".join(f"rank {r}: {json.dumps(d, sort_keys=True, default=str)}"
                              for r, (_, d) in enumerate(gathered))
        raise CollectiveError("The ranks of this distributed run disagree on the plan (launch every rank with the "
                              f"same arguments): {lines}.")


def plan_fingerprint(cell_keys: Sequence[str], **settings: Any) -> str:
    """Return a SHA-256 of the plan: the ordered cell keys (model identity included) and result-changing settings."""
    blob = json.dumps({"cells": list(cell_keys), **settings}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``i/n`` (0-based shard i of n); None for no sharding; bad specs are a UserError."""
    if text is None or str(text).strip() == "":
        return None
    match = _SHARD.match(str(text))
    if not match:
        raise UserError(f"--shard {text!r} is not of the form i/n (0-based shard i of n, e.g. 0/4).")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise UserError(f"--shard {text!r}: the number of shards n must be >= 1.")
    if not 0 <= index < count:
        raise UserError(f"--shard {text!r}: the shard index i must be in 0..{count - 1} (shards are 0-based).")
    return index, count


def parse_shard_by(mode: str | None, shard: str | None = None) -> str:
    """Check a ``--shard-by`` value (cells or samples; None means cells) and return it."""
    text = "cells" if mode is None else str(mode).strip().lower()
    if text not in SHARD_MODES:
        raise UserError(f"--shard-by {mode!r} is not a way to split a plan; expected cells or samples"
                        f"{did_you_mean(text, SHARD_MODES)}.")
    if text == "samples" and (shard is None or str(shard).strip() == ""):
        raise UserError("--shard-by samples needs --shard i/n (which share of the samples to evaluate).")
    return text


def sample_shard_rank(index: int, count: int, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """Return (effective rank, effective world size) of torchrun ``rank`` in sample shard ``index`` of ``count``.

    Batch ``b`` goes to the shard ``b % count`` and, inside it, to rank ``(b // count) % world_size``.
    """
    return index + count * rank, count * world_size


def shard_of(position: int, count: int) -> int:
    """Return the shard that owns the cell at ``position`` of the plan."""
    return position % count
