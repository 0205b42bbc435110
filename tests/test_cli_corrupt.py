from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from robustbench_rpc.cli.corrupt import corrupt_command
from robustbench_rpc.errors import UserError

app = typer.Typer()
app.command("corrupt")(corrupt_command)


@app.callback()
def _root() -> None:
    """Test app."""


def make_folder(root: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "in" / ("n01440764" if i % 2 == 0 else "n01443537")
        d.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((48 + 4 * i, 40, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"ILSVRC2012_val_{i:08d}.JPEG", quality=95)
    return root / "in"


def finished_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_writes_imagenet_c_layout_and_resumes(tmp_path: Path) -> None:
    src = make_folder(tmp_path)
    out = tmp_path / "out"
    args = [
        "corrupt",
        "--input",
        str(src),
        "--output",
        str(out),
        "--corruptions",
        "fog,contrast",
        "--severities",
        "1,5",
        "--resize",
        "40",
        "--crop",
        "32",
        "--batch-size",
        "2",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    files = finished_files(out)
    assert len(files) == 3 * 2 * 2
    f = out / "fog" / "5" / "n01443537" / "ILSVRC2012_val_00000001.JPEG"
    assert f in files
    with Image.open(f) as im:
        assert im.size == (32, 32) and im.format == "JPEG" and im.mode == "RGB"
    first = {p: p.read_bytes() for p in files}
    # resume: delete one file, rerun; only it is rewritten, identically (same seed, same batches)
    f.unlink()
    stamp = {p: p.stat().st_mtime_ns for p in files if p != f}
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Wrote 1 images" in res.output
    assert f.read_bytes() == first[f]
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]


def test_keep_size(tmp_path: Path) -> None:
    src = make_folder(tmp_path, n=2)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "corrupt",
            "-i",
            str(src),
            "-o",
            str(out),
            "--corruptions",
            "pixelate",
            "--severities",
            "2",
            "--keep-size",
        ],
    )
    assert res.exit_code == 0, res.output
    with Image.open(out / "pixelate" / "2" / "n01443537" / "ILSVRC2012_val_00000001.JPEG") as im:
        assert im.size == (40, 52)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--corruptions", "fogg"], "Unknown corruption 'fogg'"),
        (["--severities", "0,2"], "Severity '0' in --severities is invalid"),
        (["--severities", "6"], "expected integers from 1 to 5"),
        (["--limit", "0"], "--limit must be a positive"),
    ],
)
def test_bad_options(tmp_path: Path, extra: list[str], message: str) -> None:
    src = make_folder(tmp_path, n=1)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["corrupt", "-i", str(src), "-o", str(out), *extra])
    assert res.exit_code != 0
    assert isinstance(res.exception, UserError) and message in str(res.exception)
    assert not out.exists() or not finished_files(out)


def test_empty_or_missing_input(tmp_path: Path) -> None:
    (tmp_path / "empty" / "n01440764").mkdir(parents=True)
    (tmp_path / "empty" / "n01440764" / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["corrupt", "-i", str(tmp_path / "empty"), "-o", str(out)])
    assert isinstance(res.exception, UserError) and "contains no images" in str(res.exception)
    res = CliRunner().invoke(app, ["corrupt", "-i", str(tmp_path / "missing"), "-o", str(out)])
    assert isinstance(res.exception, UserError) and "does not exist" in str(res.exception)
    assert not out.exists()
