"""Model-side building blocks of adaptive attacks: BPDA through PAP, a PAP-free surrogate, straight-through input
transforms, randomness detection, expectation over transformation (EOT) and a float64 copy.

Everything here works on any ``nn.Module`` (our models, wrapped by :class:`~robustbench_rpc.models.wrapper.
NormalizedModel` or not, and user models); PAP layers are found as the modules with a non-None ``rpc`` and a
``pap_backward`` attribute (:class:`~robustbench_rpc.models.attention.SymmetricAttention` and FAN's ``TokenMixing``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.models.attention import BACKWARD_MODES, straight_through_value

__all__ = [
    "EOTModel",
    "Stability",
    "cast_model",
    "is_randomized",
    "pap_backward_mode",
    "pap_modules",
    "prediction_stability",
    "straight_through",
    "without_pap",
]


def _label(model: nn.Module) -> str:
    """Return the model's registry name when it has one (``load_model``'s info), else its class name."""
    info = getattr(model, "info", None)
    return str(getattr(info, "name", None) or type(model).__name__)


def pap_modules(model: nn.Module) -> list[nn.Module]:
    """Return every attention module of ``model`` in which PAP runs (non-None ``rpc`` and a ``pap_backward``)."""
    return [m for m in model.modules() if hasattr(m, "pap_backward") and getattr(m, "rpc", None) is not None]


@contextmanager
def pap_backward_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Set ``pap_backward`` ("exact" or "bpda") on all PAP layers of ``model`` inside the block, then restore it."""
    if mode not in BACKWARD_MODES:
        raise UserError(f"Unknown PAP backward mode {mode!r}; expected 'exact' or 'bpda'.")
    modules = pap_modules(model)
    if mode == "bpda" and not modules:
        raise UserError(
            f"{_label(model)} has no PAP (RPC attention) layers, so bpda=true would change nothing; "
            "use it with an rpc_* model or drop the option."
        )
    previous = [m.pap_backward for m in modules]
    try:
        for m in modules:
            m.pap_backward = mode
        yield model
    finally:
        for m, old in zip(modules, previous, strict=True):
            m.pap_backward = old


def without_pap(model: nn.Module) -> nn.Module | None:
    """Return a deep copy of ``model`` with PAP off everywhere (plain symmetric attention, same weights), or None.

    None means the model has no PAP layer. The copy's model-level ``rpc`` (SymViT, FAN) is cleared too, so that
    ``rpc_description()`` says "off", and a ``load_model`` info records ``rpc="off"``. ``model`` is not changed.
    """
    if not pap_modules(model):
        return None
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if getattr(m, "rpc", None) is not None:  # PAP layers and the model-level config
            m.rpc = None
        if hasattr(m, "pap_backward"):
            m.pap_backward = "exact"
    info = getattr(plain, "info", None)
    if info is not None and hasattr(info, "rpc"):
        info.rpc = "off"
        if getattr(info, "attention", None) == "rpc":
            info.attention = "symmetric"
    return plain


def _names(module_names: str | Sequence[str]) -> list[str]:
    parts = module_names.split(",") if isinstance(module_names, str) else list(module_names)
    names = [str(p).strip() for p in parts if str(p).strip()]
    if not names:
        raise UserError("straight_through needs at least one submodule name, got none.")
    return names


def _resolve(model: nn.Module, name: str, named: dict[str, nn.Module]) -> nn.Module:
    for candidate in (name, f"model.{name}"):
        if candidate and candidate in named:
            return named[candidate]
    valid = [n for n in named if n]
    hint = did_you_mean(name, valid) or did_you_mean(name, [n.removeprefix("model.") for n in valid])
    if not hint:
        hint = " (submodules include " + ", ".join(repr(n) for n in valid[:5]) + ")" if valid else " (it has none)"
    raise UserError(f"{_label(model)} has no submodule named {name!r}{hint}.")


def _identity_backward_hook(name: str) -> Callable[[nn.Module, tuple, object], Tensor]:
    def hook(module: nn.Module, args: tuple, output: object) -> Tensor:
        inp = args[0] if args else None
        if not isinstance(inp, Tensor) or not isinstance(output, Tensor):
            raise UserError(f"Submodule {name!r} must take and return one tensor for a straight-through backward.")
        if output.shape != inp.shape:
            raise UserError(
                f"Submodule {name!r} maps shape {tuple(inp.shape)} to {tuple(output.shape)}, so an identity "
                "backward (straight-through) is impossible; name a transform that keeps the shape."
            )
        if not output.is_floating_point() or not inp.is_floating_point():
            raise UserError(
                f"Submodule {name!r} must take and return floating-point tensors for a straight-through backward, "
                f"got {inp.dtype} -> {output.dtype}."
            )
        return straight_through_value(output, inp)

    return hook


