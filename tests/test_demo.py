"""The embedded demo: shipped checkpoints (accuracy as stated), training, the demo end to end."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

import robustbench_rpc
from robustbench_rpc.cli.app import main
from robustbench_rpc.data.digits import load_digits_split
from robustbench_rpc.demo.train import SHIPPED, TrainConfig, accuracy, embedded_checkpoint, train_digits_model
from robustbench_rpc.results.store import ResultsStore

#: Test accuracy of the shipped checkpoints, as stated in the README.
SHIPPED_TOP1 = {"symvit": 98.44, "rpc_symvit": 95.33}


@pytest.mark.parametrize("kind", list(SHIPPED))
def test_shipped_checkpoint_accuracy_matches_readme(kind):
    arch, _ = SHIPPED[kind]
    model = robustbench_rpc.load_model(arch, str(embedded_checkpoint(kind)))
    assert accuracy(model, load_digits_split("test")) == pytest.approx(SHIPPED_TOP1[kind], abs=0.01)
    with safe_open(str(embedded_checkpoint(kind)), "pt") as fh:
        summary = json.loads(fh.metadata()["summary"])
    assert summary["test_top1"] == pytest.approx(SHIPPED_TOP1[kind], abs=0.01)


def test_training_reproduces_the_shipped_symvit():
    """Deterministic training (one thread) lands within a point of the shipped checkpoint."""
    _, summary = train_digits_model("symvit", TrainConfig())
    assert abs(summary["test_top1"] - SHIPPED_TOP1["symvit"]) <= 1.0


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    try:
        main(["demo", "--quick", "--out", str(out), "--quiet"])
    except SystemExit as exc:
        assert not exc.code
    printed = capsys.readouterr().out
    assert "Clean and corrupted digits" in printed and "mCE vs symvit" in printed
    for label in ("symvit", "rpc-symvit", "symvit+rpc-inference"):
        cells = list(ResultsStore(out / label).iter_cells())
        conditions = sorted({spec.condition for spec, _, _ in cells})
        assert conditions == ["attack", "audit", "clean", "corruption", "diagnose"]
        diagnosed = [spec for spec, _, _ in cells if spec.condition == "diagnose"]
        assert sorted(spec.params["input"] for spec in diagnosed) == ["clean", "corrupted"]
        assert len([c for c in cells if c[0].condition == "corruption"]) == 6  # 3 corruptions x 2 severities
        for spec, records, _ in cells:
            if spec.condition == "attack":
                assert (records["norm_linf"] <= spec.params["eps"] + 1e-6).all()
    clean = {label: ResultsStore(out / label).read_cell(next(
        s for s, _, _ in ResultsStore(out / label).iter_cells() if s.condition == "clean"))[0]
        for label in ("symvit", "rpc-symvit")}
    # the quick demo evaluates the first 48 test images with the shipped checkpoints
    assert 100 * clean["symvit"]["correct1"].mean() >= 90
    assert "Audit of the attack evaluation" in printed and "lowest robust accuracy at 4/255" in printed
    report = (out / "report.md").read_text()
    assert "## Demo: SymViT vs RPC-SymViT on digits" in report
    assert "## Audit" in report and "| autoattack-beats-pgd |" not in report.split("## Audit")[0]
    assert "worst-case of " in report and "worst-case robust top-1 Linf 4/255" in report
    assert "mCE vs symvit" in report and "74f112c1d3b48d5a" in report  # the shipped file with its model config
    assert "(report_plots/attacks_pgd_linf.png)" in report
    assert (out / "report_plots" / "corruptions.png").stat().st_size > 1000
    assert "Attention diagnostics per layer" in printed
    diagnostics = report.split("## Diagnostics")[1].split("\n## ")[0]
    assert "| rpc-symvit | 0 | rpc | PAP residual (last) |" in diagnostics
    assert "| symvit | 0 | symmetric | value alignment |" in diagnostics and "gaussian_noise s3" in diagnostics
    assert "(report_plots/diagnostics.png)" in diagnostics
    assert (out / "report_plots" / "diagnostics.png").stat().st_size > 10_000
