"""Attack traces, the best-iterate rule and the adaptive-attack options of run_attack and the attack command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_attacks_helpers import single_thread, tiny_batch, tiny_convnet  # noqa: F401
from torch import nn

from robustbench_rpc.attacks import build_attack_spec, run_attack
from robustbench_rpc.cli.app import main
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.store import ResultsStore

ASSETS = Path(__file__).resolve().parents[1] / "robustbench_rpc" / "assets" / "checkpoints"


class Rounding(nn.Module):
    """A classifier behind pixel rounding: zero input gradient almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 16) / 16)


class FreshNoise(nn.Module):
    """A classifier that adds fresh noise to its input at every pass (a randomized defence)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.2 * torch.randn_like(x))


def test_pgd_trace_columns():
    model = tiny_convnet()
    images, labels = tiny_batch(8, model=model)
    result = run_attack(model, images, labels, build_attack_spec("pgd", eps=4 / 255, steps=7), seed=0)
    rows = result.records(labels)
    for row in rows:
        assert row["trace_steps"] == 7 and len(row["trace_loss"]) == 7
        assert row["grad_norm0"] > 0 and row["grad_zero_steps"] == 0 and row["grad_nonfinite_steps"] == 0
        assert row["eot_iter"] == 1  # a deterministic model: automatic EOT stays off
    # the loss trace is the cross-entropy of the iterates: PGD raises it on average
    first = sum(r["trace_loss"][0] for r in rows)
    last = sum(r["trace_loss"][-1] for r in rows)
    assert last > first
    black = run_attack(model, images, labels, build_attack_spec("square", eps=4 / 255, queries=20), seed=0)
    assert all(r["trace_steps"] == 0 and r["trace_loss"] == [] for r in black.records(labels))


def test_zero_gradients_are_counted():
    model = Rounding(tiny_convnet())
    images, labels = tiny_batch(8, model=model)
    result = run_attack(model, images, labels, build_attack_spec("pgd", eps=4 / 255, steps=5), seed=0)
    rows = result.records(labels)
    assert all(r["grad_zero_steps"] == 5 and r["grad_norm0"] == 0 for r in rows)


class Wavy(nn.Module):
    """Logits periodic in a projection of the input: PGD's fixed steps jump over adversarial regions."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(192, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1) * self.w).mean(1) * 200
        return torch.stack([torch.sin(s), torch.cos(s), -torch.sin(s)], 1) * 3


def test_best_iterate_recovers_silent_successes():
    model = Wavy().eval()
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(images).argmax(1)
    spec = dict(eps=8 / 255, steps=10, rel_stepsize=1.0)
    plain = run_attack(model, images, labels, build_attack_spec("pgd", best_iterate=False, **spec), seed=0)
    best = run_attack(model, images, labels, build_attack_spec("pgd", **spec), seed=0)
    assert torch.equal(plain.adv_logits.argmax(1) != labels, torch.as_tensor(best.attack_returned_adv))
    rows = best.records(labels)
    recovered = [r for r in rows if r["best_iterate_used"]]
    assert len(recovered) >= 10  # measured: 51 of 64 samples that PGD's last iterate leaves correct
    assert all(r["iterate_adv"] and not r["attack_returned_adv"] and not r["correct1"] for r in recovered)
    robust_plain = int((plain.adv_logits.argmax(1) == labels).sum())
    robust_best = int((best.adv_logits.argmax(1) == labels).sum())
    assert robust_best == robust_plain - len(recovered)
    assert float(best.norm_linf.max()) <= 8 / 255 + 1e-6  # the recovered points respect the budget


def test_automatic_eot_for_a_randomized_model():
    model = FreshNoise(tiny_convnet())
    images, labels = tiny_batch(6)
    auto = run_attack(model, images, labels, build_attack_spec("pgd", eps=4 / 255, steps=2), seed=0)
    assert auto.eot_iter == 16 and {r["eot_iter"] for r in auto.records(labels)} == {16}
    forced = run_attack(model, images, labels, build_attack_spec("pgd", eps=4 / 255, steps=2, eot_iter=1), seed=0)
    assert forced.eot_iter == 1


def test_float64_attack_leaves_the_model_in_float32():
    model = tiny_convnet()
    images, labels = tiny_batch(6, model=model)
    result = run_attack(model, images, labels, build_attack_spec("pgd", eps=4 / 255, attack_dtype="float64"), seed=0)
    assert result.adv.dtype == torch.float32 and all(p.dtype == torch.float32 for p in model.parameters())
    assert float(result.norm_linf.max()) <= 4 / 255 + 1e-6
    assert torch.allclose(result.adv_logits, model(result.adv), atol=1e-6)


def test_bpda_needs_pap_layers():
    model = tiny_convnet()
    images, labels = tiny_batch(2, model=model)
    with pytest.raises(UserError, match="no PAP"):
        run_attack(model, images, labels, build_attack_spec("pgd", eps=4 / 255, bpda=True), seed=0)


def test_attack_command_transfer_bpda_and_dtype(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["attack", "-m", "rpc_symvit_digits_patch8_32", "-c", str(ASSETS / "rpc_symvit_digits.safetensors"),
            "--dataset", "digits", "--limit", "8", "--eps", "4/255", "--out", str(out), "-q"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--attack", "transfer,pgd", "--option", "pgd.bpda=true", "--attack-dtype", "float64"])
    assert info.value.code == 0
    cells = {spec.params["name"]: spec for spec, _, _ in ResultsStore(out).iter_cells()}
    assert cells["transfer"].params["surrogate"] == {"model": "target without PAP"}
    assert cells["pgd"].params["options"]["bpda"] is True
    assert cells["pgd"].params["options"]["attack_dtype"] == "float64"
    capsys.readouterr()
    plain = ["attack", "-m", "symvit_digits_patch8_32", "-c", str(ASSETS / "symvit_digits.safetensors"),
             "--dataset", "digits", "--limit", "8", "--eps", "4/255", "--out", str(tmp_path / "p"), "-q"]
    with pytest.raises(SystemExit) as info:
        main([*plain, "--attack", "transfer"])
    assert info.value.code == 2
    assert "has no PAP (RPC attention) layers; pass --surrogate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([*plain, "--attack", "pgd", "--option", "straight_through=no_such_module"])
    assert info.value.code == 2
    assert "no_such_module" in capsys.readouterr().err
