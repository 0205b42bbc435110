"""The catalogue of this package's models, registered in timm and described here (family, attention type)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from timm.models import register_model

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ModelEntry:
    """One registered model name: its family (``symvit``, ``fan``, ...) and the attention it uses."""

    name: str
    family: str
    attention: str
    description: str


CATALOGUE: dict[str, ModelEntry] = {}


def register(family: str, attention: str, description: str = "") -> Callable[[F], F]:
    """Register a builder with timm (``timm.create_model`` finds it) and in this package's catalogue."""

    def wrap(fn: F) -> F:
        CATALOGUE[fn.__name__] = ModelEntry(fn.__name__, family, attention, description or (fn.__doc__ or "").strip())
        return register_model(fn)

    return wrap


def ensure_registered() -> None:
    """Import every model module so that all names are registered (timm and catalogue)."""
    import robustbench_rpc.models  # noqa: F401


@dataclass(frozen=True)
class Family:
    """How to build a family's models from a checkpoint.

    ``infer_config(state_dict)`` returns constructor kwargs read off the weights (width, depth, heads, classes,
    image size...); ``accepts`` lists the :func:`~robustbench_rpc.models.checkpoint.guess_family` values whose
    checkpoints this family loads; ``adapt_state_dict(state_dict, model)``, when given, maps a checkpoint onto a
    model built with other options (e.g. resamples position embeddings for another image size).
    """

    name: str
    infer_config: Callable[[dict[str, Any]], dict[str, Any]]
    accepts: tuple[str, ...]
    label: str
    adapt_state_dict: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Declare a model family (called once by each model module)."""
    FAMILIES[family.name] = family
    return family
