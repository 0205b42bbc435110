"""Symmetric softmax attention and RPC attention (Principal Attention Pursuit), in pure torch.

Shapes follow the usual multi-head layout: ``k`` and ``v`` are ``[B, H, N, d]``. Every attention evaluation goes
through :func:`torch.nn.functional.scaled_dot_product_attention` with the keys as queries, so the ``N x N`` matrix is
never materialised by this code (the fused kernels may still do so internally on some backends).

PAP, as the official code computes it (``threshold="code"``), per sample and head::

    mu = N * C / (4 * ||K||_1)            C = full embedding width, N = tokens
    L = Y = 0
    repeat n - 1 times:
        S  = shrink(K - L + Y / mu, lambda * mu)
        K2 = K - S - Y / mu
        L  = softmax(K2 K2^T * scale) V
        Y  = Y + mu * (K - L - S)
    S  = shrink(K - L + Y / mu, lambda * mu)
    K2 = K - S - Y / mu
    out = softmax(K2 K2^T * scale) V

``threshold="paper"`` is the textbook principal component pursuit step instead: ``mu`` from the head width ``d`` and
shrinkage at ``lambda / mu``.

``backward="bpda"`` keeps PAP's forward value but differentiates plain symmetric attention on the same keys and values
(Backward Pass Differentiable Approximation, for adaptive attacks): the iterative loop is straight-through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rpc.errors import UserError

ThresholdMode = Literal["code", "paper"]
BackwardMode = Literal["exact", "bpda"]
BACKWARD_MODES = ("exact", "bpda")
LayerSpec = Union[str, Sequence[int]]

__all__ = [
    "BACKWARD_MODES",
    "RPCConfig",
    "SymmetricAttention",
    "principal_attention_pursuit",
    "soft_threshold",
    "straight_through_value",
    "symmetric_attention",
]


def soft_threshold(x: Tensor, threshold: Tensor) -> Tensor:
    """Shrink ``x`` towards zero by ``threshold`` (element-wise soft-thresholding, exact at the boundary)."""
    return x - torch.clamp(x, -threshold, threshold)


def symmetric_attention(k: Tensor, v: Tensor, scale: float, dropout_p: float = 0.0) -> Tensor:
    """Return ``softmax(K K^T * scale) V``: attention whose query is the key."""
    return F.scaled_dot_product_attention(k, k, v, dropout_p=dropout_p, scale=scale)


class _ValueWithSurrogateGradient(torch.autograd.Function):
    """Forward: ``value`` exactly; backward: the whole gradient goes to ``surrogate`` (none to ``value``)."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, surrogate: Tensor) -> Tensor:
        ctx.surrogate_dtype = surrogate.dtype
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, grad.to(ctx.surrogate_dtype)


def straight_through_value(value: Tensor, surrogate: Tensor) -> Tensor:
    """Return a tensor equal to ``value`` (bit for bit) whose gradient flows to ``surrogate`` as if it were returned.

    Unlike ``surrogate + (value - surrogate).detach()``, which can be off by rounding, the forward value is exact.
    Shapes must agree.
    """
    if value.shape != surrogate.shape:
        raise ValueError(
            f"straight_through_value needs equal shapes, got {tuple(value.shape)} and {tuple(surrogate.shape)}."
        )
    return _ValueWithSurrogateGradient.apply(value.detach(), surrogate)  # detached: value's graph is not kept


