"""Batch-level resume after SIGKILL, the numeric guards, checks before the work, and the messages of refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_cli
from datagen import make_imagefolder

import robustbench_rpc
from robustbench_rpc.api import attack
from robustbench_rpc.demo.train import embedded_checkpoint
from robustbench_rpc.errors import UserError
from robustbench_rpc.models.wrapper import check_normalization
from robustbench_rpc.results.journal import JOURNAL_DIR, BatchJournal, journal_directories
from robustbench_rpc.results.store import ResultsStore

ROOT = Path(robustbench_rpc.__file__).resolve().parents[1]
SYMVIT = str(embedded_checkpoint("symvit"))
WNIDS = ["n01440764", "n01443537"]

#: A model factory that counts its forward passes in a file and kills its own process (SIGKILL, no clean-up)
#: at forward number $KILL_AT; $NAN_ABOVE makes it return NaN logits for images brighter than that mean.
FACTORY = '''
import os, signal
import timm, torch
import robustbench_rpc.models  # registers the digits models
from safetensors.torch import load_file


class Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = timm.create_model("symvit_digits_patch8_32")
        self.inner.load_state_dict(load_file(os.environ["CKPT"]))
        self.pretrained_cfg = self.inner.pretrained_cfg
        self.num_classes = self.inner.num_classes
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        with open(os.environ["COUNT_FILE"], "a") as f:
            f.write("1\\n")
        if self.calls == int(os.environ.get("KILL_AT", "0")):
            os.kill(os.getpid(), signal.SIGKILL)
        out = self.inner(x)
        nan_above = os.environ.get("NAN_ABOVE")
        if nan_above is not None:
            bright = x.flatten(1).mean(1) > float(nan_above)
            out = torch.where(bright[:, None], torch.full_like(out, float("nan")), out)
        return out


def make(**kwargs):
    return Counting()
'''


cli = run_cli


@pytest.fixture()
def factory(tmp_path, monkeypatch) -> tuple[str, Path]:
    """The counting factory as ``module:make`` importable here and in subprocesses; its count file."""
    (tmp_path / "counting_factory.py").write_text(FACTORY)
    count = tmp_path / "forwards.txt"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CKPT", SYMVIT)
    monkeypatch.setenv("COUNT_FILE", str(count))
    return "counting_factory:make", count


def _forwards(count: Path) -> int:
    n = len(count.read_text().splitlines()) if count.exists() else 0
    count.unlink(missing_ok=True)
    return n


def _records(out: Path) -> dict[str, object]:
    store = ResultsStore(out)
    return {cell.spec.slug(): store.read_records(cell) for cell in store.cell_files()}


def test_sigkill_during_generated_pass_resumes_without_redoing_finished_batches(factory, tmp_path):
    name, count = factory
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    # 48 images in 6 batches of 8, 2 generated cells: 2 forwards per batch, in one pass
    args = ["evaluate", "-m", name, "--suite", "digits-c", "--corruptions", "gaussian_noise",
            "--severities", "1,2", "--limit", "48", "--batch-size", "8", "-q"]

    def run(out: Path, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "robustbench_rpc", *args, "--out", str(out)],
                              env={**env, **extra_env}, capture_output=True, text=True, timeout=300)

    reference = tmp_path / "reference"
    assert run(reference).returncode == 0
    assert _forwards(count) == 12
    out = tmp_path / "killed"
    killed = run(out, KILL_AT="7")  # batches 0-2 finished (6 forwards), killed in batch 3
    assert killed.returncode == -signal.SIGKILL
    assert _forwards(count) == 7
    assert not list((out / "cells").glob("*.parquet"))
    assert len(list((out / JOURNAL_DIR).glob("*/batch-*.json"))) == 3
    resumed = run(out)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed 3 finished batch(es)" in resumed.stderr
    assert _forwards(count) == 6  # only batches 3-5, for both cells
    assert not (out / JOURNAL_DIR).exists()
    expected, got = _records(reference), _records(out)
    assert sorted(got) == sorted(expected) and len(got) == 2
    for slug, records in expected.items():
        assert got[slug].equals(records), slug
    meta = ResultsStore(out).cell_files()[0].meta
    assert meta["extra"]["resumed_batches"] == 3


class KilledError(Exception):
    """Stands in for a kill: raised by the journal after some batches were written."""


def killed_after_batches(monkeypatch, batches: int, run) -> None:
    """Call ``run()`` with the journal raising :class:`KilledError` once ``batches`` batches are kept."""
    original_add = BatchJournal.add
    kept = {"n": 0}

    def add_then_die(self, number, payload):
        if kept["n"] == batches:
            raise KilledError
        kept["n"] += 1
        original_add(self, number, payload)

    monkeypatch.setattr(BatchJournal, "add", add_then_die)
    with pytest.raises(KilledError):
        run()
    monkeypatch.setattr(BatchJournal, "add", original_add)


def test_attack_cell_resumes_from_its_journal(tmp_path, monkeypatch):
    common = {"attacks": "pgd", "eps": "4/255", "dataset": "digits", "limit": 24, "batch_size": 8,
              "progress": False, "device": "cpu", "attack_options": {"steps": 3}}
    uninterrupted = attack("symvit_digits_patch8_32", SYMVIT, out=tmp_path / "ref", **common)
    assert uninterrupted.resumed_batches == 0
    killed_after_batches(monkeypatch, 2, lambda: attack("symvit_digits_patch8_32", SYMVIT, out=tmp_path / "r",
                                                        **common))
    calls = {"attack": 0}
    import robustbench_rpc.attacks as attacks_pkg

    real = attacks_pkg.run_attack

    def counted(*args, **kwargs):
        calls["attack"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(attacks_pkg, "run_attack", counted)
    summary = attack("symvit_digits_patch8_32", SYMVIT, out=tmp_path / "r", **common)
    assert summary.resumed_batches == 2 and calls["attack"] == 1  # only the third batch is attacked again
    expected, got = _records(tmp_path / "ref"), _records(tmp_path / "r")
    assert list(got) == list(expected)
    for slug, records in expected.items():
        assert got[slug].equals(records)
    assert journal_directories(tmp_path / "r") == []


def test_journal_is_read_only_by_the_same_pass_and_survives_a_torn_file(tmp_path):
    context = {"batch_size": 8, "seed": 0}
    journal = BatchJournal(tmp_path, ["cell-a", "cell-b"], context)
    payload = {"rows": {"cell-a": [{"prob_max": 0.1 + 0.2, "x": 1e-310, "nan": float("inf")}]}}
    journal.add(0, payload)
    journal.add(1, payload)
    read = BatchJournal(tmp_path, ["cell-b", "cell-a"], context).load()  # order of the cells does not matter
    assert sorted(read) == [0, 1]
    row = read[0]["rows"]["cell-a"][0]
    assert row["prob_max"] == 0.1 + 0.2 and row["x"] == 1e-310 and row["nan"] == float("inf")  # exact floats
    assert BatchJournal(tmp_path, ["cell-a", "cell-b"], {"batch_size": 16, "seed": 0}).load() == {}
    assert BatchJournal(tmp_path, ["cell-a"], context).load() == {}
    (journal.directory / "batch-00000001.json").write_text('{"number": 1, "payl')  # torn by a crash
    assert sorted(BatchJournal(tmp_path, ["cell-a", "cell-b"], context).load()) == [0]
    journal.discard()
    assert not (tmp_path / JOURNAL_DIR).exists()


def test_nan_logits_are_an_error_and_nothing_is_stored(factory, tmp_path, capsys, monkeypatch):
    name, _ = factory
    monkeypatch.setenv("NAN_ABOVE", "-0.4")  # about half the digits are brighter (normalized mean)
    out = tmp_path / "nan"
    code, _, err = cli(capsys, "evaluate", "-m", name, "--suite", "digits", "--limit", "64", "--batch-size", "16",
                       "-q", "--out", str(out))
    assert code == 2
    assert err.startswith("Error: Model counting_factory:make returned non-finite logits (NaN or inf) for ")
    assert "of batch 0 of digits.clean" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # the directory this run created is removed again
    # into a directory with results already: no cell, no run record, no journal is left by the refused run
    monkeypatch.delenv("NAN_ABOVE")
    assert cli(capsys, "evaluate", "-m", name, "--suite", "digits", "--limit", "16", "-q", "--out", str(out))[0] == 0
    runs_before = sorted((out / "runs").iterdir())
    monkeypatch.setenv("NAN_ABOVE", "-0.4")
    code, _, err = cli(capsys, "evaluate", "-m", name, "--suite", "digits-c", "--corruptions", "fog",
                       "--severities", "1", "--limit", "64", "--batch-size", "16", "-q", "--out", str(out))
    assert code == 2 and "returned non-finite logits" in err
    assert sorted((out / "runs").iterdir()) == runs_before
    assert len(list((out / "cells").glob("*.parquet"))) == 1 and not (out / JOURNAL_DIR).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["runs"]) == 1


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--std", "0,0,0", "The normalization std must be finite numbers > 0 (the model divides by it), got [0.0, 0.0"),
    ("--std", "-0.2,0.2,0.2", "The normalization std must be finite numbers > 0"),
    ("--mean", "nan,0,0", "The normalization mean must be finite numbers, got [nan, 0.0, 0.0]."),
    ("--std", "inf,1,1", "The normalization std must be finite numbers > 0"),
])
def test_bad_normalization_is_refused_before_anything_runs(tmp_path, capsys, option, value, message):
    out = tmp_path / "r"
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "-c", SYMVIT, "--suite", "digits",
                       "--limit", "8", "-q", "--out", str(out), option, value)
    assert code == 2 and err.startswith(f"Error: {message}") and not out.exists()


def test_check_normalization_lengths_and_channels():
    check_normalization([0.5], [0.25], channels=3)
    check_normalization([0.5, 0.5, 0.5], [0.2, 0.2, 0.2], channels=3)
    with pytest.raises(UserError, match="has 3 mean value\\(s\\) but 2 std value\\(s\\)"):
        check_normalization([0.5] * 3, [0.2] * 2)
    with pytest.raises(UserError, match="has 2 values per statistic but the model takes 3 channels"):
        check_normalization([0.5] * 2, [0.2] * 2, channels=3)
    with pytest.raises(UserError, match="needs a mean and a std"):
        check_normalization([], [])


def test_folder_without_a_readable_image_is_refused_and_leaves_nothing(tmp_path, capsys):
    folder = tmp_path / "broken"
    make_imagefolder(folder, {w: 2 for w in WNIDS},
                     kinds={f"{w}/img_{i}.JPEG": "corrupt" for w in WNIDS for i in range(2)})
    out = tmp_path / "r"
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "--model-arg", "num_classes=1000",
                       "--suite", "folder", "--folder", str(folder), "-q", "--out", str(out))
    assert code == 2, err
    error = [line for line in err.splitlines() if line.startswith("Error:")]
    assert error == ["Error: None of the 4 image(s) of folder:broken could be read (corrupt image data), so "
                     "folder_broken.clean was not created; check the folder holds images PIL can open."]
    assert "Traceback" not in err
    assert not out.exists()


def test_skipped_images_are_said_on_the_terminal(tmp_path, capsys):
    folder = tmp_path / "some"
    make_imagefolder(folder, {w: 2 for w in WNIDS}, kinds={f"{WNIDS[0]}/img_1.JPEG": "corrupt"})
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "--model-arg", "num_classes=1000",
                       "--suite", "folder", "--folder", str(folder), "-q", "--out", str(tmp_path / "r"))
    assert code == 0
    assert "Skipped images in folder_some.clean: 3 loaded, 1 skipped (corrupt image data: 1).\n" in err


def test_save_adv_that_is_a_file_is_refused_before_the_attack(tmp_path, capsys):
    target = tmp_path / "adv.png"
    target.write_bytes(b"x")
    out = tmp_path / "r"
    code, _, err = cli(capsys, "attack", "-m", "symvit_digits_patch8_32", "-c", SYMVIT, "--dataset", "digits",
                       "--attack", "fgsm", "--eps", "2/255", "--limit", "8", "-q", "--out", str(out),
                       "--save-adv", str(target))
    assert code == 2
    assert err.strip() == f"Error: --save-adv {target} is a file; expected a directory (a new one, or one to add to)."
    assert not out.exists()


def test_output_locations_are_checked_before_the_work(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "--suite", "digits", "-q",
                       "--out", str(a_file / "r"))
    assert code == 2
    assert err.strip() == f"Error: --out {a_file / 'r'} cannot be created: {a_file} is a file, not a directory."
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # the tests may run as root, for whom every directory is writable: the permission check is what is tested
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "--suite", "digits", "-q",
                       "--out", str(locked / "r"))
    assert code == 2
    assert err.strip() == (f"Error: --out {locked / 'r'} cannot be created: permission denied on {locked}; choose "
                           "a location you can write to.")
    images = tmp_path / "images"
    make_imagefolder(images, {WNIDS[0]: 1})
    code, _, err = cli(capsys, "corrupt", "--input", str(images), "--output", str(locked / "c"),
                       "--corruptions", "fog", "--severities", "1")
    assert code == 2 and "--output" in err and "permission denied" in err and "Traceback" not in err
    assert not (locked / "c").exists()


def test_blocked_global_names_trust_checkpoint_in_both_torch_wordings(tmp_path, capsys):
    import torch

    class Poison:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "poison.pth"
    torch.save({"model": Poison()}, path)
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "-c", str(path), "--suite", "digits",
                       "-q", "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.strip() == (f"Error: Checkpoint {path} needs arbitrary unpickling to load (it pickles posix.system); "
                           "pass --trust-checkpoint (trust=True) only if you trust its source.")
    from robustbench_rpc.models.checkpoint import _BLOCKED_GLOBAL

    older = "Weights only load failed. Unsupported global: GLOBAL posix.system was not an allowed global"
    current = "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
    assert _BLOCKED_GLOBAL.search(older).group(1) == _BLOCKED_GLOBAL.search(current).group(1) == "posix.system"


def test_corrupt_cell_warning_is_one_plain_sentence(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "-c", SYMVIT, "--suite", "digits", "--limit",
               "8", "-q", "--out", str(out))[0] == 0
    cell = next((out / "cells").glob("*.parquet"))
    cell.write_bytes(cell.read_bytes()[:100])  # truncated
    code, _, err = cli(capsys, "table", str(out))
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith(f"Warning: Cell file {cell} is corrupt (")
    assert lines[0].endswith("it is treated as unfinished (left out of tables; the next run of its command "
                             "computes it again).")
    assert "CorruptCellWarning" not in err and ".py:" not in err


def test_force_drops_the_journal_and_finished_journals_are_pruned(tmp_path, monkeypatch):
    common = {"attacks": "fgsm", "eps": "4/255", "dataset": "digits", "limit": 24, "batch_size": 8,
              "progress": False, "device": "cpu"}
    killed_after_batches(monkeypatch, 2, lambda: attack("symvit_digits_patch8_32", SYMVIT, out=tmp_path / "r",
                                                        **common))
    assert len(journal_directories(tmp_path / "r")) == 1
    forced = attack("symvit_digits_patch8_32", SYMVIT, out=tmp_path / "r", force=True, **common)
    assert forced.resumed_batches == 0 and journal_directories(tmp_path / "r") == []
    # a journal whose cells are all finished (a kill between the last cell write and its removal) is pruned
    finished = [cell.spec.key() for cell in ResultsStore(tmp_path / "r").cell_files()]
    BatchJournal(tmp_path / "r", finished, {"batch_size": 8}).add(0, {"rows": {}})
    BatchJournal(tmp_path / "r", ["unfinished-cell"], {"batch_size": 8}).add(0, {"rows": {}})
    attack("symvit_digits_patch8_32", SYMVIT, out=tmp_path / "r", **common)  # nothing to compute
    left = journal_directories(tmp_path / "r")
    assert [json.loads((d / "journal.json").read_text())["cells"] for d in left] == [["unfinished-cell"]]


def test_batches_of_a_pass_over_fewer_cells_are_not_read_back(tmp_path):
    journal = BatchJournal(tmp_path, ["a", "b", "c"], {})
    journal.add(0, {"rows": {"a": [], "b": []}})
    journal.add(1, {"rows": {"a": [], "b": [], "c": []}})
    assert sorted(journal.load(needed=["a", "b"])) == [0, 1]
    assert sorted(journal.load(needed=["a", "c"])) == [1]


def test_a_pickle_that_is_no_checkpoint_is_not_sent_to_trust_checkpoint(tmp_path, capsys):
    import pickle

    path = tmp_path / "set.pth"
    path.write_bytes(pickle.dumps({"weights": {1, 2}}))
    code, _, err = cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "-c", str(path), "--suite", "digits",
                       "-q", "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip() == f"Error: {path} is not a PyTorch checkpoint (it could not be unpickled)."
