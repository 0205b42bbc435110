"""``robustbench-rpc merge``: combine the results directories of ``--shard i/n`` runs into one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def merge_command(
    dirs: Annotated[list[Path], typer.Argument(help="Shard results directories (from --shard i/n runs).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged results directory (created).")],
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Merge even when planned cells are "
                                                "missing (the merge is recorded as partial).")] = False,
) -> None:
    """Merge shard results: same model, checkpoint and plan required; missing cells are reported."""
    from robustbench_rpc.results.merge import merge_results

    report = merge_results(dirs, out, allow_partial=allow_partial)
    for shard in report.shards:
        typer.echo(f"shard: {shard}")
    for path in report.ignored:
        typer.echo(f"ignored (not in the plan): {path}")
    for cell in report.missing:
        where = f" (shard {cell['shard']})" if cell["shard"] else ""
        typer.echo(f"missing: {cell['slug']}{where}")
    typer.echo(str(report))
