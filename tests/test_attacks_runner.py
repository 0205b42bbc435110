"""run_attack: budgets for every attack and norm, clamping, records, determinism, sweeps and --save-adv."""

from __future__ import annotations

import pytest
import torch
from test_attacks_helpers import single_thread, tiny_batch, tiny_convnet, tiny_linear  # noqa: F401

from robustbench_rpc.attacks import ATTACKS, attack_metrics, build_attack_spec, run_attack
from robustbench_rpc.attacks.budgets import BudgetViolationError
from robustbench_rpc.attacks.saving import load_adversarial, save_adversarial
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.schema import ATTACK_COLUMNS, BASE_COLUMNS

EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 4.0}
FAST = {
    "spsa": {"steps": 2, "samples": 8},
    "square": {"queries": 100},
    "apgd-ce": {"steps": 10},
    "apgd-dlr": {"steps": 10},
    "cw": {"steps": 10, "c": 10.0},
}
CASES = [(name, norm) for name, d in ATTACKS.items() for norm in d.norms]


@pytest.fixture(scope="module")
def model():
    return tiny_convnet()


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_budget_clamp_and_records_for_every_attack(model, name, norm):
    images, labels = tiny_batch(6)
    images[0] = 0.0  # pixels on the box boundary
    images[1] = 1.0
    # AutoAttack with a budget that APGD-CE always wins (its full pipeline is tested on its own, below)
    eps = EPS[norm] * (20 if name == "autoattack" else 1)
    spec = build_attack_spec(name, norm, eps, **FAST.get(name, {}))
    surrogate = tiny_convnet(seed=3) if ATTACKS[name].transfer else None
    result = run_attack(model, images, labels, spec, seed=0, surrogate=surrogate)
    assert result.adv.shape == images.shape
    assert float(result.adv.min()) >= 0 and float(result.adv.max()) <= 1
    measured = {"Linf": result.norm_linf, "L2": result.norm_l2, "L1": result.norm_l1}[norm]
    assert float(measured.max()) <= eps * (1 + 1e-5)
    delta = (result.adv - images).flatten(1)
    assert torch.allclose(result.norm_linf, delta.abs().amax(1), atol=1e-7)
    assert torch.allclose(result.norm_l2, delta.norm(dim=1), atol=1e-6)
    assert torch.allclose(result.adv_logits, model(result.adv), atol=1e-6)
    rows = result.records(labels, index_offset=10, sample_ids=[f"s{i}" for i in range(6)])
    assert set(rows[0]) == set(BASE_COLUMNS) | set(ATTACK_COLUMNS)
    assert [r["index"] for r in rows] == list(range(10, 16)) and rows[2]["sample_id"] == "s2"
    for r, logit in zip(rows, result.adv_logits, strict=True):
        assert r["pred"] == int(logit.argmax()) == r["top5"][0] and len(r["top5"]) == 5
        assert r["correct1"] == (r["pred"] == r["label"])
        assert r["success"] == (r["clean_correct"] and not r["correct1"])
    if ATTACKS[name].black_box or ATTACKS[name].transfer:
        assert (result.queries >= 0).all()
    else:
        assert (result.queries == -1).all()


def test_spsa_and_square_query_counts(model):
    images, labels = tiny_batch(4, model=model)
    spsa = run_attack(
        model, images, labels, build_attack_spec("spsa", eps=4 / 255, steps=3, samples=8), seed=0
    )
    assert spsa.queries.tolist() == [48] * 4
    square = run_attack(model, images, labels, build_attack_spec("square", eps=1 / 255, queries=50), seed=0)
    fooled = square.adv_logits.argmax(1) != labels
    # one query for the random start, then one per iteration until the sample is fooled
    assert all(2 <= q <= 51 for q in square.queries.tolist())
    assert all(q == 51 for q, f in zip(square.queries.tolist(), fooled, strict=True) if not f)


def test_large_eps_breaks_an_undefended_linear_model():
    model = tiny_linear()
    images, labels = tiny_batch(16, model=model)
    for name, opts in [("pgd", {}), ("apgd-ce", {"steps": 20}), ("fgsm", {})]:
        result = run_attack(model, images, labels, build_attack_spec(name, "Linf", 0.5, **opts), seed=0)
        records = result.records(labels)
        metrics = attack_metrics(records)
        assert metrics["clean_top1"] == 1.0
        if name != "fgsm":
            assert metrics["robust_top1"] == 0.0 and metrics["success_rate"] == 1.0
        else:
            assert metrics["robust_top1"] < 0.5


