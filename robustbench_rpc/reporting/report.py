"""The Markdown report of results directories, and leaderboard-style (RobustBench) JSON entries.

The report has the sections Provenance (per model: versions, device, seed, checkpoint SHA-256, dataset
fingerprints, command line of every run), Paper table, Corruptions, Attacks, Comparisons (against a baseline,
with paired bootstrap intervals and McNemar tests) and Plots (PNG files written into ``<report stem>_plots/``
next to the report and linked relatively). Every function here takes what was read from the results directories (a
tidy table, the models' provenance, a comparison frame) and returns text or writes output files; opening the
directories is :mod:`robustbench_rpc.reports`' job (``write_report``, ``write_robustbench``).

:func:`robustbench_entries` returns one JSON object per model. Fields shared with RobustBench's ``model_info``
files keep RobustBench's names and string formatting (two decimals, eps as ``"4/255"``):

``name`` (the model label), ``architecture`` (the registered model name), ``dataset`` (the clean dataset),
``threat_model`` (the norm of the AutoAttack cells, else ``"corruptions"`` when there are corruption cells,
else null), ``eps`` (the largest AutoAttack budget of that norm, e.g. ``"4/255"``; null otherwise),
``clean_acc``, ``autoattack_acc`` (robust top-1 % under AutoAttack at ``eps``), ``corruptions_acc`` (mean
top-1 % over the standard ImageNet-C cells evaluated), ``additional_data`` (always false: this package
evaluates, it does not know the training data; correct it by hand), ``number_forward_passes`` (1), and
``link``, ``authors``, ``venue``, ``reported`` left empty to be filled by hand.

Fields added here: ``corruptions_mce`` (mCE in % of AlexNet's, string; null when not computable) with
``corruptions_mce_partial`` (true when the 15 x 5 grid was incomplete), ``robust_acc`` (a list with one object
per attack cell: ``attack``, ``threat_model``, ``eps`` (float, pixel units), ``eps_text``, ``variant`` (other
attack parameters), ``acc`` (robust top-1 %, float) and ``n``), ``n_examples`` (clean samples behind
``clean_acc``), ``checkpoint_sha256``, ``model_options`` and ``robustbench_rpc_version`` (the version that
produced the results, from the provenance).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rpc.atomic import atomic_write_bytes
from robustbench_rpc.errors import UserError
from robustbench_rpc.names import SUMMARY_CONDITION, dataset_family, eps_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

REPORT_FORMATS = ("md", "robustbench")


# ------------------------------------------------------------------------------------------------ provenance
def _fingerprint_text(fingerprint: dict[str, Any]) -> str:
    parts = []
    if "file_count" in fingerprint:
        parts.append(f"{fingerprint['file_count']} files")
    if "total_bytes" in fingerprint:
        parts.append(f"{int(fingerprint['total_bytes']):,} bytes")
    if fingerprint.get("listing_sha256"):
        parts.append(f"listing SHA-256 `{fingerprint['listing_sha256']}`")
    if fingerprint.get("root"):
        parts.append(f"root `{fingerprint['root']}`")
    extra = {
        k: v
        for k, v in fingerprint.items()
        if k not in ("file_count", "total_bytes", "listing_sha256", "root")
    }
    parts += [f"{key}={value}" for key, value in sorted(extra.items())]
    return ", ".join(parts) or "-"


def dataset_fingerprints(provenance: dict[str, Any], datasets: list[str]) -> dict[str, dict[str, Any]]:
    """Return the dataset fingerprints of a run's provenance, keyed by dataset name."""
    value = provenance.get("dataset")
    if not isinstance(value, dict) or not value:
        return {}
    if all(isinstance(v, dict) for v in value.values()):
        return {str(k): v for k, v in value.items()}
    return {" / ".join(datasets) or "dataset": value}


def _versions(provenance: dict[str, Any]) -> dict[str, Any]:
    versions = provenance.get("versions")
    return versions if isinstance(versions, dict) else {}


