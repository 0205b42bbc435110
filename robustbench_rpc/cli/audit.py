"""``robustbench-rpc audit``: check whether a robustness evaluation can be trusted (attack-failure indicators)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from robustbench_rpc.cli import options as opt
from robustbench_rpc.cli.evaluate import (
    DATA_PANEL,
    BatchSize,
    Classes,
    Device,
    Force,
    Labels,
    Limit,
    Out,
    Quiet,
    Seed,
    Subset,
    _model_request,
)
from robustbench_rpc.names import eps_text

AUDIT_PANEL = "Audit"


def audit_command(
    model: opt.ModelName,
    eps: Annotated[str, typer.Option("--eps", "-e", help="Budgets to audit (pixel units; fractions of 255).",
                                     rich_help_panel=AUDIT_PANEL)] = "4/255,8/255",
    norm: Annotated[str, typer.Option("--norm", help="Linf or L2.", rich_help_panel=AUDIT_PANEL)] = "Linf",
    checks: Annotated[str | None, typer.Option("--checks", help="Comma list of check ids (default: all); see "
                      "'robustbench-rpc audit --list-checks'.", rich_help_panel=AUDIT_PANEL)] = None,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="Override a threshold, CHECK=VALUE "
                         "(repeatable; unit as listed).", rich_help_panel=AUDIT_PANEL)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="64 samples, Square with 300 queries, AutoAttack on 32 "
                     "samples: about a minute on a CPU for small models.", rich_help_panel=AUDIT_PANEL)] = False,
    surrogate: Annotated[str | None, typer.Option("--surrogate", help="Surrogate of the transfer attack, "
                         "NAME_OR_FACTORY[:CHECKPOINT] (default for an RPC model: the same weights, PAP off).",
                         rich_help_panel=AUDIT_PANEL)] = None,
    fail_on_flag: Annotated[bool, typer.Option("--fail-on-flag", help="Exit with status 1 when a check flags.",
                            rich_help_panel=AUDIT_PANEL)] = False,
    list_checks: Annotated[bool, typer.Option("--list-checks", help="List the checks and exit.", is_eager=True,
                           callback=lambda value: _list_checks(value), rich_help_panel=AUDIT_PANEL)] = False,
    dataset: Annotated[str, typer.Option("--dataset", help="imagenet, folder or digits (embedded).",
                                         rich_help_panel=DATA_PANEL)] = "imagenet",
    data: Annotated[str | None, typer.Option("--data", help="Image folder for imagenet / folder.",
                                             rich_help_panel=DATA_PANEL)] = None,
    out: Out = Path("results"),
    labels: Labels = None,
    classes: Classes = None,
    limit: Limit = None,
    subset: Subset = None,
    checkpoint: opt.CheckpointPath = None,
    trust_checkpoint: opt.TrustCheckpoint = False,
    ema: opt.UseEma = False,
    num_classes: opt.NumClasses = None,
    model_arg: opt.ModelArgs = None,
    rpc_iters: opt.RpcIters = None,
    rpc_lambda: opt.RpcLambda = None,
    rpc_layers: opt.RpcLayers = None,
    rpc_threshold: opt.RpcThreshold = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    input_size: opt.InputSize = None,
    crop_pct: opt.CropPct = None,
    interpolation: opt.Interpolation = None,
    batch_size: BatchSize = 64,
    device: Device = "auto",
    seed: Seed = 0,
    force: Force = False,
    quiet: Quiet = False,
) -> None:
    """Audit an attack evaluation: run the checks' attacks (reusing finished cells), judge, print the verdicts."""
    from robustbench_rpc.audit import audit, parse_checks, parse_thresholds

    parse_checks(checks)
    thresholds = parse_thresholds(threshold)
    request = _model_request(model, checkpoint, trust_checkpoint, ema, num_classes, model_arg,
                             (rpc_iters, rpc_lambda, rpc_layers, rpc_threshold),
                             (mean, std, input_size, crop_pct, interpolation))
    summary = audit(**request, out=out, eps=eps, norm=norm, checks=checks, thresholds=thresholds, quick=quick,
                    dataset=dataset, data=data, limit=limit, subset=subset, labels_file=labels, class_list=classes,
                    surrogate=surrogate, batch_size=batch_size, device=device, seed=seed, force=force,
                    progress=not quiet)
    if summary.rank != 0:  # distributed: rank 0 reports for everyone
        return
    print_verdicts(summary, f"{model}: audit", norm)
    if fail_on_flag and any(r.status == "flag" for r in summary.results):
        raise typer.Exit(1)


def _list_checks(value: bool) -> None:
    """``--list-checks``: print the checks and exit before the other options are checked."""
    if value:
        _print_checks()
        raise typer.Exit()


def _print_checks() -> None:
    from rich.console import Console
    from rich.table import Table

    from robustbench_rpc.audit import CHECK_LIST

    table = Table(title="audit checks (flag when value > threshold)")
    for column in ("check", "what it tests", "threshold", "unit"):
        table.add_column(column)
    for c in CHECK_LIST:
        table.add_row(c.id, c.tests, f"{c.threshold:g}", c.unit)
    Console().print(table)


def _number(value: Any) -> str:
    return "" if value is None or value != value else f"{value:.2f}"


def print_verdicts(summary: Any, title: str, norm: str = "Linf") -> None:
    """Print the verdict table, then per budget the lowest robust accuracy found and the attack that found it."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # keep the verdicts readable in logs and pipes
        console = Console(width=160)
    table = Table(title=escape(title))
    for column in ("check", "eps", "status", "value", "threshold", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column in ("value", "threshold") else "left")
    style = {"flag": "bold red", "pass": "green", "skip": "dim"}
    for r in summary.results:
        eps = eps_text(r.eps, norm)
        table.add_row(r.check, eps, f"[{style[r.status]}]{r.status}[/]", _number(r.value), f"{r.threshold:g}",
                      escape(r.detail))
    console.print(table)
    flags = [r for r in summary.results if r.status == "flag"]
    console.print(f"{len(flags)} check(s) flagged, {sum(r.status == 'pass' for r in summary.results)} passed, "
                  f"{sum(r.status == 'skip' for r in summary.results)} skipped; "
                  f"{summary.cells_run} cell(s) computed, {summary.cells_reused} reused, results in {summary.out}")
    for row in summary.lowest:
        console.print(escape(f"eps {eps_text(row['eps'], norm)}: lowest robust accuracy {row['robust_top1']:.2f}% "
                             f"({row['attack']}, {row['n']} samples); worst case over {row['attacks']} attack "
                             f"cell(s): {row['worst_case']:.2f}% on {row['worst_case_n']} common samples"))
