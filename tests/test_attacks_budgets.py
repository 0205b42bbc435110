"""Eps parsing, option validation, budget verification and the L1 projections."""

from __future__ import annotations

import pytest
import torch

from robustbench_rpc.attacks import ATTACKS, build_attack_spec, parse_eps
from robustbench_rpc.attacks.budgets import (
    BudgetViolationError,
    check_budget,
    format_eps,
    perturbation_norms,
)
from robustbench_rpc.attacks.registry import AttackSpec, parse_options
from robustbench_rpc.attacks.sld import percentile_mask, project_l1_ball, project_l1_box
from robustbench_rpc.errors import UserError


def test_parse_eps_forms():
    assert parse_eps("8/255") == [8 / 255]
    assert parse_eps("0.03") == [0.03]
    assert parse_eps("1/255, 2/255") == [1 / 255, 2 / 255]
    assert parse_eps("1/255:6/255") == pytest.approx([i / 255 for i in range(1, 7)], abs=0)
    assert parse_eps("0:0.1:0.05") == pytest.approx([0.0, 0.05, 0.1])
    assert parse_eps("2/255,1/255:3/255") == [2 / 255, 1 / 255, 3 / 255]  # duplicates dropped, order kept
    assert parse_eps("3", norm="L2") == [3.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8", "did you mean 8/255"),
        ("-1/255", "negative"),
        ("abc", "Cannot read eps"),
        ("1/0", "division by zero"),
        ("6/255:1/255", "backwards"),
        ("1/255:2/255:0", "step"),
        ("", "No eps"),
        ("1/255,,2/255", "Empty item"),
        ("300", "above 1"),
    ],
)
def test_parse_eps_errors(text, message):
    with pytest.raises(UserError, match=message):
        parse_eps(text)


def test_eps_above_one_hint_only_for_linf():
    with pytest.raises(UserError) as info:
        parse_eps("8")
    assert "8/255" in str(info.value) and "\n" not in str(info.value)
    assert parse_eps("8", norm="L1") == [8.0]


def test_format_eps_round_trip():
    for eps in [1 / 255, 8 / 255, 0.03, 0.5]:
        assert parse_eps(format_eps(eps), norm="L2")[0] == pytest.approx(eps, rel=1e-12)
    assert format_eps(8 / 255) == "8/255"


