"""What every attack factory receives and returns: the context and the raw output of one batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AttackContext:
    """Run-time facts a factory may need: the seed, the number of classes, the model's device, a surrogate."""

    seed: int
    n_classes: int
    device: torch.device
    surrogate: nn.Module | None = None  # the model a transfer attack crafts its examples on
    final_precision: str = "fp32"  # autocast of the final forward on the adversarial images (fp16, bf16)


@dataclass
class AttackOutput:
    """Adversarial inputs in the attack's space, per-sample queries (None when not counted) and log lines."""

    adv: Tensor
    queries: Tensor | None = None
    log: list[str] = field(default_factory=list)


#: An attack ready to run: ``attack(images, labels) -> AttackOutput``.
AttackFn = Callable[[Tensor, Tensor], AttackOutput]


def model_device(model: nn.Module, fallback: torch.device | None = None) -> torch.device:
    """Return the device of the model's first parameter or buffer (``fallback`` or CPU when it has none)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback or torch.device("cpu")