def principal_attention_pursuit(
    k: Tensor,
    v: Tensor,
    *,
    iters: int,
    lam: float,
    scale: float,
    embed_dim: int,
    threshold: ThresholdMode = "code",
    dropout_p: float = 0.0,
    backward: BackwardMode = "exact",
) -> Tensor:
    """Return RPC attention: ``iters`` attention evaluations of PAP on keys ``k`` ``[B, H, N, d]`` and values ``v``.

    ``embed_dim`` is the full embedding width ``C`` used by the official ``mu``; ``threshold`` picks the official
    ("code") or the textbook ("paper") shrinkage. Only the last evaluation applies attention dropout.

    ``backward="bpda"`` returns the same forward value (bit for bit), but gradients w.r.t. ``k`` and ``v`` are those
    of plain symmetric attention ``softmax(K K^T * scale) V`` (no dropout in that surrogate, so no random numbers
    are drawn beyond PAP's own). The surrogate is computed only when a gradient can flow (grad mode on and ``k`` or
    ``v`` requiring grad); otherwise this is exactly the "exact" path at no extra cost.
    """
    if backward not in BACKWARD_MODES:
        raise UserError(f"Unknown PAP backward mode {backward!r}; expected 'exact' or 'bpda'.")
    if backward == "bpda" and torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
        # PAP runs on detached copies that still report requires_grad, so that the kernels chosen (which may depend
        # on requires_grad on some backends) and hence the value are those of the exact path; its graph is dropped.
        k_d = k.detach().requires_grad_(k.requires_grad)
        v_d = v.detach().requires_grad_(v.requires_grad)
        value = _pap(k_d, v_d, iters, lam, scale, embed_dim, threshold, dropout_p)
        surrogate = symmetric_attention(k, v, scale)
        return straight_through_value(value, surrogate)
    return _pap(k, v, iters, lam, scale, embed_dim, threshold, dropout_p)


def _pap(
    k: Tensor,
    v: Tensor,
    iters: int,
    lam: float,
    scale: float,
    embed_dim: int,
    threshold: ThresholdMode,
    dropout_p: float,
) -> Tensor:
    """PAP's forward computation (see the module docstring); differentiable through the loop."""
    if iters < 1:
        raise UserError(f"RPC attention needs at least 1 attention evaluation, got rpc_iters={iters}.")
    n_tokens, head_dim = k.shape[-2], k.shape[-1]
    l1 = k.abs().sum(dim=(-2, -1), keepdim=True)
    if threshold == "code":
        mu = (n_tokens * embed_dim / 4) / l1
        thr = lam * mu
    elif threshold == "paper":
        mu = (n_tokens * head_dim / 4) / l1
        thr = lam / mu
    else:
        raise UserError(f"Unknown rpc_threshold {threshold!r}; expected 'code' or 'paper'.")

    # The loop follows the official operation order (so float64 results agree to ~1e-13), computing Y / mu once
    # per pass and updating fresh intermediates in place where autograd allows it.
    low_rank: Tensor | None = None
    dual: Tensor | None = None
    scaled_dual: Tensor | None = None  # Y / mu
    for step in range(iters):
        if low_rank is None:
            sparse = soft_threshold(k, thr)
            k2 = k - sparse
        else:
            x = k - low_rank
            x += scaled_dual
            sparse = soft_threshold(x, thr)
            k2 = k - sparse
            k2 -= scaled_dual
        if step == iters - 1:
            return symmetric_attention(k2, v, scale, dropout_p=dropout_p)
        low_rank = symmetric_attention(k2, v, scale)
        residual = k - low_rank
        residual -= sparse
        update = mu * residual
        dual = update if dual is None else dual + update
        scaled_dual = dual / mu
    raise AssertionError("unreachable: iters >= 1")


