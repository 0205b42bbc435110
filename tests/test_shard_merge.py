"""``--shard i/n`` and ``robustbench-rpc merge``: shards merge into the single-process result; bad input refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustbench_rpc.api import evaluate
from robustbench_rpc.cli.app import main
from robustbench_rpc.demo.train import embedded_checkpoint
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.merge import merge_results
from robustbench_rpc.results.store import ResultsStore

MODEL = "symvit_digits_patch8_32"
CHECKPOINT = str(embedded_checkpoint("symvit"))
PLAN = {"suite": "digits,digits-c", "corruptions": "gaussian_noise,contrast,fog", "severities": "2",
        "limit": 20, "batch_size": 8, "device": "cpu", "progress": False, "seed": 1}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(out: Path) -> dict[str, list]:
    return {spec.key(): frame.to_dict("records") for spec, frame, _ in ResultsStore(out).iter_cells()}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shards")
    dirs = {"single": root / "single"}
    evaluate(MODEL, CHECKPOINT, out=dirs["single"], **PLAN)
    for i in range(3):
        dirs[f"s{i}"] = root / f"s{i}"
        summary = evaluate(MODEL, CHECKPOINT, out=dirs[f"s{i}"], shard=f"{i}/3", **PLAN)
        assert len(summary.written) in (1, 2)
    return dirs


def test_shards_partition_the_plan_and_merge_equals_single_run(shards, tmp_path, capsys):
    parts = [set(records(shards[f"s{i}"])) for i in range(3)]
    assert sum(len(p) for p in parts) == 4 and len(set.union(*parts)) == 4  # 4 cells, no duplicates
    code, printed, err = cli(capsys, "merge", *(str(shards[f"s{i}"]) for i in range(3)), "--out",
                             str(tmp_path / "m"))
    assert code == 0, err
    assert "4 cell(s) merged from 3 shard(s)" in printed
    merged, single = records(tmp_path / "m"), records(shards["single"])
    assert merged == single
    store = ResultsStore(tmp_path / "m")
    assert store.runs()[-1]["merge"]["complete"] is True
    assert len(store.runs()) == 4  # the three shard runs and the merge


def test_missing_shard_is_reported_and_partial_needs_a_flag(shards, tmp_path, capsys):
    code, _, err = cli(capsys, "merge", str(shards["s0"]), str(shards["s2"]), "--out", str(tmp_path / "m"))
    assert code == 2 and "planned cell(s) are in none of the shards (from shard(s) 1/3)" in err
    assert "--allow-partial" in err and not (tmp_path / "m").exists()
    report = merge_results([shards["s0"], shards["s2"]], tmp_path / "m", allow_partial=True)
    assert not report.complete and [m["shard"] for m in report.missing] == ["1/3"] * len(report.missing)
    assert len(records(tmp_path / "m")) == 4 - len(report.missing)
    assert ResultsStore(tmp_path / "m").runs()[-1]["merge"]["complete"] is False


def test_incompatible_shards_are_refused(shards, tmp_path):
    other_model = tmp_path / "rpc"
    evaluate("rpc_symvit_digits_patch8_32", str(embedded_checkpoint("rpc_symvit")), out=other_model,
             shard="1/3", **PLAN)
    with pytest.raises(UserError, match="different models or checkpoints"):
        merge_results([shards["s0"], other_model], tmp_path / "m")
    other_plan = tmp_path / "plan"
    evaluate(MODEL, CHECKPOINT, out=other_plan, shard="1/3", **{**PLAN, "limit": 12})
    with pytest.raises(UserError, match="different plans"):
        merge_results([shards["s0"], other_plan], tmp_path / "m")
    other_seed = tmp_path / "seed"
    evaluate(MODEL, CHECKPOINT, out=other_seed, shard="1/3", **{**PLAN, "seed": 2})
    with pytest.raises(UserError, match="different plans"):
        merge_results([shards["s0"], other_seed], tmp_path / "m")
    with pytest.raises(UserError, match="does not exist"):
        merge_results([shards["s0"], tmp_path / "nothing"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("spec,message", [("3/2", "must be in 0..1"), ("0/0", "must be >= 1"),
                                          ("-1/2", "must be in 0..1"), ("1of2", "not of the form i/n")])
def test_bad_shard_specs(tmp_path, capsys, spec, message):
    code, _, err = cli(capsys, "evaluate", "-m", MODEL, "--suite", "digits", "--shard", spec, "--out",
                       str(tmp_path / "r"), "-q", "--device", "cpu")
    assert code == 2 and message in err
    assert not (tmp_path / "r").exists()


def test_a_shard_without_cells_is_an_error(tmp_path):
    with pytest.raises(UserError, match="has no cells: the plan has only 1 cell"):
        evaluate(MODEL, CHECKPOINT, out=tmp_path / "r", suite="digits", limit=4, shard="1/2", device="cpu",
                 progress=False)
    assert not (tmp_path / "r").exists()
