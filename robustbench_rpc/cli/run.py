"""``robustbench-rpc run SPEC --out DIR``: run a benchmark spec (TOML) into one results directory, or plan it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def run_command(
    spec: Annotated[Path, typer.Argument(help="Benchmark spec (TOML): models and grids, suites, attacks, seeds, "
                                         "settings; see specs/ in the repository.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results directory (created; re-runs resume). "
                                             "Not needed with --dry-run.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (calls, cells, images) with a time "
                                          "estimated from a short throughput probe; run nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute cells that are already finished.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="Run shard i of n (0-based, e.g. 0/4) of every "
                                              "call into this shard's own --out; combine the shards with "
                                              "`robustbench-rpc merge`, then `run SPEC --out MERGED` writes the "
                                              "tables (nothing is recomputed).")] = None,
    shard_by: Annotated[str, typer.Option("--shard-by", help="How --shard splits each call: cells (default) or "
                                          "samples (as evaluate --shard-by).")] = "cells",
) -> None:
    """Run every cell of a benchmark spec once into one results directory, then write its tables, plots and report."""
    from robustbench_rpc.errors import UserError
    from robustbench_rpc.spec import load_spec

    loaded = load_spec(spec)
    if dry_run:
        from robustbench_rpc.spec.dry_run import dry_run as plan
        from robustbench_rpc.spec.dry_run import format_plan

        typer.echo(f"Plan of {spec} ({loaded.name}, sha256 {loaded.sha256[:12]}):")
        typer.echo(format_plan(plan(loaded)))
        return
    if out is None:
        raise UserError("run needs --out DIR (the results directory), or --dry-run to only print the plan.")
    from robustbench_rpc.spec.run import run_spec

    run_spec(loaded, out, force=force, shard=shard, shard_by=shard_by, progress=not quiet,
             command_line=list(sys.argv), log=lambda line: typer.echo(line))
