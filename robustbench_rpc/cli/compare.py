"""The ``compare``, ``plot`` and ``report`` commands over results directories (registered by cli/app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustbench_rpc.errors import UserError

COMPARE_FORMATS = ("table", "csv", "md", "json", "latex", "parquet")
#: Formats that get the machine-readable comparison (numbers in separate columns) rather than the display one.
NUMERIC_FORMATS = ("csv", "json", "parquet")
REPORT_FORMATS = ("md", "robustbench")

Results = Annotated[
    list[Path],
    typer.Argument(help="Results directories (one per model, or one holding several models)."),
]
Baseline = Annotated[
    str | None,
    typer.Option(
        "--baseline", "-b", help="Model label (or a unique prefix) to compare against; default: first."
    ),
]
Resamples = Annotated[
    int, typer.Option("--resamples", help="Paired bootstrap resamples for the confidence intervals.")
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")]


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    from robustbench_rpc.errors import did_you_mean

    if value not in choices:
        hint = did_you_mean(value, choices)
        raise UserError(f"Unknown {what} {value!r}; expected one of {', '.join(choices)}{hint}.")


def compare_command(
    results: Results,
    baseline: Baseline = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help="Output format: " + ", ".join(COMPARE_FORMATS) + ".")
    ] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (atomically) instead of stdout.")
    ] = None,
    resamples: Resamples = 2000,
    seed: Seed = 0,
) -> None:
    """Compare models side by side on every shared cell: values, differences, bootstrap CIs, McNemar p."""
    from robustbench_rpc.reporting.comparison import comparison_display
    from robustbench_rpc.reporting.exports import check_output_path, export, print_table
    from robustbench_rpc.results.compare import compare

    _check_choice(format, COMPARE_FORMATS, "format")
    if out is None and format == "parquet":
        raise UserError("Format parquet is binary; give an output file with --out.")
    if out is not None:
        check_output_path(out)
    frame = compare(results, baseline=baseline, resamples=resamples, seed=seed)
    shown = frame if format in NUMERIC_FORMATS else comparison_display(frame)
    title = f"Comparison against {frame['baseline'].iloc[0]} (model - baseline, points)"
    if out is not None:
        export(shown, format, out, title=title)
        typer.echo(f"Wrote {len(frame)} comparisons to {out}.", err=True)
    elif format == "table":
        print_table(shown, title=title)  # print_table escapes rich markup such as "[steps=10]"
    else:
        typer.echo(export(shown, format), nl=False)


def plot_command(
    results: Results,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the images (default: RESULTS/plots).")
    ] = None,
    formats: Annotated[
        str, typer.Option("--formats", help="Comma-separated image formats: png, svg, pdf.")
    ] = "png,svg",
) -> None:
    """Plot robust accuracy against budget per attack, accuracy per corruption and against severity."""
    from robustbench_rpc.reporting.plots import check_formats, write_plots
    from robustbench_rpc.results.store import open_stores
    from robustbench_rpc.results.tidy import tidy

    image_formats = check_formats(formats.split(","))
    stores = open_stores(results)
    out_dir = out if out is not None else stores[0].root / "plots"
    written = write_plots(tidy(stores), out_dir, image_formats)
    for plot in written:
        typer.echo(" ".join(str(p) for p in plot.paths))
    typer.echo(f"Wrote {len(written)} plots to {out_dir}.", err=True)


def report_command(
    results: Results,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Report file (Markdown; JSON with --format robustbench)."),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="md (report with tables, comparisons, plots) or robustbench (JSON)."
        ),
    ] = "md",
    baseline: Baseline = None,
    resamples: Resamples = 2000,
    seed: Seed = 0,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write and link the plots.")] = True,
) -> None:
    """Write a Markdown report (provenance, tables, comparisons, plots) or leaderboard-style JSON entries."""
    from robustbench_rpc.reports import write_report, write_robustbench

    _check_choice(format, REPORT_FORMATS, "report format")
    if format == "robustbench":
        entries = write_robustbench(results, out)
        typer.echo(f"Wrote {len(entries)} leaderboard entries to {out}.", err=True)
        return
    write_report(results, out, baseline=baseline, resamples=resamples, seed=seed, plots=plots)
    typer.echo(f"Wrote the report to {out}.", err=True)
