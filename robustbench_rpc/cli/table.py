"""The ``table`` command: turn one or several results directories into a table (paper, corruptions, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustbench_rpc.reporting.exports import FORMATS as FORMAT_NAMES
from robustbench_rpc.reporting.views import VIEW_NAMES


def table_command(
    results: Annotated[
        list[Path],
        typer.Argument(help="Results directories (one or several; their models become columns or rows)."),
    ],
    view: Annotated[str, typer.Option("--view", help="Which table: " + ", ".join(VIEW_NAMES) + ".")] = "paper",
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="Output format: " + ", ".join(FORMAT_NAMES) + " (default: from the "
                     "--out file's extension, else table)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (atomically) instead of stdout.")
    ] = None,
) -> None:
    """Print or write a table of results: the paper's main table, corruptions, severities, attacks, tidy rows, or
    the audit's verdicts."""
    from robustbench_rpc.reporting.exports import check_format, check_output_path, export, print_table
    from robustbench_rpc.reporting.views import build_view, check_view
    from robustbench_rpc.results.tidy import tidy

    check_view(view)
    if format is None:
        suffixes = {".csv": "csv", ".md": "md", ".tex": "latex", ".json": "json", ".parquet": "parquet"}
        format = suffixes.get(out.suffix.lower(), "table") if out is not None else "table"
    check_format(format)
    if out is None and format == "parquet":
        from robustbench_rpc.errors import UserError

        raise UserError("Format parquet is binary; give an output file with --out.")
    if out is not None:
        check_output_path(out)
    if view == "audit":
        from robustbench_rpc.reporting.views import audit_view
        from robustbench_rpc.results.verdicts import audit_frame

        frame = audit_view(audit_frame(results))
        notes: list[str] = []
    else:
        from robustbench_rpc.reporting.paper import threat_model_notes

        tidy_frame = tidy(results)
        frame = build_view(tidy_frame, view)
        shows_attacks = view in ("attacks", "paper-attacks", "segmentation") or (
            view == "paper" and any("robust" in str(c) for c in frame.columns))
        notes = threat_model_notes(tidy_frame) if shows_attacks else []
    if out is not None:
        export(frame, format, out, title=view, notes=notes)
        typer.echo(f"Wrote the {view} view ({len(frame)} rows) to {out}.", err=True)
    elif format == "table":
        print_table(frame, title=f"{view} view")
        for note in notes:
            typer.echo(note)
    else:
        typer.echo(export(frame, format, notes=notes), nl=False)
