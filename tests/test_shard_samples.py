"""``--shard i/n --shard-by samples``: parts of cells, merged into exactly the single-process records."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_distributed import ROOT, _env
from test_shard_merge import cli

from robustbench_rpc.api import attack, evaluate
from robustbench_rpc.demo.train import embedded_checkpoint
from robustbench_rpc.engine.distributed import parse_shard_by, sample_shard_rank
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.merge import merge_results
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy

MODEL = "symvit_digits_patch8_32"
CHECKPOINT = str(embedded_checkpoint("symvit"))
# 22 samples in batches of 4: 6 canonical batches (the last one short); 3 shards get batches {0,3}, {1,4}, {2,5}
RUN = {"limit": 22, "batch_size": 4, "device": "cpu", "progress": False, "seed": 1}
PLAN = {"suite": "digits,digits-c", "corruptions": "gaussian_noise", "severities": "2", **RUN}
ATTACK_ARGS = ["--dataset", "digits", "--attack", "pgd", "--eps", "4/255", "--option", "steps=2", "--limit", "22",
               "--batch-size", "4", "--seed", "1", "--device", "cpu", "-q"]


def frames(out: Path) -> dict[str, tuple]:
    return {spec.key(): (spec.slug(), records, meta) for spec, records, meta in ResultsStore(out).iter_cells()}


def assert_same_cells(merged: Path, single: Path) -> None:
    a, b = frames(merged), frames(single)
    assert sorted(a) == sorted(b) and a
    for key, (slug, records, meta) in a.items():
        expected = b[key][1]
        assert records.columns.tolist() == expected.columns.tolist(), slug
        assert records["index"].tolist() == list(range(22)), slug
        assert records.dtypes.to_dict() == expected.dtypes.to_dict(), slug
        for column in records.columns:
            assert records[column].tolist() == expected[column].tolist(), (slug, column)
        assert meta["extra"]["load_report"] == b[key][2]["extra"]["load_report"], slug
        assert [p["shard"] for p in meta["extra"]["merged_parts"]] == ["0/3", "1/3", "2/3"]


def table_text(capsys, out: Path, view: str) -> str:
    code, printed, err = cli(capsys, "table", str(out), "--view", view, "--format", "csv")
    assert code == 0, err
    return printed


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sample-shards")
    dirs = {name: root / name for name in ("single", "s0", "s1", "s2", "a_single", "a0", "a1", "a2")}
    evaluate(MODEL, CHECKPOINT, out=dirs["single"], **PLAN)
    for i in range(3):
        summary = evaluate(MODEL, CHECKPOINT, out=dirs[f"s{i}"], shard=f"{i}/3", shard_by="samples", **PLAN)
        assert len(summary.written) == 2 and summary.part == f"{i}/3" and summary.table.empty
    attack(MODEL, CHECKPOINT, out=dirs["a_single"], attacks="pgd", eps="4/255", attack_options={"steps": 2},
           dataset="digits", **RUN)
    return dirs


def test_parts_hold_their_batches_and_are_not_results(runs, capsys):
    for i in range(3):
        store = ResultsStore(runs[f"s{i}"])
        assert store.cell_files() == []  # no finished cell: only parts
        parts = store.part_files()
        assert len(parts) == 2
        for part in parts:
            assert not store.has(part.spec)
            assert part.meta["part"]["index"] == i and part.meta["part"]["count"] == 3
            assert part.meta["part"]["batches"] == [i, i + 3] and part.meta["part"]["batch_size"] == 4
            indices = store.read_part_records(part)["index"].tolist()
            assert indices and all((index // 4) % 3 == i for index in indices)
        [run] = store.runs()
        assert run["plan"]["shard"] == f"{i}/3" and run["plan"]["shard_by"] == "samples"
    code, _, err = cli(capsys, "table", str(runs["s0"]))
    assert code == 2 and "holds only parts of cells" in err and "robustbench-rpc merge" in err
    assert "Traceback" not in err
    with pytest.raises(UserError, match="combine the shards first"):
        tidy(runs["s1"])


def test_merged_sample_shards_equal_the_single_process_run(runs, tmp_path, capsys):
    code, printed, err = cli(capsys, "merge", *(str(runs[f"s{i}"]) for i in range(3)), "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert "2 cell(s) merged from 3 shard(s)" in printed and "0/3 by samples" in printed
    assert_same_cells(tmp_path / "m", runs["single"])
    for view in ("paper", "corruptions"):
        assert table_text(capsys, tmp_path / "m", view) == table_text(capsys, runs["single"], view)
    merged, single = (tidy(d).drop(columns="results_dir") for d in (tmp_path / "m", runs["single"]))
    assert merged.equals(single)
    store = ResultsStore(tmp_path / "m")
    assert store.part_files() == [] and store.runs()[-1]["merge"]["complete"] is True
    assert store.runs()[-1]["plan"]["shard"] is None


def test_attack_sample_shards_from_the_cli_merge_into_the_single_run(runs, tmp_path, capsys):
    for i in range(3):
        code, printed, err = cli(capsys, "attack", "-m", MODEL, "-c", CHECKPOINT, *ATTACK_ARGS, "--shard",
                                 f"{i}/3", "--shard-by", "samples", "--out", str(tmp_path / f"a{i}"))
        assert code == 0, err
        assert f"1 part(s) of cells computed, 0 already finished (sample shard {i}/3)" in printed
    report = merge_results([tmp_path / f"a{i}" for i in (2, 0, 1)], tmp_path / "m")
    assert report.complete and report.copied == ["digits.attack.pgd.Linf.eps4"]
    assert_same_cells(tmp_path / "m", runs["a_single"])
    assert table_text(capsys, tmp_path / "m", "attacks") == table_text(capsys, runs["a_single"], "attacks")


def test_a_missing_part_is_reported_with_its_shard_and_refused(runs, tmp_path, capsys):
    code, _, err = cli(capsys, "merge", str(runs["s0"]), str(runs["s2"]), "--out", str(tmp_path / "m"))
    assert code == 2 and "Traceback" not in err
    assert "2 of 2 planned cell(s) lack the parts of sample shard(s) 1/3" in err
    assert "digits.clean (no part 1/3)" in err and "--allow-partial" in err
    assert not (tmp_path / "m").exists()


def test_allow_partial_merges_complete_cells_and_leaves_incomplete_ones_out(runs, tmp_path, capsys):
    shard1 = tmp_path / "s1"
    shutil.copytree(runs["s1"], shard1)
    [noise_part] = [p for p in ResultsStore(shard1).part_files() if p.spec.condition == "corruption"]
    noise_part.path.unlink()
    dirs = [str(runs["s0"]), str(shard1), str(runs["s2"])]
    code, _, err = cli(capsys, "merge", *dirs, "--out", str(tmp_path / "refused"))
    assert code == 2 and "1 of 2 planned cell(s) lack the parts of sample shard(s) 1/3" in err
    code, printed, err = cli(capsys, "merge", *dirs, "--out", str(tmp_path / "m"), "--allow-partial")
    assert code == 0, err
    assert "incomplete, left out: digits.corruption.gaussian_noise.s2 (no part from shard(s) 1/3)" in printed
    assert "1 cell(s) merged from 3 shard(s)" in printed and "1 planned cell(s) incomplete or missing" in printed
    merged = frames(tmp_path / "m")
    assert [slug for slug, _, _ in merged.values()] == ["digits.clean"]
    single = {slug: records for slug, records, _ in frames(runs["single"]).values()}
    assert next(iter(merged.values()))[1].equals(single["digits.clean"])
    last = ResultsStore(tmp_path / "m").runs()[-1]
    assert last["merge"]["complete"] is False and last["plan"]["shard"] == "partial-merge"
    assert [m["missing_parts"] for m in last["merge"]["missing"]] == [[1]]


def test_resume_skips_the_shards_own_finished_parts(runs, tmp_path):
    shard = tmp_path / "s0"
    shutil.copytree(runs["s0"], shard)
    [clean] = [p for p in ResultsStore(shard).part_files() if p.spec.condition == "clean"]
    clean.path.unlink()
    summary = evaluate(MODEL, CHECKPOINT, out=shard, shard="0/3", shard_by="samples", **PLAN)
    assert [s.slug() for s in summary.written] == ["digits.clean"]
    assert [s.slug() for s in summary.skipped] == ["digits.corruption.gaussian_noise.s2"]
    again = evaluate(MODEL, CHECKPOINT, out=shard, shard="0/3", shard_by="samples", **PLAN)
    assert again.written == [] and len(again.skipped) == 2


def test_shards_of_other_splits_or_batch_sizes_are_refused(runs, tmp_path):
    by_cells = tmp_path / "cells"
    evaluate(MODEL, CHECKPOINT, out=by_cells, shard="1/3", **PLAN)  # the same plan, split by cells
    with pytest.raises(UserError, match=r"\(--shard-by cells\) and .* \(--shard-by samples\) split the plan in "
                                        r"different ways; merge shards of one kind only"):
        merge_results([runs["s0"], by_cells, runs["s2"]], tmp_path / "m")
    other_batch = tmp_path / "batch"
    evaluate(MODEL, CHECKPOINT, out=other_batch, shard="1/3", shard_by="samples", **{**PLAN, "batch_size": 5})
    with pytest.raises(UserError, match="different plans"):
        merge_results([runs["s0"], other_batch, runs["s2"]], tmp_path / "m")
    other_count = tmp_path / "count"
    evaluate(MODEL, CHECKPOINT, out=other_count, shard="1/4", shard_by="samples", **PLAN)
    with pytest.raises(UserError, match="different numbers of shards"):
        merge_results([runs["s0"], other_count, runs["s2"]], tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv,message", [
    (["--shard", "0/3", "--shard-by", "rows"], "--shard-by 'rows' is not a way to split a plan; expected cells or "
                                               "samples."),
    (["--shard", "0/3", "--shard-by", "sample"], "expected cells or samples (did you mean 'samples'?)."),
    (["--shard-by", "samples"], "--shard-by samples needs --shard i/n"),
    (["--shard", "6/7", "--shard-by", "samples"], "--shard 6/7 --shard-by samples has no samples: the largest "
                                                  "dataset of the plan has only 6 batch(es) of 4"),
])
def test_bad_shard_by_is_one_sentence_and_exit_2(tmp_path, capsys, argv, message):
    code, _, err = cli(capsys, "evaluate", "-m", MODEL, "-c", CHECKPOINT, "--suite", "digits", "--limit", "22",
                       "-b", "4", *argv, "--out", str(tmp_path / "r"), "-q", "--device", "cpu")
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_sample_shard_ranks_keep_b_mod_n_whatever_the_world_size():
    assert parse_shard_by(None) == "cells" and parse_shard_by(" Samples ", "0/2") == "samples"
    for count in (1, 2, 3):
        for world in (1, 2, 3):
            owner = {}
            for index in range(count):
                for rank in range(world):
                    eff_rank, eff_world = sample_shard_rank(index, count, rank, world)
                    for b in range(40):
                        if b % eff_world == eff_rank:
                            assert b not in owner
                            owner[b] = index
            assert owner == {b: b % count for b in range(40)}


def test_torchrun_sample_shard_merges_with_a_single_process_shard(runs, tmp_path):
    """Shard 0/2 under torchrun (2 ranks) and shard 1/2 in one process merge into the single-process records."""
    args = ["--suite", "digits,digits-c", "--corruptions", "gaussian_noise", "--severities", "2", "--limit", "22",
            "-b", "4", "--seed", "1", "--device", "cpu", "-q", "--shard-by", "samples"]
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
            "robustbench_rpc", "evaluate", "-m", MODEL, "-c", CHECKPOINT, *args, "--shard", "0/2", "--out",
            str(tmp_path / "d0")]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("2 part(s) of cells computed") == 1  # only rank 0 reports
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torchrun gives each worker one thread; match it for bit-identical floats
    try:
        evaluate(MODEL, CHECKPOINT, out=tmp_path / "d1", shard="1/2", shard_by="samples", **PLAN)
        evaluate(MODEL, CHECKPOINT, out=tmp_path / "single", **PLAN)
    finally:
        torch.set_num_threads(threads)
    part = ResultsStore(tmp_path / "d0").part_files()[0]
    assert part.meta["part"]["batches"] == [0, 2, 4] and part.meta["extra"]["world_size"] == 2
    merge_results([tmp_path / "d0", tmp_path / "d1"], tmp_path / "m")
    a, b = frames(tmp_path / "m"), frames(tmp_path / "single")
    assert sorted(a) == sorted(b)
    for key, (slug, records, _) in a.items():
        assert records.equals(b[key][1]), slug
