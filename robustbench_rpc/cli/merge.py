"""``robustbench-rpc merge``: combine the results directories of ``--shard i/n`` runs into one directory.

Cell shards are copied; the parts written by ``--shard-by samples`` shards are assembled into finished cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def merge_command(
    dirs: Annotated[list[Path], typer.Argument(help="Shard results directories (from --shard i/n runs, split by "
                                               "cells or by samples).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged results directory (created).")],
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Merge even when planned cells are "
                                                "missing or lack parts of some sample shards: only complete "
                                                "cells are written and the merge is recorded as partial.")] = False,
) -> None:
    """Merge shard results: same model, checkpoint, plan and split required; missing cells or parts are reported."""
    from robustbench_rpc.results.merge import merge_results

    report = merge_results(dirs, out, allow_partial=allow_partial)
    for shard in report.shards:
        typer.echo(f"shard: {shard}")
    for entry in report.ignored:
        typer.echo(f"ignored: {entry}")
    for cell in report.missing:
        if cell.get("missing_parts") is not None:  # sample shards: the cell lacks the parts of these shards
            typer.echo(f"incomplete, left out: {cell['slug']} (no part from shard(s) {cell['shard']})")
            continue
        where = f" (shard {cell['shard']})" if cell["shard"] else ""
        typer.echo(f"missing: {cell['slug']}{where}")
    typer.echo(str(report))