@contextmanager
def straight_through(model: nn.Module, module_names: str | Sequence[str]) -> Iterator[nn.Module]:
    """Inside the block, the named submodules keep their forward output but pass gradients through unchanged.

    For user models with a non-differentiable input transform (rounding, JPEG, ...): BPDA with the identity.
    Names are as in ``model.named_modules()``; the ``model.`` prefix that ``NormalizedModel`` adds may be left out.
    """
    named = dict(model.named_modules())
    targets = [(name, _resolve(model, name, named)) for name in _names(module_names)]
    handles = []
    try:
        for name, module in targets:
            handles.append(module.register_forward_hook(_identity_backward_hook(name)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Stability:
    """Whether repeated eval-mode forward passes agree, per sample; changes within ``tolerance`` count as none."""

    pred_changed: Tensor  # bool [B]: the argmax differed in some repeat (and the logits moved beyond tolerance)
    logits_changed: Tensor  # bool [B]: some logit moved by more than ``tolerance``
    max_logit_diff: float  # largest absolute logit difference from the first pass
    tolerance: float  # absolute: rtol times the largest absolute logit of the first pass

    @property
    def randomized(self) -> bool:
        """True when any sample's logits changed beyond tolerance (switch EOT on)."""
        return bool(self.logits_changed.any())


def _train_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


@torch.no_grad()
def prediction_stability(model: nn.Module, x: Tensor, repeats: int = 2, rtol: float = 1e-5) -> Stability:
    """Run ``model`` ``repeats`` times in eval mode on ``x`` (no grad) and report per sample whether outputs differ.

    Logit differences up to ``rtol`` times the logit scale (largest absolute logit of the first pass) are taken as
    numerical noise (non-deterministic GPU kernels), not randomness. The model's train/eval flags are restored.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise UserError(f"prediction_stability needs repeats >= 2 (forward passes to compare), got {repeats!r}.")
    flags = _train_flags(model)
    model.eval()
    try:
        first = model(x)
        if not isinstance(first, Tensor) or first.ndim != 2:
            raise UserError(f"{_label(model)} must return logits [batch, classes] to check its randomness.")
        first = first.float() if first.dtype in (torch.float16, torch.bfloat16) else first
        scale = float(first.abs().max()) if first.numel() else 0.0
        tolerance = rtol * max(scale, torch.finfo(first.dtype).tiny)
        pred0 = first.argmax(dim=1)
        diff = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)
        pred_changed = torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
        for _ in range(repeats - 1):
            out = model(x).to(first.dtype)
            diff = torch.maximum(diff, (out - first).abs().amax(dim=1))
            pred_changed |= out.argmax(dim=1) != pred0
    finally:
        for m, flag in flags:
            m.training = flag
    logits_changed = diff > tolerance
    return Stability(
        pred_changed=(pred_changed & logits_changed).cpu(),
        logits_changed=logits_changed.cpu(),
        max_logit_diff=float(diff.max()) if diff.numel() else 0.0,
        tolerance=tolerance,
    )


def is_randomized(model: nn.Module, x: Tensor, repeats: int = 2, rtol: float = 1e-5) -> bool:
    """Return True when repeated eval-mode forward passes on ``x`` give logits that differ beyond tolerance."""
    return prediction_stability(model, x, repeats=repeats, rtol=rtol).randomized


class EOTModel(nn.Module):
    """Expectation over transformation: the mean logits of ``n`` forward passes (gradients average over draws)."""

    def __init__(self, model: nn.Module, n: int) -> None:
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise UserError(f"EOT needs n >= 1 forward passes per step, got {n!r}.")
        self.model = model
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        """Return ``model(x)`` for ``n=1``, else the mean of ``n`` calls."""
        if self.n == 1:
            return self.model(x)
        total = self.model(x)
        for _ in range(self.n - 1):
            total = total + self.model(x)
        return total / self.n

    def extra_repr(self) -> str:
        return f"n={self.n}"


def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Return a deep copy of ``model`` in floating dtype ``dtype`` (parameters and buffers, mean/std included).

    The copy expects inputs of that dtype (e.g. float64 pixels for the attack-dtype switch: PAP is ill-conditioned
    in float32). ``model`` is not changed.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UserError(f"cast_model needs a floating-point torch dtype such as torch.float64, got {dtype!r}.")
    return copy.deepcopy(model).to(dtype)
