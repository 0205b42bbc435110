"""robustbench-rpc: robustness evaluation of symmetric / RPC attention vision transformers and their peers.

Importing the package is cheap; torch-heavy parts load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from robustbench_rpc.models.wrapper import load_model


def __getattr__(name: str) -> Any:
    """Load the public API lazily so that ``--help`` does not import torch."""
    if name == "load_model":
        from robustbench_rpc.models.wrapper import load_model

        return load_model
    raise AttributeError(f"module 'robustbench_rpc' has no attribute {name!r}")