def test_pgd_robust_accuracy_is_monotone_in_eps(model):
    images, labels = tiny_batch(48, seed=3, model=model)
    accuracies = []
    for eps in [0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255]:
        result = run_attack(model, images, labels, build_attack_spec("pgd", "Linf", eps, steps=10), seed=0)
        accuracies.append(attack_metrics(result.records(labels))["robust_top1"])
    assert accuracies[0] == 1.0 and accuracies[-1] < 0.5
    assert all(a >= b for a, b in zip(accuracies, accuracies[1:], strict=False)), accuracies


@pytest.mark.parametrize("name", ["pgd", "spsa", "noise", "square", "autoattack"])
def test_seed_repeats_bit_for_bit_and_restores_the_rng(model, name):
    images, labels = tiny_batch(4, model=model)
    spec = build_attack_spec(name, eps=(0.3 if name == "autoattack" else 4 / 255), **FAST.get(name, {}))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = run_attack(model, images, labels, spec, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    second = run_attack(model, images, labels, spec, seed=7)
    assert torch.equal(first.adv, second.adv)
    if name in ("noise", "pgd"):
        other = run_attack(model, images, labels, spec, seed=8)
        assert not torch.equal(first.adv, other.adv)


def test_budget_violation_is_an_error(monkeypatch, model):
    from robustbench_rpc.attacks import torchattacks_adapter
    from robustbench_rpc.attacks.base import AttackOutput

    def broken_fgsm(model, spec, ctx):
        return lambda images, labels: AttackOutput(adv=(images + 3 * spec.eps).clamp(0, 1))

    monkeypatch.setattr(torchattacks_adapter, "make_fgsm", broken_fgsm)
    images, labels = tiny_batch(4)
    with pytest.raises(BudgetViolationError, match="exceeded its Linf budget"):
        run_attack(model, images, labels, build_attack_spec("fgsm", eps=2 / 255), seed=0)


def test_eps_zero_returns_clean_images(model):
    images, labels = tiny_batch(4)
    result = run_attack(model, images, labels, build_attack_spec("pgd", "L2", 0.0), seed=0)
    assert torch.equal(result.adv, images) and float(result.norm_l2.max()) == 0.0


def test_bad_inputs(model):
    images, labels = tiny_batch(4)
    spec = build_attack_spec("fgsm")
    with pytest.raises(UserError, match=r"pixels in \[0, 1\]"):
        run_attack(model, images * 2, labels, spec, seed=0)
    with pytest.raises(UserError, match="Expected 4 labels"):
        run_attack(model, images, labels[:2], spec, seed=0)
    with pytest.raises(UserError, match="needs a NormalizedModel"):
        run_attack(model, images, labels, spec, seed=0, compat=True)
    with pytest.raises(UserError, match="at least 4 classes"):
        run_attack(tiny_convnet(3), images, labels % 3, build_attack_spec("autoattack"), seed=0)


def test_model_mode_is_restored(model):
    images, labels = tiny_batch(2)
    model.train()
    run_attack(model, images, labels, build_attack_spec("fgsm"), seed=0)
    assert model.training
    model.eval()


def test_save_adversarial_round_trip(tmp_path, model):
    images, labels = tiny_batch(6)
    spec = build_attack_spec("pgd", eps=4 / 255, steps=3)
    first = run_attack(model, images[:4], labels[:4], spec, seed=0)
    second = run_attack(model, images[4:], labels[4:], spec, seed=0)
    save_adversarial(tmp_path, first, images[:4], labels[:4], index_offset=0, n_png=5)
    save_adversarial(tmp_path, second, images[4:], labels[4:], index_offset=4, sample_ids=["a", "b"], n_png=5)
    loaded = load_adversarial(tmp_path)
    assert torch.equal(loaded["adv"], torch.cat([first.adv, second.adv]))
    assert torch.equal(loaded["labels"], labels) and loaded["index"].tolist() == list(range(6))
    assert loaded["sample_ids"] == ["0", "1", "2", "3", "a", "b"]
    assert loaded["spec"] == spec.to_params()
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert len(pngs) == 15 and "000004_adv.png" in pngs and "000005_adv.png" not in pngs
    assert not list(tmp_path.glob("*.tmp"))


def test_autoattack_standard_with_fewer_than_ten_classes():
    model = tiny_convnet(5)
    images, labels = tiny_batch(3, model=model)
    result = run_attack(model, images, labels, build_attack_spec("autoattack", "Linf", 1 / 255), seed=0)
    log = "\n".join(result.log)
    for attack in ("APGD-CE", "APGD-T", "FAB-T", "SQUARE"):
        assert f"robust accuracy after {attack}" in log
    assert float(result.norm_linf.max()) <= 1 / 255 * (1 + 1e-5)
