"""Finding a model's attention layers and reading their queries, keys and values on an input.

A probe is one attention module the diagnostics know how to read: this package's symmetric / RPC attention
(SymViT, RPC-SymViT), Scaled Attention and KPCA attention, and timm's ViT ``Attention``. Each layer's input is
caught with a forward pre-hook during one ordinary forward pass, then its ``q``, ``k``, ``v`` ``[B, H, N, d]`` are
recomputed from that input exactly as the layer does (the keys serve as queries in symmetric attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.attention import SymmetricAttention
from robustbench_rpc.models.kernel_attention import KPCAAttention, ScaledAttention, standardize_heads

__all__ = ["AttentionProbe", "LayerInputs", "capture_inputs", "find_attention", "inner_model"]

#: What the diagnostics can read, for the error message when a model has none of it.
KNOWN = "SymViT / RPC-SymViT, Scaled Attention, KPCA or timm ViT attention (a qkv Linear with num_heads)"


@dataclass
class AttentionProbe:
    """One attention layer: its position, module path, kind and module."""

    layer: int
    path: str
    kind: str  # symmetric | rpc | scaled_s | scaled_alpha | kpca | softmax
    module: nn.Module

    @property
    def num_heads(self) -> int:
        """Number of heads."""
        return int(self.module.num_heads)

    @property
    def scale(self) -> float:
        """The softmax temperature ``1 / sqrt(d)`` of the layer."""
        return float(self.module.scale)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return the layer's ``q, k, v`` ``[B, H, N, d]`` for its input ``x`` ``[B, N, C]`` (as it attends)."""
        m = self.module
        B, N, C = x.shape
        if isinstance(m, SymmetricAttention):
            k, v = m.qkv(x).reshape(B, N, 2, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            return k, k, v
        if isinstance(m, (ScaledAttention, KPCAAttention)):
            q, k, v = m.split_qkv(x)
            if isinstance(m, KPCAAttention):
                q, k = standardize_heads(q), standardize_heads(k)
            return q, k, v
        q, k, v = m.qkv(x).reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return m.q_norm(q), m.k_norm(k), v

    def values(self, k: Tensor, v: Tensor) -> Tensor:
        """Return the values the layer's softmax attention weighs (Scaled Attention rescales them first)."""
        if isinstance(self.module, ScaledAttention):
            return self.module.scaled_values(k, v)
        return v


def inner_model(model: nn.Module) -> nn.Module:
    """Return the network inside a :class:`NormalizedModel` (or the model itself)."""
    return getattr(model, "model", model) if hasattr(model, "normalize") else model


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, SymmetricAttention):
        return "symmetric" if module.rpc is None else "rpc"
    if isinstance(module, ScaledAttention):
        return "scaled_alpha" if module.s_scalar else "scaled_s"
    if isinstance(module, KPCAAttention):
        return "kpca"
    try:
        from timm.layers.attention import Attention as TimmAttention
    except ImportError:  # an older timm keeps it in vision_transformer
        from timm.models.vision_transformer import Attention as TimmAttention
    if isinstance(module, TimmAttention) and getattr(module, "gate", None) is None:
        return "softmax"
    return None


def find_attention(model: nn.Module, name: str | None = None) -> list[AttentionProbe]:
    """Return the attention layers the diagnostics can read, in forward order; none is a :class:`UserError`."""
    inner = inner_model(model)
    probes = []
    for path, module in inner.named_modules():
        kind = _kind(module)
        if kind is not None:
            probes.append(AttentionProbe(len(probes), path, kind, module))
    if not probes:
        label = name or getattr(getattr(model, "info", None), "name", None) or type(inner).__name__
        raise UserError(f"Model {label} has no attention modules the diagnostics can read (expected {KNOWN}).")
    return probes


@dataclass
class LayerInputs:
    """The model's logits and each probed layer's input ``[B, N, C]`` from one forward pass."""

    logits: Tensor
    inputs: list[Tensor]


def capture_inputs(model: nn.Module, pixels: Tensor, probes: list[AttentionProbe]) -> LayerInputs:
    """Run ``model`` on ``pixels`` once (no grad) and return the input of every probed layer."""
    caught: dict[int, Tensor] = {}

    def hook(layer: int) -> Any:
        def pre(_module: nn.Module, args: tuple[Any, ...]) -> None:
            caught[layer] = args[0].detach()

        return pre

    handles = [p.module.register_forward_pre_hook(hook(p.layer)) for p in probes]
    try:
        with torch.no_grad():
            logits = model(pixels)
    finally:
        for handle in handles:
            handle.remove()
    missing = [p.path for p in probes if p.layer not in caught]
    if missing:
        raise UserError(f"Attention layer {missing[0]} did not run in the forward pass, so it cannot be diagnosed.")
    return LayerInputs(logits, [caught[p.layer] for p in probes])
