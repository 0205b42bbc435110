"""``robustbench-rpc diagnose``: look inside a model's attention, clean and under one corruption."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustbench_rpc.cli import options as opt

DATA_PANEL = "Data"


def diagnose_command(
    model: opt.ModelName,
    dataset: Annotated[str, typer.Option("--dataset", help="digits (embedded) or imagenet (needs --data).",
                                         rich_help_panel=DATA_PANEL)] = "digits",
    data: Annotated[str | None, typer.Option("--data", help="ImageNet validation folder for --dataset imagenet.",
                                             rich_help_panel=DATA_PANEL)] = None,
    limit: Annotated[int, typer.Option("--limit", help="Images diagnosed (the first N of the dataset).",
                                       rich_help_panel=DATA_PANEL)] = 32,
    corruption: Annotated[str, typer.Option("--corruption", help="The ImageNet-C corruption shown beside clean.",
                                            rich_help_panel=DATA_PANEL)] = "gaussian_noise",
    severity: Annotated[int, typer.Option("--severity", help="Its severity, 1-5.",
                                          rich_help_panel=DATA_PANEL)] = 3,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results directory (created; re-runs resume).")] = Path(
        "results"),
    plots: Annotated[Path | None, typer.Option("--plots", help="Folder for the plot (default: OUT/plots).")] = None,
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
    labels: Annotated[str | None, typer.Option("--labels", help="Labels file for a flat ImageNet val layout.",
                                               rich_help_panel=DATA_PANEL)] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA if present), cpu, cuda, cuda:N.")] = "cpu",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the corruption's random draws.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Recompute cells that are already finished.")] = False,
) -> None:
    """Per layer and head: KPCA reconstruction error, PAP residual / sparsity / output change, value alignment."""
    from robustbench_rpc.diagnostics import diagnose
    from robustbench_rpc.reporting.diagnostics import diagnostics_table, write_diagnostics_plots
    from robustbench_rpc.reporting.exports import print_table

    summary = diagnose(
        model, str(checkpoint) if checkpoint else None, out=out, dataset=dataset, data=data, limit=limit,
        corruption=corruption, severity=severity, seed=seed,
        model_options=opt.model_kwargs(model_arg, rpc_iters, rpc_lambda, rpc_layers, rpc_threshold),
        trust_checkpoint=trust_checkpoint, use_ema=ema, num_classes=num_classes, force=force, labels_file=labels,
        preprocessing=opt.preprocessing_overrides(mean, std, input_size, crop_pct, interpolation), device=device,
    )
    print_table(diagnostics_table(summary.frame), title=f"{model}: attention diagnostics", digits=3)
    paths = write_diagnostics_plots(summary.frame, plots if plots is not None else Path(out) / "plots")
    typer.echo(str(summary))
    for path in paths:
        typer.echo(f"plot: {path}")
