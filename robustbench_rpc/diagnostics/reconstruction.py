"""The KPCA reconstruction error of Sec. 2.2.1 per attention layer: :func:`reconstruction_error`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustbench_rpc.diagnostics.measures import log_mean_reconstruction_error
from robustbench_rpc.diagnostics.probes import AttentionProbe, find_attention

__all__ = ["layer_log_error", "reconstruction_error"]


def layer_log_error(probe: AttentionProbe, x: Tensor, dims: tuple[int, ...] = (0, 1, 2)) -> Tensor:
    """Return one layer's log mean reconstruction error over ``dims`` of ``[B, H, N]`` on its input ``x``.

    KPCA layers use the official formula term by term (standardized q, k), in the model's precision, so the
    result is the official ``test_error``; other layers use the log-space form in float64 on their own q and k
    (see :mod:`robustbench_rpc.diagnostics.measures`).
    """
    q, k, v = probe.qkv(x)
    v = probe.values(k, v)
    official = probe.kind == "kpca"
    if not official:
        q, k, v = q.double(), k.double(), v.double()
    return log_mean_reconstruction_error(q, k, v, probe.scale, dims, official=official)


def reconstruction_error(model: nn.Module, pixels: Tensor) -> list[float]:
    """Return, per attention layer, the log of the mean reconstruction error over batch, heads and tokens.

    ``model`` is what :func:`robustbench_rpc.load_model` returns (or any module the diagnostics can read) and
    ``pixels`` ``[B, 3, H, W]`` are in [0, 1]. For ``kpca_vit_*`` this is the official model's
    ``log_recon_error_per_layer`` (``Attention.test_error``); NaN where the mean error is not positive.
    """
    from robustbench_rpc.diagnostics.probes import capture_inputs

    probes = find_attention(model)
    dtype = next(model.parameters()).dtype
    caught = capture_inputs(model, pixels.to(dtype), probes)
    out = []
    with torch.no_grad():
        for probe, x in zip(probes, caught.inputs, strict=True):
            out.append(float(layer_log_error(probe, x)))
    return out
