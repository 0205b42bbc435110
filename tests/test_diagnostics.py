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
    model = load_model("symvit_digits_patch8_32")
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
