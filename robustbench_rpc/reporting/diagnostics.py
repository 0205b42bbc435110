"""The diagnostics' table and plots: functions of the frame that ``diagnostics_frame`` builds (one row per cell,
layer, head, iteration and quantity), clean and corrupted side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.errors import UserError
from robustbench_rpc.reporting.plots import _new_figure, check_formats, prepare_directory, save_figure

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

#: Rows of the summary table, in order: (label, quantity, how heads and iterations are reduced).
SUMMARY_ROWS = (
    ("recon log error", "recon_log_error", "layer"),
    ("PAP residual (first)", "pap_residual", "first"),
    ("PAP residual (last)", "pap_residual", "last"),
    ("PAP S non-zero (last)", "pap_sparsity", "last"),
    ("PAP output change", "pap_output_change", "heads"),
    ("value alignment", "value_alignment", "heads"),
    ("alignment by chance", "value_alignment_chance", "heads"),
    ("alignment, random read-out", "value_alignment_readout", "heads"),
)
STEM = "diagnostics"
#: How to read the Diagnostics section.
DIAGNOSTICS_NOTE = (
    "Per attention layer (heads averaged), clean and under the corruption chosen: the log mean KPCA "
    "reconstruction error of Sec. 2.2.1 (lower: the layer is closer to a kernel PCA projection); for PAP layers "
    "the relative residual ||K - L - S|| / ||K|| after the first and the last attention evaluation, the share of "
    "non-zero entries of the sparse part S, and how far PAP moves the output from plain symmetric attention; "
    "the mean squared cosine between span(V) and the top eigenvectors of the centred key kernel matrix, beside "
    "what a random subspace scores and what a random linear read-out of the layer's input scores (values that "
    "learned nothing); when the head width is close to the token count all three are close to 1 and the "
    "alignment says nothing."
)


def input_label(rows: pd.DataFrame) -> pd.Series:
    """Return per-row text naming the input: ``clean`` or ``<corruption> s<severity>``."""
    corrupted = rows["input"] == "corrupted"
    text = rows["corruption"].astype(str) + " s" + rows["severity"].astype("Int64").astype(str)
    return text.where(corrupted, "clean")


def _reduce(rows: pd.DataFrame, how: str) -> float | None:
    if rows.empty:
        return None
    if how == "layer":
        rows = rows[rows["head"] == -1]
    elif how in ("first", "last"):
        its = rows["iteration"]
        rows = rows[its == (its.min() if how == "first" else its.max())]
    return float(rows["value"].mean()) if len(rows) else None


def diagnostics_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Return one row per model, layer and quantity (heads averaged), with one column per input (clean first)."""
    import pandas as pd

    if frame.empty:
        raise UserError("No diagnose cells to tabulate; run `robustbench-rpc diagnose` first.")
    frame = frame.assign(_input=input_label(frame))
    inputs = ["clean", *sorted(set(frame["_input"]) - {"clean"})]
    rows = []
    for (label, layer), group in frame.groupby(["model_label", "layer"], sort=False):
        base = {"model": label, "layer": int(layer), "attention": group["attention"].iloc[0]}
        for name, quantity, how in SUMMARY_ROWS:
            chosen = group[group["quantity"] == quantity]
            if chosen.empty:
                continue
            row = {**base, "quantity": name}
            for inp in inputs:
                row[inp] = _reduce(chosen[chosen["_input"] == inp], how)
            rows.append(row)
    return pd.DataFrame(rows, columns=["model", "layer", "attention", "quantity", *inputs])


