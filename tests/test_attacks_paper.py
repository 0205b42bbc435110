"""Threat model ``paper``: each official computation against an independent re-computation written here.

The references follow CleverHans' PyTorch attacks as the official evaluation called them (normalized tensor, no
labels, no bounds), written in their own per-sample style; they share no code with robustbench_rpc.attacks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_attacks_helpers import single_thread, tiny_batch  # noqa: F401
from torch import nn

from robustbench_rpc.attacks import PROTOCOLS, build_attack_spec, protocol_specs, run_attack
from robustbench_rpc.attacks.protocol import protocol_threat_model
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.wrapper import NormalizedModel

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def model_and_batch(n: int = 4, seed: int = 0) -> tuple[NormalizedModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    inner = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(96, 10))
    model = NormalizedModel(inner, MEAN, STD).eval()
    images, labels = tiny_batch(n, seed=3)
    return model, images, labels


def normalized(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def ref_margin(logits, y):
    out = []
    for row, label in zip(logits, y, strict=True):
        others = [float(v) for j, v in enumerate(row) if j != int(label)]
        out.append(max(others) - float(row[int(label)]))
    return torch.tensor(out)


def ref_spsa(f, x, eps, steps, samples, delta, lr):
    """CleverHans spsa: per image; its loss_fn adds x to the x + delta_x the estimator passes."""
    y = f(x).argmax(1)
    advs = []
    for xi, yi in zip(x, y, strict=True):
        xi = xi.unsqueeze(0)
        pert = (torch.rand_like(xi) * 2 - 1) * eps
        pert.add_((xi + torch.clamp(pert, -eps, eps) - xi) - pert)
        opt = torch.optim.Adam([pert], lr=lr)

        def loss_fn(p, xi=xi, yi=yi):
            return -1 * ref_margin(f(xi + p), yi.repeat(len(p)))

        for _ in range(steps):
            xb = xi.expand(samples, -1, -1, -1)
            dx = delta * torch.sign(torch.rand_like(xb) - 0.5)
            dx = torch.cat([dx, -dx])
            with torch.no_grad():
                vals = loss_fn(xi + dx).view(-1, 1, 1, 1)
            pert.grad = torch.mean(vals * torch.sign(dx), dim=0, keepdim=True) / delta
            opt.step()
            pert.add_((xi + torch.clamp(pert, -eps, eps) - xi) - pert)
        advs.append(xi + pert)
    return torch.cat(advs)


def test_paper_spsa_estimates_at_two_x_plus_delta():
    model, images, labels = model_and_batch()
    eps = 4 / 255
    spec = build_attack_spec("spsa", "Linf", eps, steps=3, samples=16, delta=0.01, lr=0.01)
    result = run_attack(model, images, labels, spec, seed=7, compat="paper")
    torch.manual_seed(7)
    with torch.no_grad():
        expected = ref_spsa(model.model, normalized(images), eps, 3, 16, 0.01, 0.01)
    u_adv = normalized(result.adv)
    assert torch.allclose(u_adv, expected, atol=1e-5)
    assert float((u_adv - normalized(images)).abs().max()) <= eps + 1e-6
    assert int(result.queries[0]) == 2 * 16 * 3
    assert torch.equal(result.attack_labels, model.model(normalized(images)).argmax(1))
    # the defect matters: an estimator at x + delta gives another result
    torch.manual_seed(7)
    with torch.no_grad():
        honest = _ref_spsa_at_x(model.model, normalized(images), eps)
    assert not torch.allclose(honest, expected, atol=1e-4)
    assert spec.to_params("paper")["threat_model"] == "paper"


def _ref_spsa_at_x(f, x, eps):
    """The same recipe with the estimate at x + delta (what SPSA means), to show the defect changes the result."""
    y = f(x).argmax(1)
    out = []
    for xi, yi in zip(x, y, strict=True):
        xi = xi.unsqueeze(0)
        pert = (torch.rand_like(xi) * 2 - 1) * eps
        opt = torch.optim.Adam([pert], lr=0.01)
        for _ in range(3):
            dx = 0.01 * torch.sign(torch.rand_like(xi.expand(16, -1, -1, -1)) - 0.5)
            dx = torch.cat([dx, -dx])
            vals = -ref_margin(f(xi + dx), yi.repeat(32)).view(-1, 1, 1, 1)
            pert.grad = torch.mean(vals * torch.sign(dx), dim=0, keepdim=True) / 0.01
            opt.step()
            pert.clamp_(-eps, eps)
        out.append(xi + pert)
    return torch.cat(out)


def test_paper_sld_parameters_ties_and_l1_rescaling():
    model, images, labels = model_and_batch()
    spec = protocol_specs("paper")[-2]
    assert (spec.name, spec.norm, spec.eps) == ("sld", "L1", 10.0)
    assert (spec.params["abs_stepsize"], spec.params["steps"], spec.params["sparsity"]) == (1.0, 20, 99.0)
    result = run_attack(model, images, labels, spec, seed=0, compat="paper")
    x = normalized(images)
    f = model.model
    with torch.no_grad():
        y = f(x).argmax(1)
    adv = x.clone()
    d = x[0].numel()
    k = int(0.99 * d)
    for _ in range(20):
        adv = adv.detach().requires_grad_(True)
        grad = torch.autograd.grad(torch.nn.CrossEntropyLoss(reduction="none")(f(adv), y).mean(), adv)[0]
        steps = []
        for g in grad:
            flat = g.flatten()
            kth = np.sort(flat.abs().numpy())[k - 1]
            tied = (flat.abs() >= float(kth)).float()
            steps.append((torch.sign(flat) * tied / tied.sum()).view_as(g))
        adv = adv.detach() + torch.stack(steps) * 1.0
        eta = adv - x
        l1 = eta.flatten(1).abs().sum(1)
        factor = torch.where(l1 > 10.0, 10.0 / (l1 + 1e-7), torch.ones_like(l1))
        adv = x + eta * factor.view(-1, 1, 1, 1)
    u_adv = normalized(result.adv)
    assert torch.allclose(u_adv, adv, atol=1e-5)
    assert float((u_adv - x).flatten(1).abs().sum(1).max()) <= 10.0 + 1e-4
    assert float((u_adv - x).flatten(1).abs().sum(1).max()) > 9.9  # 20 steps of 1 reach the budget


def test_paper_noise_is_uniform_03_in_normalized_space():
    model, images, labels = model_and_batch()
    spec = protocol_specs("paper")[-1]
    assert (spec.name, spec.eps) == ("noise", 0.3)
    result = run_attack(model, images, labels, spec, seed=5, compat="paper")
    torch.manual_seed(5)
    x = normalized(images)
    expected = x + torch.FloatTensor(*x.shape).uniform_(-0.3, 0.3)
    assert torch.allclose(normalized(result.adv), expected, atol=1e-6)
    assert float(result.adv.max()) > 1.0 or float(result.adv.min()) < 0.0  # not clamped to pixels


def ref_cw(f, x, n_classes, confidence, steps, lr, const0, search=5):
    """CleverHans carlini_wagner_l2 (untargeted, clip 0..1) with its per-sample bookkeeping."""
    y = torch.argmax(f(x), 1)
    n = len(x)
    lower, upper = [0.0] * n, [1e10] * n
    const = x.new_ones(n, 1) * const0
    o_bestl2, o_bestscore = [float("inf")] * n, [-1.0] * n
    x = torch.clamp(x, 0, 1)
    ox = x.clone().detach()
    o_best = x.clone().detach()
    w = torch.arctanh((torch.clamp((x - 0) / (1 - 0), 0, 1) * 2 - 1) * 0.999999)
    modifier = torch.zeros_like(w, requires_grad=True)
    onehot = F.one_hot(y, n_classes).to(torch.float)
    opt = torch.optim.Adam([modifier], lr=lr)
    for _ in range(search):
        bestl2, bestscore = [float("inf")] * n, [-1.0] * n
        for _ in range(steps):
            new_x = (torch.tanh(modifier + w) + 1) / 2 * (1 - 0) + 0
            logits = f(new_x)
            real = torch.sum(onehot * logits, 1)
            other, _ = torch.max((1 - onehot) * logits - onehot * 1e4, 1)
            opt.zero_grad()
            fval = torch.max(real - other + confidence, torch.tensor(0.0))
            l2 = torch.pow(new_x - ox, 2).sum([1, 2, 3])
            (const * fval + l2).sum().backward()
            opt.step()
            for i in range(n):
                shifted = logits[i].clone().detach()
                shifted[y[i]] += confidence
                ok = torch.argmax(shifted) != y[i]
                if l2[i] < o_bestl2[i] and ok:
                    o_bestl2[i], o_bestscore[i] = l2[i], torch.argmax(logits[i])
                    o_best[i] = new_x[i]
                    bestl2[i], bestscore[i] = l2[i], torch.argmax(logits[i])
                elif l2[i] < bestl2[i] and ok:
                    bestl2[i], bestscore[i] = l2[i], torch.argmax(logits[i])
        for i in range(n):
            if bestscore[i] != y[i] and bestscore[i] != -1:
                upper[i] = min(upper[i], const[i])
                if upper[i] < 1e9:
                    const[i] = (lower[i] + upper[i]) / 2
            else:
                lower[i] = max(lower[i], const[i])
                if upper[i] < 1e9:
                    const[i] = (lower[i] + upper[i]) / 2
                else:
                    const[i] *= 10
    return o_best.detach()


def test_paper_cw_binary_search_and_clamp_of_the_normalized_input():
    model, images, labels = model_and_batch(n=5)
    eps = 2 / 255
    spec = build_attack_spec("cw", "L2", eps, c=0.01, steps=6, lr=0.05)
    result = run_attack(model, images, labels, spec, seed=0, compat="paper")
    expected = ref_cw(model.model, normalized(images), 10, eps, 6, 0.05, 0.01)
    u_adv = normalized(result.adv)
    assert torch.allclose(u_adv, expected, atol=1e-5)
    # the clamp: every coordinate of the returned normalized tensor lies in [0, 1]
    assert float(u_adv.min()) >= 0.0 and float(u_adv.max()) <= 1.0
    assert float(normalized(images).min()) < -0.5  # while the clean normalized input does not
    paper = [s for s in PROTOCOLS["paper"] if s.name == "cw"]
    assert [round(s.eps * 255) for s in paper] == [1, 2, 3, 4, 5, 6]
    assert (paper[0].params["c"], paper[0].params["steps"], paper[0].params["lr"]) == (0.01, 1000, 0.005)


def test_paper_pgd_runs_in_normalized_space_and_is_labelled_paper():
    model, images, labels = model_and_batch()
    spec = build_attack_spec("pgd", "Linf", 3 / 255, steps=5, random_start=False)
    result = run_attack(model, images, labels, spec, seed=0, compat="paper")
    x = normalized(images)
    with torch.no_grad():
        y = model.model(x).argmax(1)
    adv = x.clone()
    for _ in range(5):
        adv.requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model.model(adv), y), adv)[0]
        adv = x + torch.clamp(adv.detach() + 0.15 * 3 / 255 * grad.sign() - x, -3 / 255, 3 / 255)
    assert torch.allclose(normalized(result.adv), adv, atol=2e-6)
    assert result.compat == "paper"


def test_paper_protocol_lists_the_seven_attacks_and_its_threat_model():
    names = [s.name for s in PROTOCOLS["paper"]]
    assert names == ["pgd"] * 6 + ["fgsm"] * 6 + ["spsa"] * 6 + ["cw"] * 6 + ["autoattack"] * 6 + ["sld", "noise"]
    pixel = PROTOCOLS["paper-pixel"]
    assert "cw" not in {s.name for s in pixel}
    assert pixel[-1].eps == pytest.approx(0.3 * 0.226) and pixel[-2].eps == pytest.approx(2.26)
    assert protocol_threat_model("paper", None) == "paper"
    assert protocol_threat_model("paper-pixel", None) is False
    with pytest.raises(UserError, match="--protocol paper runs in threat model paper; drop --compat normalized"):
        protocol_threat_model("paper", "normalized")
    with pytest.raises(UserError, match="Unknown protocol 'papr' \\(did you mean 'paper'"):
        protocol_specs("papr")


def test_paper_threat_model_needs_a_normalized_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 10)).eval()
    images, labels = tiny_batch(2)
    with pytest.raises(UserError, match="needs a NormalizedModel"):
        run_attack(model, images, labels, build_attack_spec("noise", eps=0.1), seed=0, compat="paper")


def test_paper_fgsm_is_one_signed_step_in_normalized_space():
    model, images, labels = model_and_batch()
    result = run_attack(model, images, labels, build_attack_spec("fgsm", "Linf", 2 / 255), seed=0, compat="paper")
    x = normalized(images).requires_grad_(True)
    y = model.model(x).argmax(1)
    grad = torch.autograd.grad(F.cross_entropy(model.model(x), y), x)[0]
    assert torch.allclose(normalized(result.adv), x.detach() + 2 / 255 * grad.sign(), atol=2e-6)