def test_build_spec_fills_defaults_and_coerces_strings():
    spec = build_attack_spec("PGD", "linf", "4/255", **parse_options(["steps=7", "random_start=false"]))
    assert spec == AttackSpec(
        "pgd", "Linf", 4 / 255, {**ATTACKS["pgd"].defaults, "steps": 7, "random_start": False}
    )
    params = spec.to_params()
    assert params["options"]["rel_stepsize"] == 0.15 and params["threat_model"] == "pixel"
    assert AttackSpec.from_params(params) == spec
    assert build_attack_spec("pgd", eps=0.5, abs_stepsize="1/255").params["abs_stepsize"] == 1 / 255


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_attack_spec("pgdd"), "Unknown attack 'pgdd' \\(did you mean 'pgd'"),
        (lambda: build_attack_spec("nope"), "known attacks: pgd, fgsm, spsa, sld, cw, noise, square"),
        (lambda: build_attack_spec("fgsm", "L2"), "does not support the L2 norm; it supports Linf"),
        (lambda: build_attack_spec("pgd", eps=8), "did you mean 8/255"),
        (lambda: build_attack_spec("pgd", eps=-0.1), "negative"),
        (lambda: build_attack_spec("pgd", queries=10), "has no option 'queries'.*steps, rel_stepsize"),
        (lambda: build_attack_spec("fgsm", steps=10), "its options are: attack_dtype, bpda"),
        (lambda: build_attack_spec("pgd", steps="many"), "must be a int"),
        (lambda: build_attack_spec("pgd", steps=-1), ">= 0"),
        (lambda: build_attack_spec("square", loss="l2"), "must be one of margin, ce"),
        (lambda: build_attack_spec("autoattack", version="fast"), "standard, plus, rand"),
        (lambda: build_attack_spec("pgd", norm="L3"), "Unknown norm"),
        (lambda: parse_options(["steps"]), "expected key=value"),
    ],
)
def test_bad_input_is_one_user_error(call, message):
    with pytest.raises(UserError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_norms_and_check_budget():
    clean = torch.zeros(2, 3, 4, 4)
    adv = clean.clone()
    adv[0, 0, 0, 0] = 0.3
    adv[0, 1, 0, 0] = 0.4
    norms = perturbation_norms(clean, adv)
    assert norms["Linf"].tolist() == pytest.approx([0.4, 0.0])
    assert norms["L2"].tolist() == pytest.approx([0.5, 0.0])
    assert norms["L1"].tolist() == pytest.approx([0.7, 0.0])
    check_budget(clean, adv, "L2", 0.5)
    check_budget(clean, adv, "Linf", 0.4)
    with pytest.raises(BudgetViolationError, match="sample 0 has norm"):
        check_budget(clean, adv, "L1", 0.69)
    with pytest.raises(BudgetViolationError, match="outside"):
        check_budget(clean, adv - 0.1, "Linf", 1.0)
    with pytest.raises(BudgetViolationError, match="NaN"):
        check_budget(clean, adv * float("nan"), "Linf", 1.0)
    # float32 rounding is tolerated, a real excess is not
    check_budget(clean, clean + 0.1 + 1e-8, "Linf", 0.1, box=None)
    with pytest.raises(BudgetViolationError):
        check_budget(clean, clean + 0.1 + 1e-5, "Linf", 0.1, box=None)
    assert not issubclass(BudgetViolationError, UserError)


def _reference_l1_ball(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Bisection on the soft threshold (float64), row by row."""
    out = []
    for row in v.flatten(1).double():
        if row.abs().sum() <= eps:
            out.append(row)
            continue
        lo, hi = 0.0, float(row.abs().max())
        for _ in range(200):
            mid = (lo + hi) / 2
            if (row.abs() - mid).clamp_min(0).sum() > eps:
                lo = mid
            else:
                hi = mid
        out.append(row.sign() * (row.abs() - hi).clamp_min(0))
    return torch.stack(out).view_as(v)


def test_project_l1_ball_matches_bisection():
    torch.manual_seed(0)
    v = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    for eps in [0.5, 3.0, 100.0]:
        p = project_l1_ball(v, eps)
        assert torch.allclose(p, _reference_l1_ball(v, eps), atol=1e-9)
        assert (p.flatten(1).abs().sum(1) <= eps + 1e-9).all()


def test_project_l1_box_is_the_euclidean_projection():
    torch.manual_seed(1)
    v = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    x = torch.rand(4, 2, 5, 5, dtype=torch.float64)
    lower, upper = -x, 1 - x
    eps = 2.0
    p = project_l1_box(v, lower, upper, eps)
    assert (p >= lower - 1e-12).all() and (p <= upper + 1e-12).all()
    assert torch.allclose(p.flatten(1).abs().sum(1), torch.full((4,), eps, dtype=torch.float64), atol=1e-9)
    # Variational inequality: <v - p, y - p> <= 0 for every feasible y.
    for _ in range(200):
        y = torch.rand_like(v) * (upper - lower) + lower
        y = project_l1_ball(y, eps * float(torch.rand(1)))
        y = torch.clamp(y, lower, upper)
        inner = ((v - p) * (y - p)).flatten(1).sum(1)
        assert (inner <= 1e-9).all()
    # Without binding box it is the plain L1-ball projection; inside the budget it is the box clip.
    big = torch.full_like(v, 1e9)
    assert torch.allclose(project_l1_box(v, -big, big, eps), project_l1_ball(v, eps), atol=1e-9)
    assert torch.allclose(project_l1_box(v, lower, upper, 1e9), torch.clamp(v, lower, upper))


def test_percentile_mask_keeps_the_top_coordinates():
    grad = torch.arange(100, dtype=torch.float32).view(1, 1, 10, 10) - 50
    mask = percentile_mask(grad, 90.0)
    assert int(mask.sum()) == 11  # |g| >= the 90th percentile of |g|
    assert mask.view(-1)[0] and not mask.view(-1)[50]
