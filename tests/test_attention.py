"""RPC attention against a direct transcription of the PAP formulas, gradients, dtypes and torch.compile."""

from __future__ import annotations

import pytest
import torch

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.attention import (
    RPCConfig,
    SymmetricAttention,
    parse_layers,
    principal_attention_pursuit,
    soft_threshold,
    symmetric_attention,
)


def reference_pap(k, v, iters, lam, scale, embed_dim, threshold="code"):
    """PAP written out with explicit attention matrices and masks (the formulas of the issue), float64."""
    n, d = k.shape[-2], k.shape[-1]
    l1 = k.abs().sum(dim=(-2, -1), keepdim=True)
    mu = n * (embed_dim if threshold == "code" else d) / 4 / l1
    thr = lam * mu if threshold == "code" else lam / mu
    low = torch.zeros_like(k)
    dual = torch.zeros_like(k)
    out = None
    for step in range(iters):
        s = k - low + dual / mu
        s = (s - thr) * (s >= thr) + (s + thr) * (s <= -thr)
        k2 = k - s - dual / mu
        attn = torch.softmax(k2 @ k2.transpose(-2, -1) * scale, dim=-1)
        out = attn @ v
        if step < iters - 1:
            low = out
            dual = dual + mu * (k - low - s)
    return out


@pytest.fixture
def kv():
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 7, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 3, 7, 5, generator=gen, dtype=torch.float64)
    return k, v


@pytest.mark.parametrize("threshold", ["code", "paper"])
@pytest.mark.parametrize("iters", [1, 2, 4, 6])
@pytest.mark.parametrize("lam", [0.5, 4.0])
def test_pap_matches_reference(kv, iters, lam, threshold):
    k, v = kv
    got = principal_attention_pursuit(k, v, iters=iters, lam=lam, scale=5**-0.5, embed_dim=15, threshold=threshold)
    want = reference_pap(k, v, iters, lam, 5**-0.5, 15, threshold)
    assert (got - want).abs().max().item() < 1e-12


def test_pap_is_not_plain_attention_and_shrinks(kv):
    k, v = kv
    plain = symmetric_attention(k, v, 0.5)
    assert (plain - torch.softmax(k @ k.transpose(-2, -1) * 0.5, -1) @ v).abs().max() < 1e-12
    pap = principal_attention_pursuit(k, v, iters=1, lam=0.5, scale=0.5, embed_dim=15)
    assert (pap - plain).abs().max() > 1e-3
    # a huge lambda shrinks nothing: PAP with n=1 is then plain symmetric attention
    same = principal_attention_pursuit(k, v, iters=1, lam=1e6, scale=0.5, embed_dim=15)
    assert (same - plain).abs().max() < 1e-12


def test_soft_threshold_exact():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
    assert soft_threshold(x, torch.tensor(1.0)).tolist() == [-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]


def test_gradcheck_through_pap():
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(1, 1, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: principal_attention_pursuit(a, b, iters=3, lam=2.0, scale=0.6, embed_dim=6), (k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_module_keeps_dtype_and_shape(dtype):
    layer = SymmetricAttention(16, 2, qkv_bias=True, rpc=RPCConfig(iters=3, lam=4.0)).to(dtype)
    x = torch.randn(2, 9, 16, dtype=dtype)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out.float()).all()
    assert layer.qkv.weight.shape == (32, 16)


def test_torch_compile_traces_pap():
    torch.manual_seed(0)
    layer = SymmetricAttention(16, 2, rpc=RPCConfig(iters=3, lam=4.0)).eval()
    x = torch.randn(2, 9, 16)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    assert (compiled(x) - layer(x)).abs().max() < 1e-6


def test_config_validation():
    assert RPCConfig(layers="all").block_indices(4) == (0, 1, 2, 3)
    assert RPCConfig(layers=[3, 0, 3]).validate(4).layers == (0, 3)
    assert RPCConfig(layers=-1).validate(4).layers == "all"  # the official --layer -1
    assert parse_layers("-1") == "all"
    with pytest.raises(UserError, match="negative block indices"):
        parse_layers([-2, 0])
    assert parse_layers("0, 2") == (0, 2)
    with pytest.raises(UserError, match="rpc_iters must be an integer >= 1"):
        RPCConfig(iters=0).validate(4)
    with pytest.raises(UserError, match="rpc_lambda must be > 0"):
        RPCConfig(lam=0).validate(4)
    with pytest.raises(UserError, match="out of range"):
        RPCConfig(layers=[4]).validate(4)
    with pytest.raises(UserError, match="'code' or 'paper'"):
        RPCConfig(threshold="book").validate(4)
    with pytest.raises(UserError, match="comma-separated block indices"):
        parse_layers("first,2")