@dataclass(frozen=True)
class RPCConfig:
    """Where and how PAP runs: ``iters`` attention evaluations, ``lam`` (lambda), ``layers``, ``threshold``."""

    iters: int = 4
    lam: float = 4.0
    layers: LayerSpec = "first"
    threshold: ThresholdMode = "code"

    def validate(self, depth: int) -> RPCConfig:
        """Check the settings against a model of ``depth`` blocks and return a normalised copy."""
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise UserError(f"rpc_iters must be an integer >= 1 (attention evaluations per layer), got {self.iters!r}.")
        if not (float(self.lam) > 0):
            raise UserError(f"rpc_lambda must be > 0, got {self.lam!r}.")
        if self.threshold not in ("code", "paper"):
            raise UserError(f"rpc_threshold must be 'code' or 'paper', got {self.threshold!r}.")
        layers = parse_layers(self.layers)
        if not isinstance(layers, str):
            bad = [i for i in layers if i >= depth]
            if bad:
                raise UserError(
                    f"rpc_layers index {bad[0]} is out of range for a model with {depth} blocks "
                    f"(expected 0..{depth - 1}, 'first' or 'all')."
                )
            layers = tuple(sorted(set(layers)))
        return RPCConfig(iters=self.iters, lam=float(self.lam), layers=layers, threshold=self.threshold)

    def block_indices(self, depth: int) -> tuple[int, ...]:
        """Return the block indices (0-based) in which PAP runs."""
        layers = parse_layers(self.layers)
        if layers == "first":
            return (0,)
        if layers == "all":
            return tuple(range(depth))
        return tuple(sorted(set(layers)))

    def describe(self, depth: int) -> str:
        """Return a short human description, e.g. ``PAP n=4 lambda=4 in blocks [0] (code threshold)``."""
        return (
            f"PAP n={self.iters} lambda={self.lam:g} in blocks {list(self.block_indices(depth))} "
            f"({self.threshold} threshold)"
        )


def parse_layers(layers: LayerSpec | int) -> str | tuple[int, ...]:
    """Normalise a layer selection: 'first', 'all', an int, a list of ints or a string like '0,3,5'.

    As in the official code's ``--layer -1``, the single index -1 means every block; other negative indices are
    refused as ambiguous.
    """
    if isinstance(layers, bool):
        raise UserError(f"rpc_layers must be 'first', 'all' or block indices, got {layers!r}.")
    if isinstance(layers, int):
        layers = (layers,)
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text in ("first", "all"):
            return text
        try:
            layers = tuple(int(p) for p in text.replace(" ", "").split(",") if p)
        except ValueError:
            raise UserError(
                f"rpc_layers must be 'first', 'all' or comma-separated block indices, got {layers!r}."
            ) from None
    try:
        indices = tuple(int(i) for i in layers)
    except (TypeError, ValueError):
        raise UserError(f"rpc_layers must be 'first', 'all' or block indices, got {layers!r}.") from None
    if indices == (-1,):
        return "all"
    if any(i < 0 for i in indices):
        raise UserError(
            f"rpc_layers {list(indices)} has negative block indices; -1 alone means every block (as the official "
            "--layer -1), otherwise give indices from 0."
        )
    return indices


class SymmetricAttention(nn.Module):
    """Multi-head symmetric attention with one ``qkv`` Linear of shape ``[2D, D]`` (keys, then values).

    With ``rpc`` set, the keys go through Principal Attention Pursuit before attending.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        rpc: RPCConfig | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UserError(f"Embedding width {dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rpc = rpc
        self.pap_backward: BackwardMode = "exact"  # "bpda": PAP's value, plain attention's gradient (adaptive attacks)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        kv = self.qkv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        if self.rpc is None:
            x = symmetric_attention(k, v, self.scale, dropout_p=dropout_p)
        else:
            x = principal_attention_pursuit(
                k,
                v,
                iters=self.rpc.iters,
                lam=self.rpc.lam,
                scale=self.scale,
                embed_dim=C,
                threshold=self.rpc.threshold,
                dropout_p=dropout_p,
                backward=self.pap_backward,
            )
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        rpc = "off" if self.rpc is None else f"n={self.rpc.iters}, lambda={self.rpc.lam:g}, {self.rpc.threshold}"
        if self.rpc is not None and self.pap_backward != "exact":
            rpc += f", backward={self.pap_backward}"
        return f"heads={self.num_heads}, head_dim={self.head_dim}, rpc={rpc}"
