"""The attention diagnostics against the official fixtures and against independent float64 / numpy computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_rpc.diagnostics import find_attention, reconstruction_error
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.wrapper import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "kpca"
RECON = next(c for c in json.loads((FIXTURES / "manifest.json").read_text())["cases"] if c["case"] == "recon_vit")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_reconstruction_error_matches_official(dtype, tol):
    model = load_model("kpca_vit_tiny_patch16_224", str(FIXTURES / RECON["checkpoint"]),
                       num_heads=RECON["constructor_args"]["num_heads"]).to(dtype)
    inputs = torch.load(FIXTURES / RECON["inputs"])
    key = "float64" if dtype == torch.float64 else "float32"
    ref = torch.load(FIXTURES / RECON["outputs"][key])["log_recon_error_per_layer"]
    mean, std = inputs["mean"].double().view(1, 3, 1, 1), inputs["std"].double().view(1, 3, 1, 1)
    pixels = inputs["images"].double() * std + mean  # the pixels whose normalization gives the fixture's images
    got = reconstruction_error(model, pixels)
    assert len(got) == len(ref) == RECON["constructor_args"]["depth"]
    assert max(abs(a - b) for a, b in zip(got, ref.tolist(), strict=True)) <= tol


def _direct_log_error(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> float:
    """The error of Sec. 2.2.1 straight from its definition, in numpy float64 (no log-space tricks)."""
    logits = q @ np.swapaxes(k, -1, -2) * scale
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    h = attn @ v
    phi = np.exp((q * q).sum(-1)) / np.exp(2 * (q * k[:, :, :1]).sum(-1) - np.log(attn[..., 0] ** 2))
    return math.log(float((phi - (h * h).sum(-1)).mean()))


def test_log_space_form_equals_the_definition_for_other_families():
    torch.manual_seed(0)
    model = load_model("symvit_digits_patch8_32", shipped_weights=False)  # seeded random weights
    with torch.no_grad():  # weights x2: the error is positive and the definition does not yet overflow
        for p in model.model.parameters():
            p.mul_(2.0)
    probes = find_attention(model)
    pixels = torch.rand(3, 3, 32, 32)
    from robustbench_rpc.diagnostics.probes import capture_inputs

    caught = capture_inputs(model, pixels, probes)
    got = reconstruction_error(model, pixels)
    for probe, x, value in zip(probes, caught.inputs, got, strict=True):
        q, k, v = (t.detach().double().numpy() for t in probe.qkv(x))
        expected = _direct_log_error(q, k, v, probe.scale)
        assert math.isfinite(expected)
        assert value == pytest.approx(expected, abs=1e-6)


def test_model_without_readable_attention_is_one_sentence():
    model = load_model("resnet18", num_classes=10)
    with pytest.raises(UserError) as exc:
        reconstruction_error(model, torch.rand(1, 3, 32, 32))
    assert str(exc.value) == (
        "Model resnet18 has no attention modules the diagnostics can read (expected SymViT / RPC-SymViT, Scaled "
        "Attention, KPCA or timm ViT attention (a qkv Linear with num_heads))."
    )


def test_find_attention_kinds():
    kinds = {name: [p.kind for p in find_attention(load_model(name))]
             for name in ("rpc_symvit_digits_patch8_32", "deit_tiny_patch16_224")}
    assert kinds["rpc_symvit_digits_patch8_32"] == ["rpc", "symmetric", "symmetric", "symmetric"]
    assert kinds["deit_tiny_patch16_224"] == ["softmax"] * 12


# ------------------------------------------------------------------------------------------------ PAP per iteration
def _reference_pap(k: torch.Tensor, v: torch.Tensor, iters: int, lam: float, scale: float, embed_dim: int):
    """PAP written out from the official algorithm (float64), recording residual and sparsity per head."""
    n = k.shape[-2]
    mu = n * embed_dim / (4 * k.abs().sum(dim=(-2, -1), keepdim=True))
    low = torch.zeros_like(k)
    dual = torch.zeros_like(k)
    residuals, shares = [], []
    for _ in range(iters):
        x = k - low + dual / mu
        sparse = torch.sign(x) * torch.clamp(x.abs() - lam * mu, min=0)
        k2 = k - sparse - dual / mu
        weights = torch.exp(k2 @ k2.transpose(-2, -1) * scale)
        low = (weights / weights.sum(-1, keepdim=True)) @ v
        res = k - low - sparse
        residuals.append([float(res[:, h].norm() / k[:, h].norm()) for h in range(k.shape[1])])
        shares.append([float((sparse[:, h] != 0).double().mean()) for h in range(k.shape[1])])
        dual = dual + mu * res
    return np.array(residuals), np.array(shares), low


def test_pap_trace_matches_a_direct_float64_recomputation():
    from robustbench_rpc.diagnostics.measures import pap_trace
    from robustbench_rpc.models.attention import principal_attention_pursuit

    gen = torch.Generator().manual_seed(3)
    k = 4 * torch.randn(2, 3, 9, 4, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 3, 9, 4, generator=gen, dtype=torch.float64)
    trace = pap_trace(k, v, iters=5, lam=4.0, scale=0.5, embed_dim=12)
    residual, share, output = _reference_pap(k, v, 5, 4.0, 0.5, 12)
    assert np.abs(trace.residual.numpy() - residual).max() < 1e-12
    assert np.array_equal(trace.sparsity.numpy(), share)
    assert ((share > 0) & (share < 1)).any()  # the shrinkage really splits K here
    assert torch.allclose(trace.output, output, atol=1e-12, rtol=0)
    pap = principal_attention_pursuit(k, v, iters=5, lam=4.0, scale=0.5, embed_dim=12)
    assert torch.allclose(trace.output, pap, atol=1e-12, rtol=0)  # the layer's own output


# --------------------------------------------------------------------------------------------- value alignment
def _numpy_alignment(k: np.ndarray, v: np.ndarray, scale: float) -> tuple[float, float]:
    n, d = k.shape
    gram = np.exp(k @ k.T * scale)
    centre = np.eye(n) - np.ones((n, n)) / n
    _, vecs = np.linalg.eigh(centre @ gram @ centre)
    top = vecs[:, -min(d, n - 1):]
    basis, _ = np.linalg.qr(v)
    return float(np.sum((top.T @ basis) ** 2) / min(top.shape[1], basis.shape[1])), d / n


def test_value_alignment_against_numpy_eigh():
    from robustbench_rpc.diagnostics.measures import value_alignment

    gen = torch.Generator().manual_seed(5)
    k = torch.randn(2, 2, 10, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 2, 10, 3, generator=gen, dtype=torch.float64)
    alignment, chance = value_alignment(k, v, 0.6)
    for h in range(2):
        expected = np.mean([_numpy_alignment(k[b, h].numpy(), v[b, h].numpy(), 0.6)[0] for b in range(2)])
        assert alignment[h].item() == pytest.approx(expected, abs=1e-10)
    assert torch.allclose(chance, torch.full((2,), 0.3, dtype=torch.float64))


def test_values_spanning_the_top_eigenvectors_align_perfectly():
    from robustbench_rpc.diagnostics.measures import value_alignment

    gen = torch.Generator().manual_seed(6)
    k = torch.randn(1, 1, 10, 3, generator=gen, dtype=torch.float64)
    n = 10
    gram = np.exp(k[0, 0].numpy() @ k[0, 0].numpy().T * 0.6)
    centre = np.eye(n) - 1.0 / n
    top = np.linalg.eigh(centre @ gram @ centre)[1][:, -3:]
    mixed = top @ np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]])  # another basis of the same span
    v = torch.from_numpy(mixed).reshape(1, 1, n, 3)
    alignment, _ = value_alignment(k, v, 0.6)
    assert alignment.item() == pytest.approx(1.0, abs=1e-10)
