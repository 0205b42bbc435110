"""``robustbench-rpc demo``: the whole tool on the embedded digits; ``demo train`` re-creates the shipped models
(``--task segmentation``: the digit-scenes Segmenters)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="The embedded demo: SymViT vs RPC-SymViT on real digits (no downloads, no ImageNet).",
                  invoke_without_command=True)


@app.callback()
def demo_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where results, plots and the report go.")] = Path(
        "demo-results"),
    quick: Annotated[bool, typer.Option("--quick", help="A reduced grid (about a minute): fewer samples, "
                                        "3 corruptions, 2 budgets.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of corruptions and attacks.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Evaluate SymViT, RPC-SymViT and RPC-at-inference on the digits: clean, 15 corruptions x 5, attacks."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    from rich.console import Console

    from robustbench_rpc.demo.report import write_demo_outputs
    from robustbench_rpc.demo.run import DemoSettings, run_demo

    console = Console()
    if not console.is_terminal:  # keep wide tables readable in logs and pipes
        console = Console(width=140)
    started = time.perf_counter()
    settings = DemoSettings.quick() if quick else DemoSettings()
    result = run_demo(out, settings, seed=seed, device=device, progress=not quiet, log=console.print)
    write_demo_outputs(result, console)
    console.print(f"Done in {time.perf_counter() - started:.0f} s. Results: {out}  Report: {result.report}")


@app.command("train")
def train_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the two .safetensors checkpoints.")] = Path(
        "demo-checkpoints"),
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help="Training epochs (default: 60 for classification, 40 for segmentation).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    task: Annotated[str, typer.Option("--task", help="classification (SymViT / RPC-SymViT on the digits) or "
                                      "segmentation (their Segmenters on digit-scenes).")] = "classification",
) -> None:
    """Train the demo's SymViT and RPC-SymViT (or, with --task segmentation, their Segmenters on digit-scenes) from
    scratch: deterministic, a few minutes; the defaults rebuild the shipped checkpoints."""
    from dataclasses import replace

    from rich.console import Console

    from robustbench_rpc.demo.train import SHIPPED, TrainConfig, save_demo_checkpoint, train_digits_model
    from robustbench_rpc.errors import UserError

    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {epochs}.")
    if task not in ("classification", "segmentation"):
        raise UserError(f"--task must be classification or segmentation, got {task!r}.")
    console = Console()
    if task == "segmentation":
        _train_segmenters(out, epochs, seed, console)
        return
    config = replace(TrainConfig(), epochs=epochs or TrainConfig().epochs, seed=seed)
    for kind, (_, filename) in SHIPPED.items():
        model, summary = train_digits_model(kind, config, log=console.print)
        save_demo_checkpoint(model, out / filename, summary)
        console.print(f"{kind}: test top-1 {summary['test_top1']:.2f}% "
                      f"({summary['seconds']:.0f} s) -> {out / filename}")


def _train_segmenters(out: Path, epochs: int | None, seed: int, console: Any) -> None:
    """Train and save the two digit-scenes Segmenters (``demo train --task segmentation``)."""
    from dataclasses import replace

    from robustbench_rpc.demo.train_segmentation import (
        SHIPPED_SEGMENTERS,
        SegTrainConfig,
        save_segmenter_checkpoint,
        train_digit_segmenter,
    )

    config = replace(SegTrainConfig(), epochs=epochs or SegTrainConfig().epochs, seed=seed)
    for kind, name in SHIPPED_SEGMENTERS.items():
        model, summary = train_digit_segmenter(kind, config, log=console.print)
        save_segmenter_checkpoint(model, out / f"{name}.safetensors", summary)
        scores = summary["test"]
        console.print(f"{name}: digit-scenes test mIoU {scores['mIoU']:.2f}, mAcc {scores['mAcc']:.2f}, "
                      f"aAcc {scores['aAcc']:.2f} -> {out / f'{name}.safetensors'}")


@app.command("segmentation")
def segmentation_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where results and the report go.")] = Path(
        "demo-segmentation"),
    quick: Annotated[bool, typer.Option("--quick", help="A reduced grid: 40 scenes, 3 corruptions, PGD at "
                                        "2/255.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of corruptions and attacks.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """The shipped digit-scenes Segmenters (SymViT, RPC-SymViT): clean, corrupted and attacked mIoU / mAcc."""
    import time

    from robustbench_rpc.demo.segmentation import SegmentationDemoSettings, run_segmentation_demo
    from robustbench_rpc.reporting.exports import print_table

    started = time.perf_counter()
    settings = SegmentationDemoSettings.quick() if quick else SegmentationDemoSettings()
    result = run_segmentation_demo(out, settings, seed=seed, device=device, progress=not quiet)
    print_table(result.table, title="segmentation view")
    typer.echo(f"Done in {time.perf_counter() - started:.0f} s. Results: {out}  Report: {result.report}")
