"""Reports of results directories in one call: open the stores, read their frames, render and write them.

The glue between the two rooms below it: :mod:`robustbench_rpc.results` opens the directories and reads the tidy
table, the models' provenance and the comparison frame; :mod:`robustbench_rpc.reporting` turns those into text,
tables and plots without opening a store. The CLI's ``report`` command and the demo call these.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
                         audit=audit_frame(stores), diagnostics=_diagnostics_section(stores, out, plots),
                         segmentation=_segmentation_section(stores, frame, out, plots))
    return write_text(out, text)


def _segmentation_section(stores: list[ResultsStore], frame: Any, out: Path, plots: bool) -> str:
    """The report's Segmentation section, with figures of the predicted masks the runs saved ('' when none)."""
    from robustbench_rpc.reporting.report import segmentation_markdown
    from robustbench_rpc.reporting.segmentation import segmentation_rows

    rows = segmentation_rows(frame)
    if rows.empty:
        return ""
    links = _mask_figures(stores, rows, out) if plots else []
    return segmentation_markdown(frame, links)


def _mask_figures(stores: list[ResultsStore], rows: Any, out: Path) -> list[tuple[str, str]]:
    """Draw the saved (image, truth, prediction) PNGs of each clean segmentation cell; return (caption, link)s."""
    import numpy as np
    from PIL import Image

    from robustbench_rpc.reporting.plots import _slug, prepare_directory, save_figure
    from robustbench_rpc.reporting.segmentation import _labels
    from robustbench_rpc.reporting.segmentation_plots import masks_figure
    from robustbench_rpc.results.segmentation import PREDICTIONS_DIR

    labels = _labels(rows)
    cells = {key: (label, dataset) for key, label, dataset in
             zip(rows["cell_key"], rows["model_label"], rows["dataset"], strict=True) if key}
    links: list[tuple[str, str]] = []
    for store in stores:
        folder = store.root / PREDICTIONS_DIR
        for cell_dir in sorted(folder.iterdir()) if folder.is_dir() else []:
            key = cell_dir.name.rsplit("-", 1)[-1]
            if key not in cells:
                continue
            samples = []
            for image_path in sorted(cell_dir.glob("*-image.png")):
                stem = image_path.name.removesuffix("-image.png")
                truth, pred = cell_dir / f"{stem}-truth.png", cell_dir / f"{stem}-pred.png"
                if truth.is_file() and pred.is_file():
                    samples.append((f"image {int(stem)}", *(np.asarray(Image.open(p).convert("RGB"))
                                                            for p in (image_path, truth, pred))))
            if not samples:
                continue
            label, dataset = cells[key]
            figure = masks_figure(f"Predicted masks: {labels[label]} on {dataset} (clean)", samples)
            plot_dir = prepare_directory(out.parent / f"{out.stem}_plots")
            stem = f"masks_{_slug(label)}_{_slug(dataset)}"
            if any(link.endswith(f"/{stem}.png") for _, link in links):  # another clean cell of this model and data
                stem += f"_{key[:8]}"
            for fmt in ("png", "svg"):
                save_figure(figure, plot_dir / f"{stem}.{fmt}", fmt)
            links.append((f"Predicted masks of {labels[label]} on {dataset}", f"{plot_dir.name}/{stem}.png"))
    return links


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
    from robustbench_rpc.errors import UserError
    from robustbench_rpc.reporting.segmentation import segmentation_rows

    stores = open_stores(sources)
    frame = tidy(stores)
    frame = frame.drop(index=segmentation_rows(frame).index)  # a classification leaderboard's format
    if frame.empty:
        raise UserError("RobustBench entries are for classification results, but these hold only segmentation "
                        "cells; use report --format md or table --view segmentation.")
    entries = robustbench_entries(frame, model_provenance(stores))
    write_text(out, json.dumps(entries, indent=2) + "\n")
    return entries
