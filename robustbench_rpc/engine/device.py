"""Device and precision choices: CUDA when present, else CPU; optional autocast and channels_last."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from robustbench_rpc.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_device(name: str | None = "auto") -> torch.device:
    """Return the device to run on: ``auto`` picks CUDA when available; a missing CUDA device is an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"Unknown device {name!r}; expected auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"Device {name!r} was asked for but CUDA is not available here; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"Device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
    return device


def check_precision(precision: str) -> str:
    """Validate an ``--amp`` precision name."""
    if precision not in PRECISIONS:
        raise UserError(f"Unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}.")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Run the enclosed forward passes in ``precision`` (fp32 means no autocast)."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        raise UserError("fp16 autocast is for GPUs; use --amp bf16 on the CPU.")
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = False,
                  compile_model: bool = False) -> torch.nn.Module:
    """Move the model to ``device`` in eval mode, optionally channels_last and ``torch.compile``-d."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    return model
