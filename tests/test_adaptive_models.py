"""Adaptive-attack building blocks: BPDA through PAP, the PAP-free surrogate, straight-through transforms,
randomness detection, EOT and the float64 copy."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import robustbench_rpc
from robustbench_rpc.data.digits import load_digits_split
from robustbench_rpc.demo.train import embedded_checkpoint
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.adaptive import (
    EOTModel,
    cast_model,
    is_randomized,
    pap_backward_mode,
    pap_modules,
    prediction_stability,
    straight_through,
    without_pap,
)
from robustbench_rpc.models.attention import principal_attention_pursuit, symmetric_attention

PAP = dict(iters=4, lam=4.0, scale=5**-0.5, embed_dim=15)


@pytest.fixture(scope="module")
def rpc_symvit():
    return robustbench_rpc.load_model("rpc_symvit_digits_patch8_32", str(embedded_checkpoint("rpc_symvit")))


@pytest.fixture(scope="module")
def images():
    return load_digits_split("test").images[:6].clone()


def small_rpc_fan():
    torch.manual_seed(0)
    return timm.create_model(
        "rpc_fan_tiny_12_p16_224", img_size=64, embed_dim=32, depth=2, num_heads=2, num_classes=5, rpc_layers="all"
    ).eval()


def input_grad(model, x):
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum() - logits[:, 0].sum(), x)
    return logits.detach(), grad


def kv(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 7, 5, generator=gen, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 3, 7, 5, generator=gen, dtype=dtype, requires_grad=True)
    return k, v


# --- BPDA through PAP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bpda_value_is_pap_and_gradient_is_plain_attention(dtype):
    k, v = kv(dtype)
    exact = principal_attention_pursuit(k, v, **PAP)
    bpda = principal_attention_pursuit(k, v, **PAP, backward="bpda")
    assert torch.equal(bpda, exact)  # bit for bit
    assert bpda.requires_grad
    weights = torch.randn_like(exact)
    grads = torch.autograd.grad((bpda * weights).sum(), (k, v))
    want = torch.autograd.grad((symmetric_attention(k, v, PAP["scale"]) * weights).sum(), (k, v))
    for got, expected in zip(grads, want, strict=True):
        assert torch.equal(got, expected)
    exact_grads = torch.autograd.grad((exact * weights).sum(), (k, v))
    assert (exact_grads[0] - grads[0]).abs().max() > 1e-3  # the switch does something


def test_bpda_without_grad_is_the_exact_path():
    k, v = kv()
    with torch.no_grad():
        out = principal_attention_pursuit(k, v, **PAP, backward="bpda")
    assert not out.requires_grad
    assert torch.equal(out, principal_attention_pursuit(k.detach(), v.detach(), **PAP))
    # grad mode on but nothing requires grad: also the exact path (no surrogate is computed)
    assert torch.equal(principal_attention_pursuit(k.detach(), v.detach(), **PAP, backward="bpda"), out)


def test_unknown_backward_mode_is_refused():
    k, v = kv()
    with pytest.raises(UserError, match="'exact' or 'bpda'"):
        principal_attention_pursuit(k, v, **PAP, backward="straight")


@pytest.mark.parametrize("build", ["rpc_symvit", "rpc_fan"])
def test_bpda_model_keeps_logits_and_changes_the_gradient(build, rpc_symvit, images):
    if build == "rpc_symvit":
        model, x = rpc_symvit, images
    else:
        model, x = small_rpc_fan(), torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    logits, grad = input_grad(model, x)
    with pap_backward_mode(model, "bpda"):
        assert all(m.pap_backward == "bpda" for m in pap_modules(model))
        bpda_logits, bpda_grad = input_grad(model, x)
        with torch.no_grad():
            assert torch.equal(model(x), logits)
    assert torch.equal(bpda_logits, logits)
    rel = (bpda_grad - grad).norm() / grad.norm()
    assert rel > 1e-3, float(rel)
    assert all(m.pap_backward == "exact" for m in pap_modules(model))


def test_pap_modules_found_through_the_wrapper(rpc_symvit):
    found = pap_modules(rpc_symvit)
    assert found == [rpc_symvit.model.blocks[0].attn]  # PAP in the first block only (n=4, lambda 4)
    plain = robustbench_rpc.load_model("symvit_digits_patch8_32", str(embedded_checkpoint("symvit")))
    assert pap_modules(plain) == []
    assert len(pap_modules(small_rpc_fan())) == 2


def test_mode_is_restored_after_an_exception(rpc_symvit):
    layer = pap_modules(rpc_symvit)[0]
    layer.pap_backward = "exact"
    with pytest.raises(RuntimeError, match="boom"), pap_backward_mode(rpc_symvit, "bpda"):
        assert layer.pap_backward == "bpda"
        raise RuntimeError("boom")
    assert layer.pap_backward == "exact"
    # nested: the inner block restores the outer mode
    with pap_backward_mode(rpc_symvit, "bpda"):
        with pap_backward_mode(rpc_symvit, "exact"):
            assert layer.pap_backward == "exact"
        assert layer.pap_backward == "bpda"
    assert layer.pap_backward == "exact"


def test_bpda_on_a_model_without_pap_is_refused():
    plain = robustbench_rpc.load_model("symvit_digits_patch8_32", str(embedded_checkpoint("symvit")))
    no_pap = r"symvit_digits_patch8_32 has no PAP \(RPC attention\) layers, so bpda=true would change nothing"
    with pytest.raises(UserError, match=no_pap), pap_backward_mode(plain, "bpda"):
        pass
    with pap_backward_mode(plain, "exact"):  # nothing to do, nothing to refuse
        pass
    with pytest.raises(UserError, match="'exact' or 'bpda'"), pap_backward_mode(plain, "BPDA"):
        pass


# --- the PAP-free surrogate ----------------------------------------------------------------------------------------


def test_without_pap_is_symvit_with_the_same_weights(rpc_symvit, images):
    ckpt = str(embedded_checkpoint("rpc_symvit"))
    symvit = robustbench_rpc.load_model("symvit_digits_patch8_32", ckpt)
    plain = without_pap(rpc_symvit)
    assert plain is not rpc_symvit and pap_modules(plain) == []
    assert plain.model.rpc_description() == "off" and plain.info.rpc == "off"
    with torch.no_grad():
        got, want, rpc_logits = plain(images), symvit(images), rpc_symvit(images)
    assert torch.equal(got, want)
    assert (rpc_logits - want).abs().max() > 1e-3  # PAP matters on this model
    # the original is unchanged
    assert len(pap_modules(rpc_symvit)) == 1 and rpc_symvit.model.rpc is not None
    assert rpc_symvit.info.rpc.startswith("PAP n=4")
    with torch.no_grad():
        assert torch.equal(rpc_symvit(images), rpc_logits)
    assert without_pap(symvit) is None


def test_without_pap_on_rpc_fan_matches_symmetric_fan():
    rpc = small_rpc_fan()
    sym = timm.create_model(
        "symfan_tiny_12_p16_224", img_size=64, embed_dim=32, depth=2, num_heads=2, num_classes=5
    ).eval()
    sym.load_state_dict(rpc.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(without_pap(rpc)(x), sym(x))
    assert without_pap(rpc).rpc_description() == "off" and rpc.rpc is not None


# --- straight-through input transforms ----------------------------------------------------------------------------


class Round8Bit(nn.Module):
    def forward(self, x):
        return torch.round(x * 255) / 255


class Tiny(nn.Module):
    def __init__(self, quantize: bool = True):
        super().__init__()
        self.quantize = Round8Bit() if quantize else nn.Identity()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(self.quantize(x))


def test_straight_through_gives_the_identity_backward():
    model, smooth = Tiny(), Tiny(quantize=False)
    x = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    logits, grad = input_grad(model, x)
    assert torch.count_nonzero(grad) == 0  # rounding has zero gradient
    with straight_through(model, "quantize"):
        st_logits, st_grad = input_grad(model, x)
    assert torch.equal(st_logits, logits)  # forward unchanged (the rounded input)
    _, want = input_grad(smooth, Round8Bit()(x))  # the model without rounding, at the rounded point
    assert torch.count_nonzero(st_grad) > 0
    torch.testing.assert_close(st_grad, want, rtol=0, atol=0)
    _, after = input_grad(model, x)
    assert torch.count_nonzero(after) == 0  # hook removed on exit


def test_straight_through_names_through_the_wrapper_and_lists():
    from robustbench_rpc.models.wrapper import NormalizedModel

    wrapped = NormalizedModel(Tiny(), mean=(0.0,) * 3, std=(1.0,) * 3)
    x = torch.rand(2, 3, 2, 2, generator=torch.Generator().manual_seed(4))
    for names in ("quantize", "model.quantize", ["quantize"], "quantize, model.body.2", ("body.2", "quantize")):
        with straight_through(wrapped, names):
            _, grad = input_grad(wrapped, x)
        assert torch.count_nonzero(grad) > 0, names


def test_straight_through_refuses_unknown_names_and_shape_changes():
    model = Tiny()
    unknown = r"Tiny has no submodule named 'quantise' \(did you mean 'quantize'"
    with pytest.raises(UserError, match=unknown) as err, straight_through(model, "quantise"):
        pass
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"named .zzz. \(submodules include"), straight_through(model, ["zzz"]):
        pass
    with pytest.raises(UserError, match=r"maps shape \(2, 3, 2, 2\) to \(2, 12\)"), straight_through(model, "body.0"):
        model(torch.rand(2, 3, 2, 2))
    assert not model.body[0]._forward_hooks  # removed after the error too


# --- randomness, EOT, dtype ---------------------------------------------------------------------------------------


class Noisy(nn.Module):
    def __init__(self, sigma: float):
        super().__init__()
        self.inner = Tiny(quantize=False)
        self.sigma = sigma

    def forward(self, x):
        return self.inner(x + self.sigma * torch.randn_like(x))


def test_prediction_stability_flags_fresh_noise_only():
    x = torch.rand(16, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    noisy = Noisy(sigma=1.0).train()
    report = prediction_stability(noisy, x, repeats=4)
    assert report.randomized and report.logits_changed.all() and report.max_logit_diff > 1e-3
    assert report.pred_changed.dtype == torch.bool and report.pred_changed.shape == (16,)
    assert report.pred_changed.any()
    assert noisy.training and noisy.inner.training  # train/eval flags restored
    steady = prediction_stability(Tiny(), x, repeats=3)
    assert not steady.randomized and not steady.pred_changed.any() and steady.max_logit_diff == 0.0
    assert is_randomized(noisy, x) and not is_randomized(Tiny(), x)
    with pytest.raises(UserError, match="repeats >= 2"):
        prediction_stability(Tiny(), x, repeats=1)


def test_prediction_stability_tolerates_tiny_numerical_noise():
    class Jitter(nn.Module):
        def forward(self, x):
            logits = x.flatten(1)[:, :3] * 10
            return logits * (1 + 1e-7 * torch.randn_like(logits))

    report = prediction_stability(Jitter(), torch.rand(8, 3, 2, 2), repeats=3)
    assert not report.randomized and 0 < report.max_logit_diff <= report.tolerance


def test_eot_model_averages_the_draws():
    x = torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(6))
    noisy = Noisy(sigma=0.5)
    torch.manual_seed(7)
    draws = [noisy(x) for _ in range(5)]
    torch.manual_seed(7)
    torch.testing.assert_close(EOTModel(noisy, 5)(x), torch.stack(draws).mean(0), rtol=1e-6, atol=1e-6)
    torch.manual_seed(8)
    single = EOTModel(noisy, 1)(x)
    torch.manual_seed(8)
    assert torch.equal(single, noisy(x))
    # gradients average over the draws
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(9)
    EOTModel(noisy, 3)(xg).sum().backward()
    torch.manual_seed(9)
    grads = []
    for _ in range(3):
        xi = x.clone().requires_grad_(True)
        noisy(xi).sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(xg.grad, torch.stack(grads).mean(0))
    with pytest.raises(UserError, match="n >= 1"):
        EOTModel(noisy, 0)


def test_cast_model_float64_copy(rpc_symvit, images):
    double = cast_model(rpc_symvit, torch.float64)
    assert double is not rpc_symvit
    assert all(p.dtype == torch.float64 for p in double.parameters())
    assert double.mean.dtype == torch.float64 and double.std.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in rpc_symvit.parameters()) and rpc_symvit.mean.dtype == torch.float32
    with torch.no_grad():
        got, want = double(images.double()), rpc_symvit(images)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), want, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))
    with pytest.raises(UserError, match="floating-point torch dtype"):
        cast_model(rpc_symvit, torch.int64)
