"""The checkpoints shipped with the package (the demo's digits models): a registered name loads them by default."""

from __future__ import annotations

from pathlib import Path

#: Where the shipped checkpoints live.
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "checkpoints"
#: Registered model name -> its shipped checkpoint file (trained by ``robustbench-rpc demo train``).
SHIPPED_CHECKPOINTS = {
    "symvit_digits_patch8_32": ASSET_DIR / "symvit_digits.safetensors",
    "rpc_symvit_digits_patch8_32": ASSET_DIR / "rpc_symvit_digits.safetensors",
}


def shipped_checkpoint(name: str) -> Path | None:
    """Return the shipped checkpoint of model ``name``, or None when the package ships none for it."""
    path = SHIPPED_CHECKPOINTS.get(name)
    return path if path is not None and path.is_file() else None
