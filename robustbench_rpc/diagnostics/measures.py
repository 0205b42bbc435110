"""What the diagnostics measure in one attention layer, as pure torch functions of its ``q``, ``k``, ``v``.

- :func:`log_mean_reconstruction_error`: the log of the mean KPCA reconstruction error ``||phi(q)||^2 - ||h||^2`` of
  Sec. 2.2.1, as the official ``Reconstruction/softmax.py`` computes it for the KPCA ViT (standardized q, k); other
  layers get the same quantity on their own q and k (symmetric attention: q = k; Scaled Attention: its rescaled
  values; PAP layers: plain softmax attention on the same keys), computed in log space so it cannot overflow.
- :func:`pap_trace`: PAP's iterations (the official "code" or the "paper" threshold) with, after each attention
  evaluation t, the relative residual ``||K - L_t - S_t|| / ||K||`` and the share of non-zero entries of ``S_t``.
- :func:`value_alignment`: the mean squared cosine of the principal angles between span(V) and the top
  eigenvectors of the centred kernel matrix ``H exp(K K^T / sqrt d) H`` of the keys, with its chance level (the
  expected value for a uniformly random subspace of the same dimension), and the alignment of a random linear
  read-out of the layer's input (:func:`random_readout`), which keys and values share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from robustbench_rpc.models.attention import soft_threshold, symmetric_attention
from robustbench_rpc.models.kernel_attention import kpca_reconstruction_error

__all__ = [
    "PapTrace",
    "kernel_eigvecs",
    "log_mean_reconstruction_error",
    "pap_trace",
    "random_readout",
    "relative_change",
    "subspace_alignment",
    "value_alignment",
]


def log_mean_reconstruction_error(q: Tensor, k: Tensor, v: Tensor, scale: float, dims: tuple[int, ...],
                                  official: bool = False) -> Tensor:
    """Return ``log(mean of ||phi(q)||^2 - ||h||^2)`` over ``dims`` of ``[B, H, N]``, softmax attention of q on k.

    ``official``: the official formula term by term (``exp(q.q) / exp(2 q.k_0 - log a_0^2)`` per token, then the
    log of the mean), as the KPCA ViT computes it. Otherwise the same value from logarithms: ``||phi(q)||^2 =
    exp(q.q - 2 q.k_0 + 2 log a_0)`` summed with ``logsumexp``, so unstandardized queries (whose ``exp(q.q)``
    overflows even float64) still give a finite number. NaN where the mean error is not positive.
    """
    logits = (q @ k.transpose(-2, -1)) * scale
    attn = logits.softmax(dim=-1)
    out = attn @ v
    if official:
        return torch.log(kpca_reconstruction_error(q, k, attn, out).mean(dim=dims))
    log_a0 = logits[..., 0] - torch.logsumexp(logits, dim=-1)
    qq = (q * q).sum(dim=-1)
    qk0 = (q * k[:, :, :1, :]).sum(dim=-1)
    log_phi = qq - 2 * qk0 + 2 * log_a0
    proj = out.pow(2).sum(dim=-1)
    count = math.prod(log_phi.shape[d] for d in dims)
    lse = torch.logsumexp(log_phi, dim=dims)
    ratio = proj.sum(dim=dims) * torch.exp(-lse)
    value = lse + torch.log1p(-ratio) - math.log(count)
    return torch.where(ratio < 1, value, torch.full_like(value, float("nan")))


def relative_change(new: Tensor, ref: Tensor) -> Tensor:
    """Return ``||new - ref|| / ||ref||`` per head ``[H]`` (norms over batch, tokens and features)."""
    dims = (0, 2, 3)
    return torch.linalg.vector_norm(new - ref, dim=dims) / torch.linalg.vector_norm(ref, dim=dims)


@dataclass
class PapTrace:
    """PAP's iterations on one layer: per evaluation t (rows) and head (columns), and the final output."""

    residual: Tensor  # [iters, H]: ||K - L_t - S_t|| / ||K||
    sparsity: Tensor  # [iters, H]: share of non-zero entries of S_t
    output: Tensor  # [B, H, N, d]: PAP's output (the last L)


