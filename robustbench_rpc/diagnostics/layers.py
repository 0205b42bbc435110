"""The diagnose records of a batch: per attention layer and head, every quantity the diagnostics measure."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustbench_rpc.diagnostics.measures import (
    kernel_eigvecs,
    pap_trace,
    random_readout,
    relative_change,
    subspace_alignment,
)
from robustbench_rpc.diagnostics.probes import AttentionProbe, capture_inputs, find_attention
from robustbench_rpc.diagnostics.reconstruction import layer_log_error
from robustbench_rpc.models.attention import symmetric_attention

__all__ = ["QUANTITIES", "batch_records"]

#: quantity -> what it is (the ``quantity`` column of diagnose records).
QUANTITIES = {
    "recon_log_error": "log of the mean KPCA reconstruction error ||phi(q)||^2 - ||h||^2 (Sec. 2.2.1) over samples, "
    "tokens (and heads when head is -1)",
    "pap_residual": "PAP layers: ||K - L - S|| / ||K|| after attention evaluation `iteration`",
    "pap_sparsity": "PAP layers: share of non-zero entries of S after attention evaluation `iteration`",
    "pap_output_change": "PAP layers: ||PAP output - plain symmetric attention output|| / ||plain output||",
    "value_alignment": "mean squared cosine of the principal angles between span(V) and the top eigenvectors of "
    "the centred key kernel matrix",
    "value_alignment_chance": "the alignment a random subspace of the same dimension has on average",
    "value_alignment_readout": "the alignment of a random linear read-out x W of the layer input (seeded Gaussian "
    "W, as wide as a head): what values that learned nothing score",
}


def _rows(probe: AttentionProbe, quantity: str, values: Tensor, iteration: int, n: int) -> list[dict[str, Any]]:
    return [
        {"layer": probe.layer, "module": probe.path, "attention": probe.kind, "head": head, "iteration": iteration,
         "quantity": quantity, "value": float(value), "n": n}
        for head, value in enumerate(values.tolist())
    ]


def layer_records(probe: AttentionProbe, x: Tensor) -> list[dict[str, Any]]:
    """Return the records of one layer on its input ``x`` ``[B, N, C]`` (head -1: all heads; iteration 0: none)."""
    n = int(x.shape[0])
    rows = _rows(probe, "recon_log_error", layer_log_error(probe, x).reshape(1), 0, n)
    rows[0]["head"] = -1
    rows += _rows(probe, "recon_log_error", layer_log_error(probe, x, dims=(0, 2)), 0, n)
    q, k, v = probe.qkv(x)
    k64, v64 = k.double(), v.double()
    if probe.kind == "rpc":
        cfg = probe.module.rpc
        trace = pap_trace(k64, v64, iters=cfg.iters, lam=cfg.lam, scale=probe.scale, embed_dim=int(x.shape[-1]),
                          threshold=cfg.threshold)
        for step in range(cfg.iters):
            rows += _rows(probe, "pap_residual", trace.residual[step], step + 1, n)
            rows += _rows(probe, "pap_sparsity", trace.sparsity[step], step + 1, n)
        plain = symmetric_attention(k64, v64, probe.scale)
        rows += _rows(probe, "pap_output_change", relative_change(trace.output, plain), 0, n)
    top = kernel_eigvecs(k64, probe.scale)
    alignment, chance = subspace_alignment(top, v64)
    readout, _ = subspace_alignment(top, random_readout(x, probe.num_heads, int(v.shape[-1]), seed=probe.layer))
    rows += _rows(probe, "value_alignment", alignment, 0, n)
    rows += _rows(probe, "value_alignment_chance", chance, 0, n)
    rows += _rows(probe, "value_alignment_readout", readout, 0, n)
    return rows


def batch_records(model: nn.Module, pixels: Tensor, probes: list[AttentionProbe] | None = None) -> list[dict[str, Any]]:
    """Return the diagnose records of every readable attention layer of ``model`` on ``pixels`` in [0, 1]."""
    probes = probes if probes is not None else find_attention(model)
    dtype = next(model.parameters()).dtype
    caught = capture_inputs(model, pixels.to(dtype), probes)
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for probe, x in zip(probes, caught.inputs, strict=True):
            rows += layer_records(probe, x)
    return rows
