"""Benchmark specs split across processes: ``run SPEC --shard i/n`` + ``merge``, and ``run SPEC`` under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clirun import run_cli

from robustbench_rpc.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "robustbench_rpc" / "assets" / "checkpoints"
# two models x (evaluate: 3 cells, attack: 2 cells): calls with 3, 2 and 1 cells per shard
SPEC = f"""
[benchmark]
name = "two-models"
[run]
device = "cpu"
batch_size = 8
seed = 1
[evaluate]
suite = ["digits", "digits-c"]
corruptions = "gaussian_noise,contrast"
severities = "2"
limit = 20
[[models]]
model = "symvit_digits_patch8_32"
checkpoint = "{CKPT}/symvit_digits.safetensors"
[[models]]
model = "rpc_symvit_digits_patch8_32"
checkpoint = "{CKPT}/rpc_symvit_digits.safetensors"
[[attacks]]
attack = ["fgsm", "pgd"]
eps = "2/255"
options = {{ "pgd.steps" = 2 }}
dataset = "digits"
limit = 12
[outputs]
tables = ["paper", "paper-attacks"]
formats = ["md"]
report = false
plots = false
"""


def _records(out: Path) -> dict[str, object]:
    return {spec.key(): records for spec, records, _ in ResultsStore(out).iter_cells()}


def _assert_same(a_dir: Path, b_dir: Path) -> None:
    a, b = _records(a_dir), _records(b_dir)
    assert sorted(a) == sorted(b) and len(a) == 10
    for key in a:
        assert a[key].equals(b[key]), key


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a torchrun worker, for bit-identical floats
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def spec_and_single(tmp_path, capsys, one_thread):
    spec = tmp_path / "two.toml"
    spec.write_text(SPEC)
    code, printed, err = run_cli(capsys, "run", str(spec), "--out", str(tmp_path / "single"), "-q")
    assert code == 0, err
    return spec, tmp_path / "single"


@pytest.mark.parametrize("shard_by", ["cells", "samples"])
def test_spec_shards_merge_into_the_single_process_run(spec_and_single, tmp_path, capsys, shard_by):
    spec, single = spec_and_single
    shards = []
    for i in range(2):
        out = tmp_path / f"s{i}"
        code, printed, err = run_cli(capsys, "run", str(spec), "--out", str(out), "--shard", f"{i}/2",
                                     "--shard-by", shard_by, "-q")
        assert code == 0, err
        assert not (out / "tables").exists() and "robustbench-rpc merge" in printed
        shards.append(str(out))
    code, _, err = run_cli(capsys, "merge", shards[0], "--out", str(tmp_path / "part"))
    assert code == 2 and "No directory holds shard(s) 1/2 of the spec run" in err
    assert not (tmp_path / "part").exists()
    code, printed, err = run_cli(capsys, "merge", *shards, "--out", str(tmp_path / "merged"))
    assert code == 0, err
    assert "10 cell(s) merged from 2 shard(s)" in printed
    _assert_same(tmp_path / "merged", single)
    code, printed, err = run_cli(capsys, "run", str(spec), "--out", str(tmp_path / "merged"), "-q")
    assert code == 0 and printed.count("0 cell(s) computed") == 4, err
    for view in ("paper", "paper-attacks"):
        assert (tmp_path / "merged" / "tables" / f"{view}.md").read_text() == \
            (single / "tables" / f"{view}.md").read_text()


def test_shards_of_another_spec_are_refused(spec_and_single, tmp_path, capsys):
    spec, _ = spec_and_single
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace('name = "two-models"', 'name = "other"'))
    for i, path in enumerate((spec, other)):
        code, _, err = run_cli(capsys, "run", str(path), "--out", str(tmp_path / f"x{i}"), "--shard", f"{i}/2", "-q")
        assert code == 0, err
    code, _, err = run_cli(capsys, "merge", str(tmp_path / "x0"), str(tmp_path / "x1"), "--out", str(tmp_path / "m"))
    assert code == 2 and "come from different runs" in err and "merge the shards of one spec file" in err
    assert not (tmp_path / "m").exists()


def test_spec_under_torchrun_equals_the_single_process_run(spec_and_single, tmp_path):
    spec, single = spec_and_single
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "robustbench_rpc", "run", str(spec), "--out", str(tmp_path / "dist"), "-q"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("[4/4]") == 1  # rank 0 alone reports
    _assert_same(tmp_path / "dist", single)
    assert (tmp_path / "dist" / "tables" / "paper.md").read_text() == (single / "tables" / "paper.md").read_text()