def _command_text(provenance: dict[str, Any]) -> str:
    command = provenance.get("command_line")
    if isinstance(command, list):
        return shlex.join(str(c) for c in command)
    return str(command) if command else "-"


def provenance_markdown(models: dict[str, dict[str, Any]]) -> str:
    """Return the Provenance section body: per model its identity, runs table and dataset fingerprints."""
    import pandas as pd

    from robustbench_rpc.reporting.exports import to_markdown

    lines: list[str] = []
    for label, entry in models.items():
        lines += [f"### {label}", ""]
        lines.append(f"- model: `{entry['model']}`")
        lines.append(f"- checkpoint SHA-256: `{entry.get('checkpoint_sha256') or 'none (no checkpoint)'}`")
        options = entry.get("model_options") or {}
        lines.append(f"- model options: `{json.dumps(options, sort_keys=True, default=str)}`")
        lines.append("- results directories: " + ", ".join(f"`{d}`" for d in entry["results_dirs"]))
        rows = []
        fingerprints: dict[str, str] = {}
        for run in entry["runs"]:
            prov = run["provenance"]
            versions = _versions(prov)
            rows.append(
                {
                    "run": run["run_id"] or "-",
                    "time": prov.get("time") or "-",
                    "robustbench-rpc": versions.get("robustbench-rpc") or "-",
                    "torch": versions.get("torch") or "-",
                    "timm": versions.get("timm") or "-",
                    "device": prov.get("device") or "-",
                    "seed": "-" if prov.get("seed") is None else str(prov.get("seed")),
                    "cells": str(run["cells"]),
                    "command line": "`" + _command_text(prov).replace("`", "'") + "`",
                }
            )
            found = {**run.get("cell_fingerprints", {}), **dataset_fingerprints(prov, run["datasets"])}
            for name, fingerprint in found.items():
                fingerprints.setdefault(name, _fingerprint_text(fingerprint))
        lines += ["", to_markdown(pd.DataFrame(rows)).rstrip()]
        if fingerprints:
            lines += ["", "Dataset fingerprints:", ""]
            lines += [f"- {name}: {text}" for name, text in fingerprints.items()]
        else:
            lines += ["", "Dataset fingerprints: none recorded."]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the report
def _view_markdown(frame: pd.DataFrame, view: str, missing: str) -> str:
    from robustbench_rpc.reporting.exports import to_markdown
    from robustbench_rpc.reporting.views import build_view

    try:
        return to_markdown(build_view(frame, view)).rstrip()
    except UserError:
        return missing


def _paper_attacks_markdown(frame: pd.DataFrame) -> list[str]:
    """The paper's attack table (each attack at its highest budget) and the threat-model notes, as report lines."""
    from robustbench_rpc.reporting.paper import threat_model_notes

    notes = threat_model_notes(frame)
    if not notes:
        return []
    table = _view_markdown(frame, "paper-attacks", "")
    lines = ["The paper's attack table (robust top-1, each attack at the highest budget it was run at):", "",
             table, ""] if table else []
    return lines + [f"_{note}_" for note in notes] + [""]


def comparison_markdown(
    baseline: str, comparison: pd.DataFrame | str, resamples: int, seed: int, level: float = 0.95
) -> str:
    """Return the Comparisons section body: the comparison frame against ``baseline``, or why there is none.

    ``comparison`` is what :func:`robustbench_rpc.results.compare.report_comparison` returns beside the baseline:
    the comparison frame, or the sentence saying why there is no comparison (returned as it is).
    """
    from robustbench_rpc.reporting.comparison import comparison_display
    from robustbench_rpc.reporting.exports import to_markdown

    if isinstance(comparison, str):
        return comparison
    intro = (
        f"Baseline: **{baseline}**. Each row compares a model with the baseline on the samples both were "
        f"evaluated on (`n`); values are top-1 accuracy in % (robust top-1 for attacks, AUPR for "
        f"out-of-distribution cells), `diff` is model minus baseline in points, the interval is a paired "
        f"percentile bootstrap ({level * 100:g}%, {resamples} resamples, seed {seed}), and p is McNemar's "
        f"exact test on the pairs where exactly one of the two models is right."
    )
    if comparison["metric"].isin(["mIoU", "mAcc", "aAcc"]).any():
        intro += (" Segmentation rows compare mIoU / mAcc of the class-pixel totals: their interval resamples the "
                  "images (paired), and McNemar's test does not apply (`-`).")
    return intro + "\n\n" + to_markdown(comparison_display(comparison, level=level)).rstrip()


