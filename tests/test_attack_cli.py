"""``robustbench-rpc attack`` end to end on the embedded digits: cells per (attack, eps), budgets, errors."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from robustbench_rpc.cli.app import main
from robustbench_rpc.demo.train import embedded_checkpoint
from robustbench_rpc.results.store import ResultsStore

MODEL = ["-m", "rpc_symvit_digits_patch8_32", "-c", str(embedded_checkpoint("rpc_symvit"))]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pgd_sweep_cells_budgets_and_monotone(tmp_path, capsys):
    out = tmp_path / "r"
    code, printed, _ = cli(capsys, "attack", *MODEL, "--dataset", "digits", "--attack", "pgd,fgsm",
                           "--eps", "2/255:8/255:3/255", "--limit", "24", "--out", str(out), "-q",
                           "--save-adv", str(tmp_path / "adv"), "--option", "pgd.steps=5")
    assert code == 0 and "robust_top1" in printed
    cells = {(s.params["name"], round(s.params["eps"] * 255)): (s, r) for s, r, _ in ResultsStore(out).iter_cells()}
    assert sorted(cells) == [("fgsm", 2), ("fgsm", 5), ("fgsm", 8), ("pgd", 2), ("pgd", 5), ("pgd", 8)]
    robust = []
    for eps255 in (2, 5, 8):
        spec, records = cells[("pgd", eps255)]
        assert spec.params["options"]["steps"] == 5 and spec.params["threat_model"] == "pixel"
        assert len(records) == 24
        assert (records["norm_linf"] <= eps255 / 255 + 1e-6).all()
        assert (records["success"] == (records["clean_correct"] & ~records["correct1"])).all()
        robust.append(records["correct1"].mean())
    assert robust == sorted(robust, reverse=True)
    saved = list((tmp_path / "adv").rglob("*.safetensors"))
    assert saved
    adv = load_file(str(saved[0]))["adv"]
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    # a re-run resumes: nothing is recomputed
    code, printed, _ = cli(capsys, "attack", *MODEL, "--dataset", "digits", "--attack", "pgd,fgsm",
                           "--eps", "2/255:8/255:3/255", "--limit", "24", "--out", str(out), "-q",
                           "--option", "pgd.steps=5")
    assert code == 0 and "0 cell(s) computed, 6 already finished" in printed


def test_compat_mode_is_recorded(tmp_path, capsys):
    code, _, _ = cli(capsys, "attack", *MODEL, "--dataset", "digits", "--attack", "pgd", "--eps", "4/255",
                     "--limit", "8", "--compat", "normalized", "--out", str(tmp_path / "r"), "-q")
    assert code == 0
    [(spec, _, _)] = list(ResultsStore(tmp_path / "r").iter_cells())
    assert spec.params["threat_model"] == "compat-normalized"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--attack", "pgdd", "--eps", "4/255"], "pgd"),
        (["--attack", "pgd", "--eps", "8"], "8/255"),
        (["--attack", "pgd", "--eps", "-1/255"], "negative"),
        (["--attack", "fgsm", "--eps", "4/255", "--norm", "L2"], "does not support the L2 norm"),
        (["--attack", "pgd", "--eps", "4/255", "--option", "queries=10"], "queries"),
        (["--attack", "pgd"], "--eps"),
        (["--attack", "pgd", "--eps", "4/255", "--dataset", "imagenet"], "--data"),
    ],
)
def test_bad_input(tmp_path, capsys, args, message):
    code, _, err = cli(capsys, "attack", *MODEL, "--dataset", "digits", "--out", str(tmp_path / "r"), "-q", *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_seed_is_part_of_stochastic_attack_cells(tmp_path, capsys):
    args = ["attack", *MODEL, "--dataset", "digits", "--attack", "pgd", "--eps", "6/255", "--limit", "16",
            "--option", "steps=2", "--out", str(tmp_path / "r"), "-q"]
    assert cli(capsys, *args, "--seed", "0")[0] == 0
    code, printed, _ = cli(capsys, *args, "--seed", "1")
    assert code == 0 and "1 cell(s) computed, 0 already finished" in printed
    specs = [s for s, _, _ in ResultsStore(tmp_path / "r").iter_cells()]
    assert sorted(s.params["seed"] for s in specs) == [0, 1]
