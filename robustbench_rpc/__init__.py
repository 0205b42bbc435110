"""robustbench-rpc: robustness evaluation of symmetric / RPC attention vision transformers and their peers.

Importing the package is cheap (no torch) and makes it a timm plugin: every model name of the package is registered
in timm as soon as timm is imported (at once when it already is), so ``import robustbench_rpc`` then
``timm.create_model("rpc_symvit_tiny_patch16_224")`` works. Torch-heavy parts load on first use.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence
    from types import ModuleType

    from robustbench_rpc.models.wrapper import load_model


def __getattr__(name: str) -> Any:
    """Load the public API lazily so that ``--help`` does not import torch."""
    if name == "load_model":
        from robustbench_rpc.models.wrapper import load_model

        return load_model
    raise AttributeError(f"module 'robustbench_rpc' has no attribute {name!r}")


def _register_models() -> None:
    """Import the model modules: their ``@register_model`` builders enter timm's registry."""
    import robustbench_rpc.models  # noqa: F401


class _RegisterWhenTimmLoads(MetaPathFinder):
    """Finds nothing itself: when ``timm`` is first imported, registers the package's models right after it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Return timm's own spec with a loader that registers this package's models once timm has run."""
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; the search below must not find this finder again
        from importlib.util import find_spec

        spec = find_spec("timm")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_timm = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_timm(module)
            _register_models()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    _register_models()
elif not any(isinstance(finder, _RegisterWhenTimmLoads) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTimmLoads())