def render_report(
    frame: pd.DataFrame,
    models: dict[str, dict[str, Any]],
    roots: Sequence[str | Path],
    plot_links: list[tuple[str, str]],
    comparisons: str,
    title: str = "Robustness report",
    audit: pd.DataFrame | None = None,
    diagnostics: str = "",
    segmentation: str = "",
) -> str:
    """Return the Markdown text of the report from its parts.

    The parts: the tidy table, the models' provenance (:func:`robustbench_rpc.results.provenance.model_provenance`),
    the results directories it came from, the plot links, the Comparisons section text and the audit frame
    (:func:`robustbench_rpc.results.verdicts.audit_frame`; None or empty: no audit was run), and the
    Diagnostics section's text (:func:`robustbench_rpc.reporting.diagnostics.diagnostics_markdown`; empty: none),
    and the Segmentation section's text (:func:`segmentation_markdown`; empty: no segmentation cells, no section).
    """
    from robustbench_rpc import __version__

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    classification = _classification_sections(frame)
    parts = [
        f"# {title}",
        "",
        f"Generated by robustbench-rpc {__version__} on {stamp} from "
        + ", ".join(f"`{root}`" for root in roots)
        + ". Accuracies are in %, differences in points, budgets ε in pixel units of [0, 1], written k/255 "
        "(L-infinity) or as their value (L2).",
        "",
        "Models: " + ", ".join(f"**{label}**" for label in models) + ".",
        "",
        "## Provenance",
        "",
        provenance_markdown(models),
        *classification,
        *(["## Segmentation", "", segmentation.strip(), ""] if segmentation.strip() else []),
        "## Audit",
        "",
        audit_markdown(audit) if classification or (audit is not None and not audit.empty) else
        "No audit: `robustbench-rpc audit` checks classifiers only. For segmentation the evidence is the worst "
        "case over the attacks run (PGD, FGSM, SegPGD) in the Segmentation section; run several attacks and "
        "budgets before quoting a robust mIoU.",
        "",
        "## Diagnostics",
        "",
        diagnostics.strip() or "No attention diagnostics in these results; `robustbench-rpc diagnose` adds them "
        "(reconstruction error, PAP iterations, value alignment, clean vs corrupted).",
        "",
        "## Comparisons",
        "",
        comparisons,
        "",
        "## Plots",
        "",
    ]
    if plot_links:
        for caption, link in plot_links:
            parts += [f"![{caption}]({link})", ""]
    else:
        parts += ["No attack or corruption cells to plot.", ""]
    return "\n".join(parts)


def _classification_sections(frame: pd.DataFrame) -> list[str]:
    """The Paper table, Corruptions and Attacks sections; none when the results hold only segmentation cells."""
    from robustbench_rpc.reporting.segmentation import segmentation_rows

    if len(segmentation_rows(frame)) == len(frame):
        return []
    return [
        "## Paper table",
        "",
        _view_markdown(frame, "paper", "No cells for the paper table."),
        "",
        "## Corruptions",
        "",
        "Top-1 accuracy per corruption, averaged over severities:",
        "",
        _view_markdown(frame, "corruptions", "No corruption cells in the results."),
        "",
        "Top-1 accuracy per severity, averaged over corruptions:",
        "",
        _view_markdown(frame, "severity", "No corruption cells in the results."),
        "",
        "## Attacks",
        "",
        "Robust top-1 accuracy per attack and budget. A `worst-case of ...` row counts a sample robust only if "
        "every attack listed failed on it (on the samples they all ran on): where several attacks were run, that "
        "is the robust accuracy to quote, and the paper table shows it.",
        "",
        _view_markdown(frame, "attacks", "No attack cells in the results."),
        "",
        *_paper_attacks_markdown(frame),
    ]


