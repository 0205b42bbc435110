"""The results store: round trips, resume, atomicity, corruption detection, model refusal, provenance."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_results_helpers import PROVENANCE, SHA_A, SHA_B, classification_records, spec

from robustbench_rpc.errors import UserError
from robustbench_rpc.results.provenance import collect_provenance, fingerprint_directory
from robustbench_rpc.results.schema import SCHEMA_VERSION
from robustbench_rpc.results.store import CorruptCellError, CorruptCellWarning, ResultsStore

CLEAN = spec("symvit_tiny", SHA_A, "imagenet", "clean")
FOG = spec("symvit_tiny", SHA_A, "imagenet-c", "corruption", name="fog", severity=3)


def test_records_must_have_schema_columns(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    with pytest.raises(ValueError, match="lack the schema columns correct5"):
        store.write_cell(CLEAN, classification_records(3, 1).drop(columns=["correct5"]), PROVENANCE)


def test_round_trip_records_and_metadata(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "res", create=True)
    records = classification_records(12, 7, 10)
    path = store.write_cell(FOG, records, PROVENANCE, extra={"seconds": 1.5})
    assert path.name == f"{FOG.slug()}-{FOG.key()}.parquet"
    back, meta = ResultsStore(tmp_path / "res").read_cell(FOG)
    pd.testing.assert_frame_equal(back, records)
    assert back["top5"][0] == records["top5"][0] and isinstance(back["top5"][0], list)
    assert meta["spec"] == FOG.to_dict()
    assert meta["provenance"] == PROVENANCE
    assert meta["extra"] == {"seconds": 1.5}
    assert meta["num_rows"] == 12 and meta["schema_version"] == SCHEMA_VERSION
    ((cell_spec, cell_records, cell_meta),) = ResultsStore(tmp_path / "res").iter_cells()
    assert cell_spec == FOG and cell_meta == meta
    pd.testing.assert_frame_equal(cell_records, records)


def test_cell_file_is_self_describing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    path = store.write_cell(CLEAN, classification_records(3, 1), PROVENANCE)
    meta = json.loads(pq.read_metadata(path).metadata[b"robustbench_rpc"])
    assert meta["spec"]["model"] == "symvit_tiny" and meta["spec"]["checkpoint_sha256"] == SHA_A
    assert meta["provenance"]["device"] == "cpu"


def test_resume_has_cell_after_write_and_force_overwrite(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    assert not store.has(CLEAN)
    store.write_cell(CLEAN, classification_records(5, 1), PROVENANCE)
    reopened = ResultsStore(tmp_path, create=True)
    assert reopened.has(CLEAN) and not reopened.has(FOG)
    reopened.write_cell(CLEAN, classification_records(5, 4), PROVENANCE)  # --force recomputes: replaces
    records, _ = reopened.read_cell(CLEAN)
    assert int(records["correct1"].sum()) == 4
    assert len(list((tmp_path / "cells").iterdir())) == 1


def test_leftover_temp_file_is_ignored_and_cleaned(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    store.write_cell(CLEAN, classification_records(5, 1), PROVENANCE)
    leftover = tmp_path / "cells" / ".tmp-abcd.parquet"
    leftover.write_bytes(b"PAR1 half a file")
    assert [c.spec for c in store.cell_files()] == [CLEAN]
    fresh = tmp_path / "cells" / ".tmp-live.parquet"  # may belong to a writer still running: kept
    fresh.write_bytes(b"PAR1")
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    ResultsStore(tmp_path, create=True)
    assert not leftover.exists() and fresh.exists()


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path, create=True)

    def crash(table: object, where: str) -> None:
        Path(where).write_bytes(b"PAR1 partial")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_cell(CLEAN, classification_records(5, 1), PROVENANCE)
    assert list((tmp_path / "cells").iterdir()) == []
    assert not store.has(CLEAN)


def test_truncated_cell_file_is_corrupt_and_recomputed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    path = store.write_cell(CLEAN, classification_records(50, 20), PROVENANCE)
    store.write_cell(FOG, classification_records(50, 10), PROVENANCE)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(CorruptCellWarning, match="corrupt"):
        assert not store.has(CLEAN)
    with pytest.warns(CorruptCellWarning):
        assert [c.spec for c in store.cell_files()] == [FOG]
    with pytest.raises(CorruptCellError, match="is corrupt"):
        store.read_cell(CLEAN)
    store.write_cell(CLEAN, classification_records(50, 20), PROVENANCE)  # resume recomputes it
    assert store.has(CLEAN)


def test_row_count_mismatch_is_corrupt(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    path = store.write_cell(CLEAN, classification_records(6, 3), PROVENANCE)
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 4), path)  # keeps the metadata that says 6 rows
    with pytest.warns(CorruptCellWarning, match="4 rows where the metadata says 6"):
        assert not store.has(CLEAN)


def test_refuses_other_model_or_checkpoint_unless_mixed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True)
    store.write_cell(CLEAN, classification_records(4, 2), PROVENANCE)
    other_ckpt = spec("symvit_tiny", SHA_B, "imagenet", "clean")
    other_model = spec("fan_tiny", SHA_A, "imagenet", "clean")
    reopened = ResultsStore(tmp_path, create=True)
    for other in (other_ckpt, other_model):
        with pytest.raises(UserError, match="holds results of model 'symvit_tiny'"):
            reopened.write_cell(other, classification_records(4, 2), PROVENANCE)
        with pytest.raises(UserError, match="--allow-mixed"):
            reopened.check_compatible(other)
        with pytest.raises(UserError, match="holds results of"):
            reopened.start_run(PROVENANCE, model=other)
    assert len(reopened.runs()) == 0
    mixed = ResultsStore(tmp_path, create=True, allow_mixed=True)
    mixed.write_cell(other_ckpt, classification_records(4, 2), PROVENANCE)
    assert len(ResultsStore(tmp_path).model_identities) == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "is empty"),
        ("foreign", "has no manifest.json"),
        ("old", "schema version 0"),
        ("file", "is a file"),
    ],
)
def test_bad_results_directory(tmp_path: Path, setup: str, message: str) -> None:
    root = tmp_path / "res"
    if setup == "empty":
        root.mkdir()
    elif setup == "foreign":
        root.mkdir()
        (root / "notes.txt").write_text("hello")
    elif setup == "old":
        ResultsStore(root, create=True)
        manifest = json.loads((root / "manifest.json").read_text())
        (root / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    elif setup == "file":
        root.write_text("x")
    with pytest.raises(UserError, match=message):
        ResultsStore(root)


def test_create_refuses_foreign_nonempty_directory(tmp_path: Path) -> None:
    (tmp_path / "paper.tex").write_text("x")
    with pytest.raises(UserError, match="not empty and is not a robustbench-rpc results directory"):
        ResultsStore(tmp_path, create=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_results_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match="Cannot write to results directory"):
        ResultsStore(locked / "res", create=True)


def test_results_directory_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UserError, match="Cannot write to results directory .*plain/res"):
        ResultsStore(tmp_path / "plain" / "res", create=True)


def test_runs_record_provenance(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "n01").mkdir(parents=True)
    (data / "n01" / "a.JPEG").write_bytes(b"12345")
    (data / "n01" / "b.JPEG").write_bytes(b"123")
    fingerprint = fingerprint_directory(data)
    assert fingerprint["file_count"] == 2 and fingerprint["total_bytes"] == 8
    model_info = {"name": "symvit_tiny", "checkpoint_sha256": SHA_A}
    prov = collect_provenance(["robustbench-rpc", "run"], "cpu", 7, model_info, fingerprint)
    assert prov["checkpoint_sha256"] == SHA_A and prov["seed"] == 7 and prov["device"] == "cpu"
    assert prov["versions"]["torch"] and prov["versions"]["timm"] and prov["versions"]["robustbench-rpc"]
    assert prov["dataset"]["listing_sha256"] == fingerprint["listing_sha256"]
    (data / "n01" / "c.JPEG").write_bytes(b"1")
    assert fingerprint_directory(data)["listing_sha256"] != fingerprint["listing_sha256"]

    store = ResultsStore(tmp_path / "res", create=True)
    run_id = store.start_run(prov)
    assert (tmp_path / "res" / "runs" / f"{run_id}.json").exists()
    (run,) = ResultsStore(tmp_path / "res").runs()
    assert run["run_id"] == run_id and run["command_line"] == ["robustbench-rpc", "run"]
    json.dumps(prov)  # serialisable


KILL_WRITER = """
import sys
sys.path.insert(0, {tests!r})
from test_results_helpers import PROVENANCE, SHA_A, classification_records, spec
from robustbench_rpc.results.store import ResultsStore

store = ResultsStore({root!r}, create=True)
records = classification_records(20000, 15000)
for i in range(1000):
    store.write_cell(spec("symvit_tiny", SHA_A, "imagenet", "clean", name=str(i)), records, PROVENANCE)
"""


def test_kill_during_writes_leaves_only_complete_cells(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    root = tmp_path / "res"
    script = KILL_WRITER.format(tests=str(Path(__file__).parent), root=str(root))
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((root / "cells").glob("[!.]*.parquet"))) < 3:
            assert process.poll() is None, "the writer ended early"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    store = ResultsStore(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCellWarning)  # a corrupt (half-written) cell file fails the test
        cells = store.cell_files()
    assert len(cells) >= 3
    for cell in cells:
        assert len(store.read_records(cell)) == 20000
    for path in (root / "cells").iterdir():  # only finished cells and possibly one temp file
        assert path.name.startswith(".tmp-") or path in {c.path for c in cells}
