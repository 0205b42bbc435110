"""The paper preset, the compatibility mode (normalized space, no clamping, clean predictions), RPC attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_attacks_helpers import single_thread, tiny_batch  # noqa: F401
from torch import nn

from robustbench_rpc.attacks import PROTOCOLS, build_attack_spec, protocol_specs, run_attack
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.attention import RPCConfig, SymmetricAttention
from robustbench_rpc.models.wrapper import NormalizedModel

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalized_model(seed: int = 0) -> NormalizedModel:
    torch.manual_seed(seed)
    inner = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(128, 10)
    )
    return NormalizedModel(inner, MEAN, STD).eval()


def test_paper_pixel_preset():
    specs = PROTOCOLS["paper-pixel"]
    assert [s.name for s in specs] == ["pgd"] * 6 + ["fgsm"] * 6 + ["spsa"] * 6 + ["autoattack"] * 6 + ["sld", "noise"]
    assert [round(s.eps * 255, 9) for s in specs[:6]] == [1, 2, 3, 4, 5, 6]
    assert all(s.norm == "Linf" for s in specs if s.name != "sld")
    assert specs[0].params["steps"] == 20 and specs[0].params["rel_stepsize"] == 0.15
    assert specs[12].params["steps"] == 10
    assert protocol_specs("Paper-Pixel") == specs
    with pytest.raises(UserError, match="Unknown protocol 'papr' \\(did you mean 'paper'"):
        protocol_specs("papr")


def test_compat_normalized_matches_a_plain_pgd_in_normalized_space():
    model = normalized_model()
    images, true_labels = tiny_batch(6, seed=2)
    images[0] = 0.0  # on the box boundary: compat mode must not clamp
    eps, step, steps = 3 / 255, 0.15 * 3 / 255, 20
    spec = build_attack_spec("pgd", "Linf", eps, steps=steps, random_start=False)
    result = run_attack(model, images, true_labels, spec, seed=0, compat=True)
    # Reference: the official recipe, written out: normalized tensor, scalar eps, clean predictions, no clamp.
    x = model.normalize(images)
    with torch.no_grad():
        y = model.model(x).argmax(1)
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model.model(adv), y), adv)[0]
        adv = x + torch.clamp(adv.detach() + step * grad.sign() - x, -eps, eps)
    assert torch.equal(result.attack_labels, y)
    u_adv = model.normalize(result.adv)
    assert torch.allclose(u_adv, adv, atol=2e-6)
    assert float((u_adv - x).abs().max()) <= eps * (1 + 1e-4)
    assert float(result.adv.min()) < 0  # not clamped
    # pixel-space norms are eps * std per channel
    assert float(result.norm_linf.max()) == pytest.approx(eps * max(STD), rel=1e-3)
    assert result.records(true_labels)[0]["label"] == int(true_labels[0])
    assert result.compat == "normalized"
    assert spec.to_params(True)["threat_model"] == "compat-normalized"


def test_compat_pixel_uses_pixel_eps_without_clamping():
    model = normalized_model()
    images, labels = tiny_batch(6, seed=2)
    images[:2] = 1.0
    result = run_attack(model, images, labels, build_attack_spec("fgsm", eps=4 / 255), seed=0, compat="pixel")
    assert float(result.norm_linf.max()) == pytest.approx(4 / 255, rel=1e-4)
    assert float(result.adv.max()) > 1.0
    with torch.no_grad():
        assert torch.allclose(result.adv_logits, model(result.adv), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "norm", "eps"),
    [("spsa", "Linf", 2 / 255), ("sld", "L1", 2.0), ("square", "L2", 0.3), ("apgd-ce", "Linf", 2 / 255)],
)
def test_compat_budget_for_other_attacks(name, norm, eps):
    model = normalized_model()
    images, labels = tiny_batch(4, seed=2)
    options = {"spsa": {"steps": 2, "samples": 8}, "square": {"queries": 50}, "apgd-ce": {"steps": 5}}.get(
        name, {}
    )
    result = run_attack(
        model, images, labels, build_attack_spec(name, norm, eps, **options), seed=0, compat=True
    )
    delta = (model.normalize(result.adv) - model.normalize(images)).flatten(1)
    measured = {"Linf": delta.abs().amax(1), "L2": delta.norm(dim=1), "L1": delta.abs().sum(1)}[norm]
    assert float(measured.max()) <= eps * (1 + 1e-4)
    assert float(measured.max()) > 0


def test_compat_refusals():
    model = normalized_model()
    images, labels = tiny_batch(2)
    with pytest.raises(UserError, match="'cw' does not support the compatibility mode"):
        run_attack(model, images, labels, build_attack_spec("cw", eps=0.5), seed=0, compat=True)
    with pytest.raises(UserError, match="Unknown compatibility mode"):
        run_attack(model, images, labels, build_attack_spec("fgsm"), seed=0, compat="weird")


class TinyRPCViT(nn.Module):
    """Patch embedding, one RPC symmetric-attention block, mean pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.norm = nn.LayerNorm(16)
        self.attn = SymmetricAttention(dim=16, num_heads=2, rpc=RPCConfig(iters=2, lam=4.0))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed((x - 0.5) * 4).flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm(tokens))
        return self.head(tokens.mean(1))


def test_attacks_differentiate_through_rpc_attention():
    model = TinyRPCViT().eval()
    images, _ = tiny_batch(6, seed=4)
    with torch.no_grad():
        labels = model(images).argmax(1)
    x = images.clone().requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(x), labels), x)[0]
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    attn_grad = torch.autograd.grad(F.cross_entropy(model(x), labels), model.attn.qkv.weight)[0]
    assert float(attn_grad.abs().sum()) > 0  # the gradient flows through PAP
    spec = build_attack_spec("pgd", "Linf", 8 / 255, steps=10)
    result = run_attack(model, images, labels, spec, seed=0)
    assert float(result.norm_linf.max()) <= 8 / 255 * (1 + 1e-6)
    assert torch.isfinite(result.adv_logits).all()
    assert (result.adv_logits.argmax(1) != labels).any()