def segmentation_markdown(frame: pd.DataFrame, mask_links: Sequence[tuple[str, str]] = ()) -> str:
    """The report's Segmentation section: the paper's segmentation table, mIoU per corruption and the links to the
    predicted-mask figures; empty when the table has no segmentation cells."""
    from robustbench_rpc.reporting.exports import to_markdown
    from robustbench_rpc.reporting.segmentation import corruption_miou, segmentation_rows, segmentation_view

    if segmentation_rows(frame).empty:
        return ""
    parts = ["Segmentation cells: aAcc, mIoU and mAcc in % from the class-pixel totals over each dataset "
             "(mmsegmentation's definitions); corrupted = the mean over the corruption cells. Where several "
             "attacks ran at a budget, `worst case` is the lowest value found by any of them or by their per-image "
             "combination (each image's adversarial example with the lowest pixel accuracy), on the images they "
             "all ran on: the robust number to quote.", "",
             to_markdown(segmentation_view(frame)).rstrip(), ""]
    try:
        wide = corruption_miou(frame)
    except UserError:
        wide = None
    if wide is not None:
        parts += ["mIoU per corruption, averaged over severities:", "", to_markdown(wide).rstrip(), ""]
    for caption, link in mask_links:
        parts += [f"![{caption}]({link})", ""]
    return "\n".join(parts)


def audit_markdown(audit: pd.DataFrame | None) -> str:
    """The report's Audit section: the verdict table, or the sentence saying no audit was run."""
    from robustbench_rpc.reporting.exports import to_markdown
    from robustbench_rpc.reporting.views import audit_view

    if audit is None or audit.empty:
        return ("No audit in these results: a robust accuracy is only as good as the strongest attack tried. Run "
                "`robustbench-rpc audit` on the same model and results directory before quoting one.")
    flags = audit[audit["status"] == "flag"]
    lead = (f"{len(flags)} of {len(audit)} checks flagged (`flag`: value > threshold, see the README's Audit "
            "section)." if len(flags) else f"No check flagged ({len(audit)} verdicts).")
    view = audit_view(audit).drop(columns=["evidence"])
    return lead + "\n\n" + to_markdown(view)


def write_report_plots(frame: pd.DataFrame, out: Path) -> list[tuple[str, str]]:
    """Write the report's plots (SVG and PNG) into ``<out stem>_plots/`` next to ``out``; return (caption, link)s.

    Nothing is written when the table has no attack or corruption cells to plot.
    """
    from robustbench_rpc.reporting.plots import make_figures, prepare_directory, save_figure

    out = Path(out)
    links: list[tuple[str, str]] = []
    try:
        figures = make_figures(frame)
    except UserError:
        figures = {}
    if figures:
        plot_dir = prepare_directory(out.parent / f"{out.stem}_plots")
        for stem, figure in figures.items():
            save_figure(figure, plot_dir / f"{stem}.svg", "svg")
            save_figure(figure, plot_dir / f"{stem}.png", "png")
            caption = figure.axes[0].get_title() if figure.axes else stem
            links.append((caption, f"{plot_dir.name}/{stem}.png"))
    return links


def write_text(out: Path, text: str) -> Path:
    """Write ``text`` to ``out`` atomically (a :class:`UserError` when it cannot be written); return ``out``."""
    try:
        atomic_write_bytes(out, text.encode())
    except OSError as exc:
        raise UserError(f"Cannot write {out}: {exc.strerror or exc}.") from exc
    return out


# -------------------------------------------------------------------------------------------- leaderboard
def _acc_text(value: Any) -> str | None:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return f"{float(value):.2f}"


def _first(rows: pd.DataFrame) -> tuple[float, int] | None:
    """Return (value, n) of the row evaluated on the most samples (one evaluation, never an average)."""
    if rows.empty:
        return None
    best = rows.sort_values("n", ascending=False, kind="stable").iloc[0]
    return float(best["value"]), int(best["n"])


