"""Plots of a tidy table: robust accuracy against budget per attack, accuracy per corruption and per severity.

Figures are built with matplotlib's object-oriented API (:class:`matplotlib.figure.Figure` with the Agg
canvas), so no pyplot state, GUI backend or global figure registry is involved: the functions are safe to call
from a library, a test or a headless server, and a figure is freed as soon as nothing refers to it.

Every figure has a title, axis labels with units and a legend; each model is one line (or one bar series)
whose label is the tidy table's ``model_label``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.atomic import atomic_write
from robustbench_rpc.errors import UserError
from robustbench_rpc.names import WORST_CASE

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

#: Image formats written by :func:`write_plots` unless told otherwise.
DEFAULT_FORMATS = ("png", "svg")
PLOT_FORMATS = ("png", "svg", "pdf")
#: Resolution of raster images.
DPI = 150


@dataclass
class PlotFile:
    """One written plot: its file stem, the figure and the paths of the files written for it."""

    stem: str
    figure: Figure
    paths: list[Path]


def _new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    """Return an empty figure attached to the Agg canvas (no pyplot, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _slug(text: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "none"


def _models(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["model_label"]))


def _series_label(model: str, qualifier: str) -> str:
    return f"{model} [{qualifier}]" if qualifier else model


def _qualifiers(rows: pd.DataFrame) -> pd.Series:
    """Return per-row text telling apart datasets/variants plotted on the same axes."""
    from robustbench_rpc.reporting.views import _qualifier_text

    return _qualifier_text(rows)


def is_linf(norm: Any) -> bool:
    """Return True for the L-infinity norm names (``Linf``, ``linf``, ``inf``)."""
    return str(norm).lower() in ("linf", "l_inf", "inf")


def attack_figures(frame: pd.DataFrame, metric: str = "robust_top1") -> dict[str, Figure]:
    """Return one figure per (attack, norm): ``metric`` (robust top-1 %) against eps, one line per model.

    Keys are file stems such as ``attacks_pgd_linf``. L-infinity budgets are plotted in units of 1/255, other
    norms in pixel units of [0, 1].
    """
    rows = frame[(frame["condition"] == "attack") & (frame["metric"] == metric)]
    figures: dict[str, Figure] = {}
    if rows.empty:
        return figures
    rows = rows.assign(norm=rows["norm"].fillna("").astype(str), name=rows["name"].astype(str))
    for (name, norm), group in rows.groupby(["name", "norm"], sort=True):
        # a model's worst case covers whichever attacks ran at each budget: one line per model, not per attack set
        group = group.assign(qualifier="" if name == WORST_CASE else _qualifiers(group))
        linf = is_linf(norm)
        figure = _new_figure()
        axes = figure.add_subplot()
        budgets = sorted({float(e) * (255.0 if linf else 1.0) for e in group["eps"].dropna()})
        for model in _models(group):
            for qualifier, series in group[group["model_label"] == model].groupby("qualifier", sort=True):
                points = series.groupby("eps")["value"].mean().sort_index()
                x = points.index.to_numpy() * (255.0 if linf else 1.0)
                axes.plot(x, points.to_numpy(), marker="o", label=_series_label(model, str(qualifier)))
        if 0 < len(budgets) <= 12:
            axes.set_xticks(budgets, [f"{b:.4g}" for b in budgets])
        norm_text = f" ({norm})" if norm else ""
        axes.set_title(f"Worst-case robust top-1 accuracy over the attacks run{norm_text}" if name == WORST_CASE
                       else f"Robust top-1 accuracy under {name}{norm_text}")
        axes.set_xlabel(
            "perturbation budget ε (units of 1/255)"
            if linf or not norm
            else f"perturbation budget ε ({norm} norm, pixel units in [0, 1])"
        )
        axes.set_ylabel("robust top-1 accuracy (%)")
        axes.grid(alpha=0.3)
        axes.legend(title="model")
        figures[f"attacks_{_slug(name)}_{_slug(norm or 'none')}"] = figure
    return figures


def mean_and_std(values: Any) -> tuple[Any, Any]:
    """Split a view's column (floats, or ``mean ± std`` text over seeds) into float means and stds (0 for a float)."""
    import numpy as np

    means, stds = [], []
    for value in values:
        if isinstance(value, str) and "±" in value:
            mean, std = value.split("±")
            means.append(float(mean))
            stds.append(float(std))
        else:
            means.append(float(value) if value is not None else float("nan"))
            stds.append(0.0)
    return np.array(means), np.array(stds)


def corruption_figure(frame: pd.DataFrame, metric: str = "top1") -> Figure | None:
    """Return grouped bars of ``metric`` (top-1 %) per corruption, averaged over severities, plus the mean."""

    from robustbench_rpc.reporting.views import corruptions_view

    if frame[(frame["condition"] == "corruption") & (frame["metric"] == metric)].empty:
        return None
    wide = corruptions_view(frame, metric)
    return corruption_bars(wide, "Top-1 accuracy per corruption (mean over severities)", "top-1 accuracy (%)")


def corruption_bars(wide: pd.DataFrame, title: str, ylabel: str) -> Figure:
    """Grouped bars of a corruption x model table (column ``corruption``; values, or ``mean ± std`` with bars)."""
    import numpy as np

    models = [c for c in wide.columns if c != "corruption"]
    positions = np.arange(len(wide))
    width = 0.8 / max(len(models), 1)
    figure = _new_figure(max(6.4, 0.55 * len(wide) * max(1, len(models)) ** 0.5 + 2), 4.8)
    axes = figure.add_subplot()
    for i, model in enumerate(models):
        offset = (i - (len(models) - 1) / 2) * width
        means, stds = mean_and_std(wide[model])  # several seeds: mean with a std error bar
        axes.bar(positions + offset, means, width, label=model, yerr=stds if stds.any() else None, capsize=2)
    axes.set_xticks(positions, [str(c) for c in wide["corruption"]], rotation=40, ha="right")
    axes.set_title(title)
    axes.set_xlabel("corruption")
    axes.set_ylabel(ylabel)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(title="model")
    return figure


def severity_figure(frame: pd.DataFrame, metric: str = "top1") -> Figure | None:
    """Return ``metric`` (top-1 %) against severity, averaged over corruptions, one line per model."""
    from robustbench_rpc.reporting.views import severity_view

    if frame[(frame["condition"] == "corruption") & (frame["metric"] == metric)].empty:
        return None
    wide = severity_view(frame, metric)
    has_sources = "source" in wide.columns
    models = [c for c in wide.columns if c not in ("severity", "source")]
    figure = _new_figure()
    axes = figure.add_subplot()
    groups = list(wide.groupby("source", sort=True)) if has_sources else [("", wide)]
    for model in models:
        for qualifier, part in groups:
            part = part.dropna(subset=[model])
            if part.empty:
                continue
            means, stds = mean_and_std(part[model])
            severities = part["severity"].astype(int).to_numpy()
            lines = axes.plot(severities, means, marker="o", label=_series_label(model, str(qualifier)))
            if stds.any():  # several seeds: their std as error bars
                axes.errorbar(severities, means, yerr=stds, fmt="none", capsize=2, color=lines[0].get_color())
    axes.set_xticks(sorted({int(s) for s in wide["severity"]}))
    axes.set_title("Top-1 accuracy against corruption severity (mean over corruptions)")
    axes.set_xlabel("corruption severity (1 = mildest, 5 = strongest)")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(title="model")
    return figure


def make_figures(frame: pd.DataFrame) -> dict[str, Figure]:
    """Return every plot the table supports, keyed by stem (``attacks_*``, ``corruptions``, ``severity``)."""
    figures = attack_figures(frame)
    corruptions = corruption_figure(frame)
    if corruptions is not None:
        figures["corruptions"] = corruptions
    severity = severity_figure(frame)
    if severity is not None:
        figures["severity"] = severity
    from robustbench_rpc.reporting.segmentation_plots import segmentation_figures

    figures.update(segmentation_figures(frame))
    if not figures:
        raise UserError("The results have no attack or corruption cells to plot; plots need one of the two.")
    return figures


def check_formats(formats: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return the image formats, lower case; raise :class:`UserError` for an unknown one."""
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    unknown = [f for f in out if f not in PLOT_FORMATS]
    if unknown or not out:
        raise UserError(
            f"Unknown plot format {', '.join(unknown) or '(none)'}; expected {', '.join(PLOT_FORMATS)}."
        )
    return out


def prepare_directory(out_dir: Path) -> Path:
    """Create the output folder when missing; raise :class:`UserError` when it cannot hold files."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"Plot output path {out_dir} is a file; expected a folder.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"Cannot create plot folder {out_dir}: {exc.strerror or exc}.") from exc
    return out_dir


def save_figure(figure: Figure, path: Path, fmt: str) -> Path:
    """Write one figure atomically in ``fmt`` (png, svg or pdf) without a time stamp; return the path."""
    metadata = {"Date": None} if fmt in ("svg", "pdf") else {"Software": None}
    if fmt == "pdf":
        metadata["CreationDate"] = metadata.pop("Date")
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata))
    except OSError as exc:
        raise UserError(f"Cannot write plot {path}: {exc.strerror or exc}.") from exc
    return path


def write_plots(
    frame: pd.DataFrame, out_dir: Path, formats: list[str] | tuple[str, ...] = DEFAULT_FORMATS
) -> list[PlotFile]:
    """Build every supported plot of the tidy table and write it into ``out_dir`` in each format."""
    formats = check_formats(formats)
    figures = make_figures(frame)
    out_dir = prepare_directory(out_dir)
    return [
        PlotFile(stem, figure, [save_figure(figure, out_dir / f"{stem}.{fmt}", fmt) for fmt in formats])
        for stem, figure in figures.items()
    ]
