"""torchrun with 2 CPU processes (gloo): every record equals a single-process run; disagreeing ranks all fail."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustbench_rpc.api import attack, evaluate
from robustbench_rpc.demo.train import embedded_checkpoint
from robustbench_rpc.engine.distributed import (
    DistContext,
    canonical_batches,
    collective_step,
    parse_shard,
    plan_fingerprint,
)
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
MODEL = "symvit_digits_patch8_32"
CHECKPOINT = str(embedded_checkpoint("symvit"))
# 38 samples in batches of 8: 5 canonical batches, rank 0 gets 3 (the last one short), rank 1 gets 2
EVALUATE_ARGS = ["--suite", "digits,digits-c", "--corruptions", "gaussian_noise,contrast", "--severities", "3",
                 "--limit", "38", "--batch-size", "8", "--seed", "3"]
ATTACK_ARGS = ["--dataset", "digits", "--attack", "pgd", "--eps", "2/255,6/255", "--option", "steps=3",
               "--limit", "38", "--batch-size", "8", "--seed", "3"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _torchrun(command: str, args: list[str], out: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "robustbench_rpc", command, "-m", MODEL, "-c", CHECKPOINT, *args, "--device", "cpu", "-q",
            "--out", str(out)]
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=240, cwd=ROOT)


def _records(out: Path) -> dict[str, object]:
    return {spec.key(): records for spec, records, _ in ResultsStore(out).iter_cells()}


def _assert_same_records(distributed: Path, single: Path) -> None:
    a, b = _records(distributed), _records(single)
    assert sorted(a) == sorted(b) and a
    for key in a:
        assert a[key].columns.tolist() == b[key].columns.tolist()
        assert len(a[key]) == 38
        assert a[key]["index"].tolist() == list(range(38))
        for column in a[key].columns:  # bit-identical: same batches, same seeds, one thread per process
            assert a[key][column].tolist() == b[key][column].tolist(), (key, column)


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torchrun gives each worker one thread; match it for bit-identical floats
    yield
    torch.set_num_threads(threads)


def test_torchrun_evaluate_equals_single_process(tmp_path, one_thread):
    done = _torchrun("evaluate", EVALUATE_ARGS, tmp_path / "dist")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("3 cell(s) computed") == 1  # only rank 0 reports
    evaluate(MODEL, CHECKPOINT, out=tmp_path / "single", suite="digits,digits-c",
             corruptions="gaussian_noise,contrast", severities="3", limit=38, batch_size=8, seed=3,
             device="cpu", progress=False)
    _assert_same_records(tmp_path / "dist", tmp_path / "single")
    [run] = ResultsStore(tmp_path / "dist").runs()
    assert run["world_size"] == 2 and run["distributed_backend"] == "gloo"


def test_torchrun_attack_equals_single_process(tmp_path, one_thread):
    done = _torchrun("attack", ATTACK_ARGS, tmp_path / "dist")
    assert done.returncode == 0, done.stderr[-3000:]
    attack(MODEL, CHECKPOINT, out=tmp_path / "single", attacks="pgd", eps="2/255,6/255",
           attack_options={"steps": 3}, dataset="digits", limit=38, batch_size=8, seed=3, device="cpu",
           progress=False)
    _assert_same_records(tmp_path / "dist", tmp_path / "single")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_that_disagree_all_fail_and_nothing_is_written(tmp_path):
    port = str(_free_port())
    procs = []
    for rank, limit in ((0, "8"), (1, "9")):  # the ranks were given different arguments
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank))
        argv = [sys.executable, "-m", "robustbench_rpc", "evaluate", "-m", MODEL, "-c", CHECKPOINT,
                "--suite", "digits", "--limit", limit, "--device", "cpu", "-q", "--out", str(tmp_path / "r")]
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 2, err[-2000:]
        assert "disagree on the plan" in err and "Traceback" not in err
        assert "their cells differ" in err and "--limit" in err  # --limit 8 vs 9: same settings, other cells
    assert not (tmp_path / "r").exists()


FAILING_MODEL = """
import os, torch
class FailsOnOneRank(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 32 * 32, 10)
        self.calls = 0
    def forward(self, x):
        self.calls += 1
        if os.environ["RANK"] == os.environ["FAIL_RANK"] and self.calls > 1:
            raise RuntimeError("injected failure")
        return self.lin(x.flatten(1))
def make(**kwargs):
    return FailsOnOneRank()