def _threat_model(variant: str) -> str:
    return str(json.loads(variant).get("threat_model", "pixel")) if variant else "pixel"


def robustbench_entries(
    frame: pd.DataFrame, provenance: dict[str, dict[str, Any]] | None = None
) -> list[dict]:
    """Return one leaderboard-style entry per model of a tidy table (fields in the module docstring)."""
    from robustbench_rpc import __version__

    provenance = provenance or {}
    entries = []
    for label in dict.fromkeys(frame["model_label"]):
        rows = frame[frame["model_label"] == label]
        first = rows.iloc[0]
        clean_rows = rows[
            (rows["condition"] == "clean")
            & (rows["metric"] == "top1")
            & (rows["dataset"].map(dataset_family) == "clean")
        ]
        clean = _first(clean_rows)
        attacks = rows[(rows["condition"] == "attack") & (rows["metric"] == "robust_top1")]
        robust = [
            {
                "attack": str(r["name"]),
                "threat_model": None if r["norm"] is None or r["norm"] != r["norm"] else str(r["norm"]),
                "eps": None if r["eps"] != r["eps"] else float(r["eps"]),
                "eps_text": eps_text(r["eps"], r["norm"]),
                "variant": json.loads(r["variant"]) if r["variant"] else {},
                "acc": round(float(r["value"]), 4),
                "n": int(r["n"]),
            }
            for _, r in attacks.sort_values(["name", "norm", "eps"], kind="stable").iterrows()
        ]
        pixel = attacks["variant"].map(_threat_model) == "pixel"  # compat-mode cells are no leaderboard entry
        autoattack = attacks[(attacks["name"] == "autoattack") & pixel]
        threat_model = eps = autoattack_acc = None
        if not autoattack.empty:
            norms = list(dict.fromkeys(autoattack["norm"].astype(str)))
            threat_model = next((n for n in norms if n.lower() == "linf"), norms[0])
            chosen = autoattack[autoattack["norm"].astype(str) == threat_model]
            chosen = chosen[chosen["eps"] == chosen["eps"].max()]
            eps = eps_text(float(chosen["eps"].iloc[0]), threat_model)
            autoattack_acc = _acc_text(_first(chosen)[0])
        summary = rows[rows["condition"] == SUMMARY_CONDITION]
        corruption_acc = _first(summary[summary["metric"] == "mean_top1"])
        mce = _first(summary[summary["metric"] == "mce"])
        mce_partial = _first(summary[summary["metric"] == "mce_partial"])
        if threat_model is None and not rows[rows["condition"] == "corruption"].empty:
            threat_model = "corruptions"
        versions = [
            _versions(run["provenance"]).get("robustbench-rpc")
            for run in provenance.get(label, {}).get("runs", [])
        ]
        entries.append(
            {
                "name": label,
                "architecture": str(first["model"]),
                "dataset": None if clean_rows.empty else str(clean_rows["dataset"].iloc[0]),
                "threat_model": threat_model,
                "eps": eps,
                "clean_acc": _acc_text(clean[0]) if clean else None,
                "autoattack_acc": autoattack_acc,
                "corruptions_acc": _acc_text(corruption_acc[0]) if corruption_acc else None,
                "corruptions_mce": _acc_text((mce or mce_partial)[0]) if (mce or mce_partial) else None,
                "corruptions_mce_partial": mce is None and mce_partial is not None,
                "robust_acc": robust,
                "n_examples": clean[1] if clean else None,
                "additional_data": False,
                "number_forward_passes": 1,
                "link": "",
                "authors": "",
                "venue": "",
                "reported": "",
                "checkpoint_sha256": None
                if first["checkpoint_sha256"] != first["checkpoint_sha256"]
                else first["checkpoint_sha256"],
                "model_options": json.loads(first["model_options"]) if first["model_options"] else {},
                "robustbench_rpc_version": next((v for v in versions if v), __version__),
            }
        )
    return entries
