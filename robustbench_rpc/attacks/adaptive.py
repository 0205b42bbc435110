"""Adaptive-attack modifiers: the model an attack sees, built from the spec's common and white-box options.

- ``attack_dtype=float64``: the attack runs on a float64 copy of the model (PAP is ill-conditioned in float32); the
  adversarial images are scored by the model as evaluated.
- ``eot_iter``: expectation over transformation. ``0`` (the default) decides per batch: a second forward pass on
  the clean images must give the same predictions and logits (within 1e-5 of their scale), else
  :data:`~robustbench_rpc.attacks.registry.AUTO_EOT_ITER` draws are averaged. APGD averages gradients natively; the
  other attacks see the mean logits of ``eot_iter`` forward passes.
- ``bpda``: PAP's forward as it is, plain symmetric attention's backward (straight-through for the PAP loop).
- ``straight_through``: named submodules keep their forward and get an identity backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustbench_rpc.attacks.registry import AUTO_EOT_ITER, AttackSpec

#: Relative logit difference between two forward passes above which a model counts as randomized.
STABLE_LOGIT_RTOL = 1e-5


@dataclass(frozen=True)
class AttackModel:
    """The model an attack runs on, the dtype of its inputs and the EOT draws it averages."""

    model: nn.Module
    dtype: torch.dtype
    eot_iter: int


def attack_dtype(spec: AttackSpec) -> torch.dtype:
    """Return the torch dtype named by the spec's ``attack_dtype`` option (float32 by default)."""
    return torch.float64 if spec.params.get("attack_dtype", "float32") == "float64" else torch.float32


def predictions_repeat(model: nn.Module, images: Tensor, first_logits: Tensor) -> bool:
    """True when a second forward pass on ``images`` gives the same predictions and logits as ``first_logits``."""
    with torch.no_grad():
        again = model(images)
    if not torch.equal(again.argmax(dim=1), first_logits.argmax(dim=1)):
        return False
    scale = float(first_logits.abs().max()) if first_logits.numel() else 0.0
    return float((again - first_logits).abs().max()) <= STABLE_LOGIT_RTOL * max(scale, 1.0)


def resolve_eot(spec: AttackSpec, model: nn.Module, images: Tensor, clean_logits: Tensor) -> int:
    """Return the EOT draws of this batch: the spec's ``eot_iter``, or for 0 the automatic choice."""
    requested = int(spec.params.get("eot_iter", 1))
    if requested > 0:
        return requested
    return 1 if predictions_repeat(model, images, clean_logits) else AUTO_EOT_ITER


def build_attack_model(model: nn.Module, spec: AttackSpec, eot_iter: int) -> AttackModel:
    """Return the model the attack sees: cast to the attack dtype, wrapped for EOT unless the attack does EOT."""
    from robustbench_rpc.models.adaptive import EOTModel, cast_model

    dtype = attack_dtype(spec)
    attacked = cast_model(model, dtype) if dtype != torch.float32 else model
    if eot_iter > 1 and spec.name not in NATIVE_EOT:
        attacked = EOTModel(attacked, eot_iter)
    return AttackModel(attacked, dtype, eot_iter)


#: Attacks that average gradients over ``eot_iter`` draws themselves (the option is passed to them).
NATIVE_EOT = ("apgd-ce", "apgd-dlr")


@contextlib.contextmanager
def gradient_modifiers(model: nn.Module, spec: AttackSpec) -> Iterator[None]:
    """Apply the spec's ``bpda`` and ``straight_through`` options to ``model`` for the block."""
    from robustbench_rpc.models.adaptive import pap_backward_mode, straight_through

    with contextlib.ExitStack() as stack:
        if spec.params.get("bpda"):
            stack.enter_context(pap_backward_mode(model, "bpda"))
        names = spec.params.get("straight_through")
        if names:
            stack.enter_context(straight_through(model, names))
        yield