"""


@pytest.mark.parametrize("fail_rank", ["0", "1"])
def test_a_rank_failing_mid_run_stops_every_rank_and_no_cell_is_written(tmp_path, fail_rank):
    (tmp_path / "failing_model.py").write_text(FAILING_MODEL)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):  # launched by hand: no torchrun to tear the group down
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank), FAIL_RANK=fail_rank)
        env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
        argv = [sys.executable, "-m", "robustbench_rpc", "evaluate", "-m", "failing_model:make", "--suite",
                "digits", "--limit", "64", "--batch-size", "8", "--device", "cpu", "-q", "--out",
                str(tmp_path / "r")]
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = [p.communicate(timeout=120) for p in procs]  # a hang until the 30-minute group timeout fails here
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode != 0, err[-2000:]
    assert "injected failure" in results[int(fail_rank)][1]
    store = ResultsStore(tmp_path / "r") if (tmp_path / "r").exists() else None
    assert store is None or not store.cell_files()


def test_shard_specs():
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 2 / 3 ") == (2, 3) and parse_shard(None) is None
    for bad, message in (("3/2", "must be in 0..1"), ("2/2", "must be in 0..1"), ("0/0", "must be >= 1"),
                         ("-1/2", "must be in 0..1"), ("a/b", "not of the form i/n"), ("1", "not of the form")):
        with pytest.raises(UserError, match=message):
            parse_shard(bad)


def test_canonical_batches_split_without_duplicates_or_padding():
    for total, size, world in ((38, 8, 2), (5, 8, 3), (100, 7, 4), (0, 4, 2)):
        shares = [canonical_batches(total, size, rank, world) for rank in range(world)]
        positions = sorted(i for share in shares for _, r in share for i in r)
        assert positions == list(range(total))
        numbers = sorted(n for share in shares for n, _ in share)
        assert numbers == list(range(-(-total // size)))
        assert all(n % world == rank for rank, share in enumerate(shares) for n, _ in share)


def test_single_process_helpers():
    ctx = DistContext()
    assert collective_step(ctx, lambda: 5, "x") == 5
    with pytest.raises(UserError, match="boom"):
        collective_step(ctx, lambda: (_ for _ in ()).throw(UserError("boom")), "x")
    assert plan_fingerprint(["a", "b"], seed=0) != plan_fingerprint(["b", "a"], seed=0)
    assert plan_fingerprint(["a"], seed=0) != plan_fingerprint(["a"], seed=1)


NAN_MODEL = """
import os, torch
class NanOnOneRank(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 32 * 32, 10)
        self.num_classes = 10
    def forward(self, x):
        out = self.lin(x.flatten(1))
        if os.environ["RANK"] == os.environ["FAIL_RANK"]:
            out = out * float("nan")
        return out
def make(**kwargs):
    return NanOnOneRank()
"""


@pytest.mark.parametrize("fail_rank", ["0", "1"])
def test_non_finite_logits_on_one_rank_stop_every_rank_with_one_sentence(tmp_path, fail_rank):
    (tmp_path / "nan_model.py").write_text(NAN_MODEL)
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                   LOCAL_RANK=str(rank), FAIL_RANK=fail_rank)
        env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
        argv = [sys.executable, "-m", "robustbench_rpc", "evaluate", "-m", "nan_model:make", "--suite", "digits",
                "--limit", "32", "--batch-size", "8", "--device", "cpu", "-q", "--out", str(tmp_path / "r")]
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 2, err[-2000:]
        assert err.startswith("Error: Model nan_model:make returned non-finite logits (NaN or inf) for 8 of 8 "), err
        assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # the run created it and stored nothing: removed again


def test_torchrun_audit_makes_several_runs_in_one_process_group(tmp_path, one_thread, capsys):
    """The audit's attack calls and probe share one group (re-creating it per call hung); records as one process."""
    from clirun import run_cli

    args = ["audit", "-m", MODEL, "-c", CHECKPOINT, "--dataset", "digits", "--quick", "--limit", "16", "--eps",
            "4/255", "--checks", "single-step-beats-iterative,unstable-predictions", "--device", "cpu", "-q"]
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "robustbench_rpc", *args, "--out", str(tmp_path / "dist")]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("check(s) flagged") == 1  # rank 0 alone judges and reports
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "single"))
    assert code == 0, err
    a, b = _records(tmp_path / "dist"), _records(tmp_path / "single")
    assert sorted(a) == sorted(b) and len(a) == 5  # fgsm, pgd, the probe and the two check cells
    for key in a:
        assert a[key].equals(b[key]), key


def test_torchrun_segmentation_equals_single_process(tmp_path, one_thread, capsys):
    """Segmentation cells (clean, a generated corruption, PGD) on 2 ranks: the records of one process."""
    from clirun import run_cli

    common = ["--task", "segmentation", "-m", "segmenter_rpc_symvit_digits", "--data", "digit-scenes", "--limit",
              "10", "--batch-size", "4", "--device", "cpu", "-q"]
    commands = [["evaluate", *common, "--suite", "clean,corrupted", "--corruptions", "fog", "--severities", "2"],
                ["attack", *common, "--attack", "pgd", "--eps", "2/255", "--option", "steps=2"]]
    for argv in commands:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "robustbench_rpc", *argv, "--out", str(tmp_path / "dist")]
        done = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=240, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "single"))
        assert code == 0, err
    a, b = _records(tmp_path / "dist"), _records(tmp_path / "single")
    assert sorted(a) == sorted(b) and len(a) == 3
    for key in a:
        assert len(a[key]) == 10 and a[key].equals(b[key]), key
