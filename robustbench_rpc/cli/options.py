"""Command-line options shared by several commands (model choice, checkpoint, RPC settings, preprocessing).

Only typer and the standard library are imported here, so that ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from robustbench_rpc.errors import UserError

MODEL_PANEL = "Model"
RPC_PANEL = "RPC attention (PAP)"
PREP_PANEL = "Preprocessing overrides"

ModelName = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Registered name (ours or any timm model), or package.module:factory returning an nn.Module.",
        rich_help_panel=MODEL_PANEL,
    ),
]
CheckpointPath = Annotated[
    Path | None,
    typer.Option("--checkpoint", "-c", help="Checkpoint file (.pth, .pth.tar, .pt, .safetensors).",
                 rich_help_panel=MODEL_PANEL),
]
TrustCheckpoint = Annotated[
    bool,
    typer.Option("--trust-checkpoint", help="Allow arbitrary unpickling (only for checkpoints you trust).",
                 rich_help_panel=MODEL_PANEL),
]
UseEma = Annotated[
    bool, typer.Option("--ema", help="Use the checkpoint's EMA weights.", rich_help_panel=MODEL_PANEL)
]
NumClasses = Annotated[
    int | None,
    typer.Option("--num-classes", help="Head size (default: follow the checkpoint).", rich_help_panel=MODEL_PANEL),
]
ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", help="Extra builder option KEY=VALUE (repeatable), e.g. num_heads=6.",
                 rich_help_panel=MODEL_PANEL),
]
RpcIters = Annotated[
    int | None,
    typer.Option("--rpc-iters", help="Attention evaluations per PAP layer (n >= 1; default 4).",
                 rich_help_panel=RPC_PANEL),
]
RpcLambda = Annotated[
    float | None,
    typer.Option("--rpc-lambda", help="PAP sparsity weight lambda > 0 (default 4).", rich_help_panel=RPC_PANEL),
]
RpcLayers = Annotated[
    str | None,
    typer.Option("--rpc-layers", help="Blocks with PAP: first, all, or indices like 0,3 (default first).",
                 rich_help_panel=RPC_PANEL),
]
RpcThreshold = Annotated[
    str | None,
    typer.Option("--rpc-threshold", help="code (official, default) or paper (textbook PCP shrinkage).",
                 rich_help_panel=RPC_PANEL),
]
Mean = Annotated[
    str | None, typer.Option("--mean", help="Normalization mean, e.g. 0.485,0.456,0.406.",
                                rich_help_panel=PREP_PANEL)
]
Std = Annotated[
    str | None, typer.Option("--std", help="Normalization std, e.g. 0.229,0.224,0.225.", rich_help_panel=PREP_PANEL)
]
InputSize = Annotated[
    int | None, typer.Option("--input-size", help="Square input size in pixels.", rich_help_panel=PREP_PANEL)
]
CropPct = Annotated[
    float | None, typer.Option("--crop-pct", help="Center-crop fraction (resize = size / crop_pct).",
                                  rich_help_panel=PREP_PANEL)
]
Interpolation = Annotated[
    str | None, typer.Option("--interpolation", help="Resize interpolation: bicubic, bilinear, nearest.",
                                rich_help_panel=PREP_PANEL)
]


def parse_floats(text: str | None, what: str, count: int = 3) -> tuple[float, ...] | None:
    """Parse ``"a,b,c"`` into floats, or None; a wrong count or a non-number is a UserError."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{what} must be {count} comma-separated numbers, got {text!r}.") from None
    if len(values) != count:
        raise UserError(f"{what} must be {count} comma-separated numbers, got {len(values)} in {text!r}.")
    return values


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def model_kwargs(
    model_args: list[str] | None,
    rpc_iters: int | None,
    rpc_lambda: float | None,
    rpc_layers: str | None,
    rpc_threshold: str | None,
) -> dict[str, Any]:
    """Collect builder options from ``--model-arg`` and the ``--rpc-*`` options."""
    kwargs: dict[str, Any] = {}
    for item in model_args or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--model-arg expects KEY=VALUE, got {item!r}.")
        kwargs[key.strip()] = _parse_value(value.strip())
    for key, value in (
        ("rpc_iters", rpc_iters),
        ("rpc_lambda", rpc_lambda),
        ("rpc_layers", rpc_layers),
        ("rpc_threshold", rpc_threshold),
    ):
        if value is not None:
            kwargs[key] = value
    return kwargs


def preprocessing_overrides(
    mean: str | None, std: str | None, input_size: int | None, crop_pct: float | None, interpolation: str | None
) -> dict[str, Any]:
    """Collect the preprocessing overrides that were given."""
    out: dict[str, Any] = {}
    if mean is not None:
        out["mean"] = parse_floats(mean, "--mean")
    if std is not None:
        out["std"] = parse_floats(std, "--std")
    if input_size is not None:
        if input_size <= 0:
            raise UserError(f"--input-size must be positive, got {input_size}.")
        out["input_size"] = (3, input_size, input_size)
    if crop_pct is not None:
        if not 0 < crop_pct <= 1:
            raise UserError(f"--crop-pct must be in (0, 1], got {crop_pct}.")
        out["crop_pct"] = crop_pct
    if interpolation is not None:
        if interpolation not in ("bicubic", "bilinear", "nearest"):
            raise UserError(f"--interpolation must be bicubic, bilinear or nearest, got {interpolation!r}.")
        out["interpolation"] = interpolation
    return out