def pap_trace(k: Tensor, v: Tensor, *, iters: int, lam: float, scale: float, embed_dim: int,
              threshold: str = "code") -> PapTrace:
    """Run PAP on keys ``k`` and values ``v`` ``[B, H, N, d]`` and record its residual and sparsity per iteration.

    The steps are those of :func:`robustbench_rpc.models.attention.principal_attention_pursuit` (the same output),
    with the low-rank part ``L_t`` of every evaluation kept, the last being the layer's output.
    """
    n_tokens, head_dim = k.shape[-2], k.shape[-1]
    l1 = k.abs().sum(dim=(-2, -1), keepdim=True)
    if threshold == "code":
        mu = (n_tokens * embed_dim / 4) / l1
        thr = lam * mu
    else:
        mu = (n_tokens * head_dim / 4) / l1
        thr = lam / mu
    dims = (0, 2, 3)
    k_norm = torch.linalg.vector_norm(k, dim=dims)
    low_rank: Tensor | None = None
    dual = torch.zeros_like(k)
    residuals, shares = [], []
    for _ in range(iters):
        if low_rank is None:
            sparse = soft_threshold(k, thr)
            k2 = k - sparse
        else:
            sparse = soft_threshold(k - low_rank + dual / mu, thr)
            k2 = k - sparse - dual / mu
        low_rank = symmetric_attention(k2, v, scale)
        residual = k - low_rank - sparse
        residuals.append(torch.linalg.vector_norm(residual, dim=dims) / k_norm)
        shares.append((sparse != 0).to(k.dtype).mean(dim=dims))
        dual = dual + mu * residual
    assert low_rank is not None
    return PapTrace(torch.stack(residuals), torch.stack(shares), low_rank)


def kernel_eigvecs(k: Tensor, scale: float) -> Tensor:
    """Return the top ``r = min(d, N - 1)`` eigenvectors ``[B, H, N, r]`` of ``H exp(K K^T * scale) H`` (float64)."""
    k = k.to(torch.float64)
    n = k.shape[-2]
    logits = (k @ k.transpose(-2, -1)) * scale
    gram = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True))  # a positive factor: same eigenvectors
    centre = torch.eye(n, dtype=k.dtype, device=k.device) - 1.0 / n
    centred = centre @ gram @ centre
    _, vecs = torch.linalg.eigh((centred + centred.transpose(-2, -1)) / 2)
    return vecs[..., -min(k.shape[-1], n - 1):]


def subspace_alignment(top: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Return (alignment, chance) per head ``[H]`` of span(``v``) ``[B, H, N, p]`` with the orthonormal ``top``.

    The alignment is ``||U^T Q||_F^2 / min(r, p)`` with ``Q`` an orthonormal basis of span(v) (``p`` = its rank),
    the mean squared cosine of the principal angles; chance is ``r p / (N min(r, p))``, its mean for a uniformly
    random subspace. Both are averaged over the batch.
    """
    v = v.to(torch.float64)
    n, r = top.shape[-2], top.shape[-1]
    u_v, s_v, _ = torch.linalg.svd(v, full_matrices=False)
    tol = s_v.amax(dim=-1, keepdim=True) * max(v.shape[-2:]) * torch.finfo(v.dtype).eps
    rank = (s_v > tol).sum(dim=-1)  # [B, H]
    mask = (torch.arange(s_v.shape[-1], device=v.device) < rank.unsqueeze(-1)).to(v.dtype)
    basis = u_v * mask.unsqueeze(-2)
    overlap = (top.transpose(-2, -1) @ basis).pow(2).sum(dim=(-2, -1))
    p = rank.to(v.dtype)
    denom = torch.clamp(torch.minimum(p, torch.full_like(p, r)), min=1)
    return (overlap / denom).mean(dim=0), (r * p / (n * denom)).mean(dim=0)


def value_alignment(k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Return (alignment, chance) per head ``[H]`` of span(V) with the top eigenvectors of the key kernel matrix.

    Per sample and head: ``U`` = the top ``r = min(d, N - 1)`` eigenvectors of the centred kernel matrix
    ``H exp(K K^T * scale) H`` (``H = I - 11^T / N``); see :func:`subspace_alignment` (1: one span contains the
    other; chance close to 1 when ``d`` is close to ``N``).
    """
    return subspace_alignment(kernel_eigvecs(k, scale), v)


def random_readout(x: Tensor, heads: int, width: int, seed: int = 0) -> Tensor:
    """Return ``x W`` ``[B, H, N, width]`` for a seeded Gaussian ``W`` per head: a linear read-out of the layer
    input that learned nothing, the baseline the values' alignment should beat (not just a random subspace)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(heads, x.shape[-1], width, generator=gen, dtype=torch.float64).to(x.device)
    return torch.einsum("bnc,hcd->bhnd", x.to(torch.float64), w)
