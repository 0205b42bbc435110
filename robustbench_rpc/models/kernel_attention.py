"""The paper's other attention variants, in pure torch: Scaled Attention (*S* and alpha x Asym) and KPCA attention.

Both keep the usual ``qkv`` Linear of shape ``[3D, D]`` (queries, keys, values), as the official code
(rachtsy/KPCA_code ``Scaled_Attention/softmax.py`` and ``Reconstruction/softmax.py``) does, so its checkpoints load
as they are. ``q``, ``k``, ``v`` are ``[B, H, N, d]``.

- Scaled Attention *S* (``s_scalar=False``): ``v <- (I - S) v`` with ``S`` a learned ``H x N x N`` parameter ``s``,
  then ``softmax(Q K^T / sqrt d) v``. ``S`` ties the model to its token count ``N``.
- alpha x Asym (``s_scalar=True``): ``v <- (I - s softmax(K K^T / sqrt d)) v`` with a learned scalar ``s``.
- KPCA attention: ``q`` and ``k`` standardized per head and token over the head's features (unbiased std), then
  ``softmax(Q K^T / sqrt d) v``. :func:`kpca_reconstruction_error` is the official ``Attention.test_error``
  (Sec. 2.2.1 of the paper): per token ``||phi(q)||^2 - ||h||^2`` with ``h`` the attention output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustbench_rpc.errors import UserError

__all__ = [
    "KPCAAttention",
    "ScaledAttention",
    "kpca_reconstruction_error",
    "standardize_heads",
]


def standardize_heads(x: Tensor) -> Tensor:
    """Return ``(x - mean) / std`` over the last dimension (unbiased std), as the official KPCA attention does."""
    return (x - x.mean(dim=-1, keepdim=True)) / x.std(dim=-1, keepdim=True)


def kpca_reconstruction_error(q: Tensor, k: Tensor, attn: Tensor, out: Tensor) -> Tensor:
    """Return the per-token reconstruction error ``||phi(q)||^2 - ||h||^2`` ``[B, H, N]`` of the official code.

    ``q``, ``k`` are the (already standardized) queries and keys, ``attn = softmax(q k^T * scale)`` and
    ``out = attn @ v``. As in ``Reconstruction/softmax.py``: ``||phi(q)||^2 = exp(q.q) / exp(2 q.k_0 - log a_0^2)``
    with ``a_0`` the attention on the first token (the class token), unscaled dot products.
    """
    qk0 = (q * k[:, :, :1, :]).sum(dim=-1)
    qq = (q * q).sum(dim=-1)
    num = torch.exp(qq)
    den = torch.exp(2 * qk0 - torch.log(attn[..., 0].pow(2)))
    return num / den - out.pow(2).sum(dim=-1)


class _QKVAttention(nn.Module):
    """Shared parts: one ``qkv`` Linear ``[3D, D]``, ``proj``, dropouts; subclasses say how q, k, v attend."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UserError(f"Embedding width {dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``q, k, v`` ``[B, H, N, d]`` of the token sequence ``x`` ``[B, N, C]``."""
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(softmax(q k^T * scale), attention output before proj)`` for this variant."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.split_qkv(x)
        _, out = self.attend(q, k, v)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class ScaledAttention(_QKVAttention):
    """Scaled Attention: *S* (a learned ``H x N x N`` matrix) or alpha x Asym (a learned scalar), on the values."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_tokens: int,
        s_scalar: bool = False,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.s_scalar = s_scalar
        self.num_tokens = num_tokens
        shape = (1,) if s_scalar else (num_heads, num_tokens, num_tokens)
        self.s = nn.Parameter(torch.zeros(*shape))

    def scaled_values(self, k: Tensor, v: Tensor) -> Tensor:
        """Return ``(I - S) v`` (*S*) or ``(I - s softmax(K K^T * scale)) v`` (alpha x Asym)."""
        B, H, N, _ = v.shape
        if not self.s_scalar and self.num_tokens != N:
            raise UserError(
                f"Scaled Attention S was trained for {self.num_tokens} tokens but got {N}; S is a learned "
                f"{self.num_tokens}x{self.num_tokens} matrix, so the input size must be the checkpoint's."
            )
        eye = torch.eye(N, N, dtype=v.dtype, device=v.device).expand(B, H, N, N)
        if self.s_scalar:
            sym = ((k @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            return (eye - sym * self.s) @ v
        return (eye - self.s.unsqueeze(0).expand(B, H, N, N)) @ v

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Return the attention matrix and ``softmax(Q K^T * scale) @ scaled values``."""
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        attn = self.attn_drop(attn)
        return attn, attn @ self.scaled_values(k, v)

    def extra_repr(self) -> str:
        n = self.num_tokens
        kind = "alpha x Asym (scalar s)" if self.s_scalar else f"S ({self.num_heads}x{n}x{n})"
        return f"heads={self.num_heads}, head_dim={self.head_dim}, scaled={kind}"


class KPCAAttention(_QKVAttention):
    """Softmax attention on queries and keys standardized per head (the official Reconstruction model).

    With ``record_error`` set, each forward pass stores the layer's log reconstruction error (a 0-dim tensor, the
    official ``test_error``) in ``last_log_error`` and the per-token error ``[B, H, N]`` in ``last_error``.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.record_error = False
        self.last_error: Tensor | None = None
        self.last_log_error: Tensor | None = None

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Standardize ``q`` and ``k``, attend, and record the reconstruction error when asked."""
        q = standardize_heads(q)
        k = standardize_heads(k)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        attn = self.attn_drop(attn)
        out = attn @ v
        if self.record_error:
            error = kpca_reconstruction_error(q, k, attn, out)
            self.last_error = error.detach()
            self.last_log_error = torch.log(error.mean()).detach()
        return attn, out

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, standardized q/k"