def diagnostics_figure(frame: pd.DataFrame) -> Figure:
    """Return a 2x2 figure: reconstruction error and value alignment per layer; PAP residual and S per iteration."""
    figure = _new_figure(11.0, 7.5)
    axes = figure.subplots(2, 2)
    frame = frame.assign(_input=input_label(frame))
    inputs = ["clean", *sorted(set(frame["_input"]) - {"clean"})]
    styles = {inp: ("-" if inp == "clean" else "--") for inp in inputs}
    models = list(dict.fromkeys(frame["model_label"]))
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    recon_ax, align_ax, resid_ax, sparse_ax = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]
    has_pap = False
    for model in models:
        rows = frame[frame["model_label"] == model]
        for inp in inputs:
            sel = rows[rows["_input"] == inp]
            label = f"{model} [{inp}]"
            recon = sel[(sel["quantity"] == "recon_log_error") & (sel["head"] == -1)].sort_values("layer")
            recon_ax.plot(recon["layer"], recon["value"], styles[inp], color=colors[model], marker="o", label=label)
            align = sel[sel["quantity"] == "value_alignment"].groupby("layer")["value"].mean()
            align_ax.plot(align.index, align.values, styles[inp], color=colors[model], marker="o", label=label)
            for quantity, ax in (("pap_residual", resid_ax), ("pap_sparsity", sparse_ax)):
                pap = sel[sel["quantity"] == quantity]
                for layer, per_layer in pap.groupby("layer"):
                    curve = per_layer.groupby("iteration")["value"].mean()
                    ax.plot(curve.index, curve.values, styles[inp], color=colors[model], marker="o",
                            label=f"{label} layer {layer}")
                    has_pap = True
    chance = frame[frame["quantity"] == "value_alignment_chance"].groupby("layer")["value"].mean()
    if len(chance):
        align_ax.plot(chance.index, chance.values, ":", color="black", label="chance (random subspace)")
    for model in models:
        rows = frame[(frame["model_label"] == model) & (frame["quantity"] == "value_alignment_readout")
                     & (frame["_input"] == "clean")]
        readout = rows.groupby("layer")["value"].mean()
        if len(readout):
            align_ax.plot(readout.index, readout.values, ":", color=colors[model], marker="x",
                          label=f"{model} random read-out [clean]")
    recon_ax.set(title="KPCA reconstruction error", xlabel="attention layer", ylabel="log mean error")
    align_ax.set(title="span(V) vs top eigenvectors of the key kernel", xlabel="attention layer",
                 ylabel="mean squared cosine")
    resid_ax.set(title="PAP residual ||K - L - S|| / ||K||", xlabel="PAP attention evaluation",
                 ylabel="relative residual")
    sparse_ax.set(title="PAP sparse part S", xlabel="PAP attention evaluation", ylabel="share of non-zero entries")
    from matplotlib.ticker import MaxNLocator

    for ax in (recon_ax, align_ax, resid_ax, sparse_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize="x-small")
        ax.grid(alpha=0.3)
    if not has_pap:
        for ax in (resid_ax, sparse_ax):
            ax.text(0.5, 0.5, "no PAP layer", ha="center", va="center", transform=ax.transAxes)
    return figure


def write_diagnostics_plots(frame: pd.DataFrame, out_dir: Path, formats: tuple[str, ...] = ("png",),
                            stem: str = STEM) -> list[Path]:
    """Write the diagnostics figure into ``out_dir`` in each format; return the paths."""
    formats = check_formats(formats)
    if frame.empty:
        raise UserError("No diagnose cells to plot; run `robustbench-rpc diagnose` first.")
    figure = diagnostics_figure(frame)
    out_dir = prepare_directory(out_dir)
    return [save_figure(figure, out_dir / f"{stem}.{fmt}", fmt) for fmt in formats]


def diagnostics_markdown(table: pd.DataFrame, plot: str | None = None, note: str = "") -> str:
    """Return a Markdown section body: an optional note, the summary table and the plot link."""
    from robustbench_rpc.reporting.exports import to_markdown

    parts: list[Any] = []
    if note:
        parts.append(note)
    parts.append(to_markdown(table, digits=3))
    if plot:
        parts.append(f"![attention diagnostics]({plot})")
    return "\n\n".join(parts) + "\n"
