"""Our pipeline returns exactly what torchattacks / pyautoattack return when called directly on the same inputs."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack
from test_attacks_helpers import single_thread, tiny_batch, tiny_convnet  # noqa: F401

from robustbench_rpc.attacks import build_attack_spec, run_attack
from robustbench_rpc.attacks.autoattack_adapter import build_autoattack, target_classes
from robustbench_rpc.attacks.base import AttackContext

SEED = 11


@pytest.fixture(scope="module")
def setup():
    model = tiny_convnet()
    images, labels = tiny_batch(8, seed=5)
    return model, images, labels


def _direct(attack_factory, images, labels):
    torch.manual_seed(SEED)
    return attack_factory()(images, labels)


@pytest.mark.parametrize(
    ("name", "norm", "eps", "options", "direct"),
    [
        (
            "pgd",
            "Linf",
            4 / 255,
            {},
            lambda m: torchattacks.PGD(m, eps=4 / 255, alpha=0.15 * 4 / 255, steps=20),
        ),
        (
            "pgd",
            "L2",
            0.3,
            {"steps": 7, "abs_stepsize": 0.05},
            lambda m: torchattacks.PGDL2(m, eps=0.3, alpha=0.05, steps=7),
        ),
        ("fgsm", "Linf", 2 / 255, {}, lambda m: torchattacks.FGSM(m, eps=2 / 255)),
        (
            "spsa",
            "Linf",
            4 / 255,
            {"steps": 3, "samples": 16},
            lambda m: torchattacks.SPSA(m, eps=4 / 255, nb_iter=3, nb_sample=16),
        ),
        (
            "square",
            "Linf",
            2 / 255,
            {"queries": 200},
            lambda m: torchattacks.Square(m, eps=2 / 255, n_queries=200, seed=SEED),
        ),
        (
            "square",
            "L2",
            0.2,
            {"queries": 200, "restarts": 2},
            lambda m: torchattacks.Square(m, norm="L2", eps=0.2, n_queries=200, n_restarts=2, seed=SEED),
        ),
        ("cw", "L2", 100.0, {"steps": 20, "c": 5.0}, lambda m: torchattacks.CW(m, c=5.0, steps=20)),
    ],
)
def test_equal_to_torchattacks(setup, name, norm, eps, options, direct):
    model, images, labels = setup
    ours = run_attack(model, images, labels, build_attack_spec(name, norm, eps, **options), seed=SEED)
    theirs = _direct(lambda: direct(model), images, labels).clamp(0, 1)
    assert torch.equal(ours.adv, theirs)


def test_cw_is_projected_on_the_l2_ball(setup):
    model, images, labels = setup
    ours = run_attack(model, images, labels, build_attack_spec("cw", "L2", 0.05, steps=20, c=5.0), seed=SEED)
    theirs = _direct(lambda: torchattacks.CW(model, c=5.0, steps=20), images, labels)
    delta = theirs - images
    norms = delta.flatten(1).norm(dim=1)
    assert float(norms.max()) > 0.05  # the projection matters in this case
    expected = images + delta * torch.clamp(0.05 / norms, max=1).view(-1, 1, 1, 1)
    assert torch.allclose(ours.adv, expected, atol=1e-7)


def test_noise_is_uniform_in_the_box(setup):
    model, images, labels = setup
    ours = run_attack(model, images, labels, build_attack_spec("noise", eps=8 / 255), seed=SEED)
    torch.manual_seed(SEED)
    expected = torch.clamp(images + (torch.rand_like(images) * 2 - 1) * (8 / 255), 0, 1)
    assert torch.equal(ours.adv, expected)


@pytest.mark.parametrize(
    ("name", "loss", "norm", "eps"), [("apgd-ce", "ce", "Linf", 2 / 255), ("apgd-dlr", "dlr", "L2", 0.2)]
)
def test_equal_to_pyautoattack_apgd(setup, name, loss, norm, eps):
    model, images, labels = setup
    ours = run_attack(model, images, labels, build_attack_spec(name, norm, eps, steps=15), seed=SEED)
    direct = APGDAttack(model, n_iter=15, norm=norm, eps=eps, seed=SEED, loss=loss, device="cpu")
    assert torch.equal(ours.adv, direct.perturb(images, labels))


def test_equal_to_pyautoattack_standard_with_capped_targets():
    model = tiny_convnet(5)
    images, labels = tiny_batch(3, model=model)
    ours = run_attack(model, images, labels, build_attack_spec("autoattack", "Linf", 1 / 255), seed=SEED)
    direct = AutoAttack(model, norm="Linf", eps=1 / 255, seed=SEED, version="standard", device="cpu")
    direct.apgd_targeted.n_target_classes = 4
    direct.fab.n_target_classes = 4
    x_adv, _ = direct.run_standard_evaluation(images, labels, batch_size=3)
    assert torch.equal(ours.adv, x_adv)


def test_target_class_counts():
    assert target_classes("standard", "Linf", 1000) == (9, 9)
    assert target_classes("standard", "Linf", 5) == (4, 4)
    assert target_classes("standard", "L1", 1000) == (5, 9)
    assert target_classes("standard", "L1", 4) == (3, 3)
    spec = build_attack_spec("autoattack", "L2", 0.5)
    adversary = build_autoattack(
        tiny_convnet(6), spec, AttackContext(seed=0, n_classes=6, device=torch.device("cpu"))
    )
    assert adversary.apgd_targeted.n_target_classes == 5 and adversary.fab.n_target_classes == 5
    assert str(adversary.device) == "cpu" and adversary.seed == 0
