"""Reports of results directories in one call: open the stores, read their frames, render and write them.

The glue between the two rooms below it: :mod:`robustbench_rpc.results` opens the directories and reads the tidy
table, the models' provenance and the comparison frame; :mod:`robustbench_rpc.reporting` turns those into text,
tables and plots without opening a store. The CLI's ``report`` command and the demo call these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from robustbench_rpc.reporting.exports import check_output_path
from robustbench_rpc.reporting.report import (
    comparison_markdown,
    render_report,
    robustbench_entries,
    write_report_plots,
    write_text,
)
from robustbench_rpc.results.compare import report_comparison
from robustbench_rpc.results.provenance import model_provenance
from robustbench_rpc.results.store import ResultsStore, open_stores
from robustbench_rpc.results.tidy import tidy
from robustbench_rpc.results.verdicts import audit_frame

Sources = ResultsStore | str | Path | Iterable[ResultsStore | str | Path]


def write_report(
    sources: Sources,
    out: Path,
    baseline: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
    plots: bool = True,
) -> Path:
    """Write the Markdown report to ``out`` (atomically), plots into ``<out stem>_plots/``; return ``out``."""
    out = Path(out)
    check_output_path(out)
    stores = open_stores(sources)
    frame = tidy(stores)
    base, comparison = report_comparison(stores, baseline, resamples, seed)
    comparisons = comparison_markdown(base, comparison, resamples, seed)
    links = write_report_plots(frame, out) if plots else []
    text = render_report(frame, model_provenance(stores), [store.root for store in stores], links, comparisons,
                         audit=audit_frame(stores), diagnostics=_diagnostics_section(stores, out, plots))
    return write_text(out, text)


def _diagnostics_section(stores: list[ResultsStore], out: Path, plots: bool) -> str:
    """The report's Diagnostics section text for the stores' diagnose cells ('' when there are none)."""
    from robustbench_rpc.diagnostics import diagnostics_frame
    from robustbench_rpc.reporting.diagnostics import (
        DIAGNOSTICS_NOTE,
        STEM,
        diagnostics_markdown,
        diagnostics_table,
        write_diagnostics_plots,
    )

    frame = diagnostics_frame(stores)
    if frame.empty:
        return ""
    link = None
    if plots:
        plot_dir = out.parent / f"{out.stem}_plots"
        write_diagnostics_plots(frame, plot_dir, ("png", "svg"))
        link = f"{plot_dir.name}/{STEM}.png"
    return diagnostics_markdown(diagnostics_table(frame), link, DIAGNOSTICS_NOTE)


def write_robustbench(sources: Sources, out: Path) -> list[dict]:
    """Write the leaderboard-style entries as a JSON list to ``out`` (atomically); return them."""
    out = Path(out)
    check_output_path(out)
    stores = open_stores(sources)
    entries = robustbench_entries(tidy(stores), model_provenance(stores))
    write_text(out, json.dumps(entries, indent=2) + "\n")
    return entries
