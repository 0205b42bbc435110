"""The Markdown report and the leaderboard-style JSON on small hand-made results directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from PIL import Image
from test_compare import PROVENANCE, A, B, N, correct_records, write_models, write_pair_dirs
from test_results_helpers import SHA_A, SHA_B, attack_records, spec
from typer.testing import CliRunner

from robustbench_rpc.cli.compare import report_command
from robustbench_rpc.errors import UserError
from robustbench_rpc.reporting.report import robustbench_entries
from robustbench_rpc.reports import write_report, write_robustbench
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy

SECTIONS = ["## Provenance", "## Paper table", "## Corruptions", "## Attacks", "## Comparisons", "## Plots"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_pair_dirs(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def report(dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out") / "report.md"
    write_report(dirs, out, resamples=300)
    return out, out.read_text()


def section(text: str, title: str) -> str:
    start = text.index(title)
    following = [text.index(s) for s in SECTIONS if text.index(s) > start]
    return text[start : min(following) if following else len(text)]


def table_row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def test_sections_in_order(report: tuple[Path, str]) -> None:
    text = report[1]
    assert text.startswith("# Robustness report\n")
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert f"Models: **{A}**, **{B}**." in text


def test_provenance(report: tuple[Path, str]) -> None:
    text = section(report[1], "## Provenance")
    assert f"### {A}" in text and f"### {B}" in text
    assert f"checkpoint SHA-256: `{SHA_A}`" in text and f"checkpoint SHA-256: `{SHA_B}`" in text
    header = table_row(text, "run")
    assert header == [
        "run",
        "time",
        "robustbench-rpc",
        "torch",
        "timm",
        "device",
        "seed",
        "cells",
        "command line",
    ]
    runs = [line for line in text.splitlines() if "2025-01-02T03:04:05+00:00" in line]
    assert len(runs) == 2  # one run per model
    cells = [c.strip() for c in runs[0].strip("|").split("|")]
    assert cells[2:] == ["0.1.0", "2.5.0", "1.0.0", "cpu", "7", "5", "`robustbench-rpc eval --model x`"]
    assert f"listing SHA-256 `{'f' * 64}`" in text and "40 files" in text and "root `/data/val`" in text


def test_tables(report: tuple[Path, str]) -> None:
    text = report[1]
    paper = section(text, "## Paper table")
    assert table_row(paper, "SymViT")[1] == "75.00" and table_row(paper, "RPC-SymViT (4 iter/layer 1)")[1] == "90.00"
    corruptions = section(text, "## Corruptions")
    assert table_row(corruptions, "gaussian_noise")[1:] == ["50.00", "55.00"]
    assert table_row(corruptions, "fog")[1:] == ["70.00", "60.00"]
    assert table_row(corruptions, "3")[1:] == ["60.00", "57.50"]  # severity table
    attacks = section(text, "## Attacks")
    rows = [line for line in attacks.splitlines() if line.startswith("| pgd |")]
    assert [r.split("|")[-3:-1] for r in rows] == [[" 30.00 ", " 50.00 "], [" 10.00 ", " 25.00 "]]


def test_comparisons(report: tuple[Path, str]) -> None:
    text = section(report[1], "## Comparisons")
    assert f"Baseline: **{A}**" in text and "300 resamples" in text
    clean = table_row(text, "imagenet clean")
    assert clean[:7] == ["imagenet clean", "top1", B, str(N), "75.00", "90.00", "+15.00"]
    assert clean[8] == "0.0312"  # 6 discordant pairs, all for B: 2 / 2**6
    low, high = (float(v) for v in re.findall(r"[+-]\d+\.\d+", clean[7]))
    assert 0.0 < low < 15.0 < high
    assert table_row(text, "imagenet-c fog s3")[6] == "-10.00"


def test_plots_linked_and_written(report: tuple[Path, str]) -> None:
    out, text = report
    links = re.findall(r"!\[([^]]+)\]\(([^)]+)\)", section(text, "## Plots"))
    assert [link for _, link in links] == [
        "report_plots/attacks_pgd_linf.png",
        "report_plots/corruptions.png",
        "report_plots/severity.png",
    ]
    assert links[0][0] == "Robust top-1 accuracy under pgd (Linf)"
    for _, link in links:
        with Image.open(out.parent / link) as image:
            assert image.format == "PNG"
        assert (out.parent / link).with_suffix(".svg").stat().st_size > 0


def test_single_model_report_says_so(dirs: list[Path], tmp_path: Path) -> None:
    out = write_report(dirs[0], tmp_path / "one.md", plots=False)
    text = out.read_text()
    assert f"Only one model ({A}) is in the results; there is nothing to compare." in text
    assert "No attack or corruption cells to plot." in text and not (tmp_path / "one_plots").exists()


def test_report_with_bad_baseline(dirs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="Baseline 'deit' is not a model in the results"):
        write_report(dirs, tmp_path / "r.md", baseline="deit")
    assert not (tmp_path / "r.md").exists()


# ------------------------------------------------------------------------------------------- leaderboard
def test_robustbench_entries(dirs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "entries.json"
    written = write_robustbench(dirs, out)
    entries = json.loads(out.read_text())
    assert entries == written
    assert [e["name"] for e in entries] == [A, B]
    a = entries[0]
    assert a["architecture"] == A and a["dataset"] == "imagenet" and a["checkpoint_sha256"] == SHA_A
    assert a["clean_acc"] == "75.00" and a["n_examples"] == N
    assert a["corruptions_acc"] == "60.00"  # mean of 50 and 70
    assert a["corruptions_mce_partial"] is True and a["corruptions_mce"] is not None
    assert a["threat_model"] == "corruptions" and a["eps"] is None and a["autoattack_acc"] is None
    assert a["additional_data"] is False and a["number_forward_passes"] == 1
    assert a["robustbench_rpc_version"] == "0.1.0"
    assert [(r["eps_text"], r["acc"], r["n"]) for r in a["robust_acc"]] == [
        ("1/255", 30.0, N),
        ("4/255", 10.0, N),
    ]
    assert a["robust_acc"][0]["variant"] == {"steps": 10} and a["robust_acc"][0]["threat_model"] == "Linf"


def test_robustbench_autoattack_headline(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r", create=True)
    store.write_cell(spec(B, SHA_B, "imagenet", "clean"), correct_records(0, 32), PROVENANCE)
    for eps255, robust in ((2, 20), (4, 14)):
        cell = spec(B, SHA_B, "imagenet", "attack", name="autoattack", norm="Linf", eps=eps255 / 255)
        store.write_cell(cell, attack_records(N, 32, robust, eps255 / 255), PROVENANCE)
    (entry,) = robustbench_entries(tidy(tmp_path / "r"))
    assert (entry["threat_model"], entry["eps"], entry["autoattack_acc"]) == ("Linf", "4/255", "35.00")
    assert entry["clean_acc"] == "80.00" and entry["corruptions_acc"] is None


# ----------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("report")(report_command)

    @app.command("other")
    def other() -> None:  # a second command so that typer keeps "report" as a sub-command
        pass

    return app


def test_cli_markdown_and_robustbench(app: typer.Typer, dirs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rep.md"
    result = CliRunner().invoke(
        app, ["report", *map(str, dirs), "--out", str(out), "--baseline", "rpc", "--resamples", "100"]
    )
    assert result.exit_code == 0, result.output
    assert f"Baseline: **{B}**" in out.read_text()
    assert (tmp_path / "rep_plots" / "severity.png").exists()
    out_json = tmp_path / "rb.json"
    result = CliRunner().invoke(app, ["report", *map(str, dirs), "-o", str(out_json), "-f", "robustbench"])
    assert result.exit_code == 0, result.output
    assert [e["clean_acc"] for e in json.loads(out_json.read_text())] == ["75.00", "90.00"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}", "-o", "{tmp}/r.md", "-f", "html"], "Unknown report format 'html'"),
        (["{a}", "-o", "/no/such/folder/r.md"], "the folder /no/such/folder does not exist"),
        (["{empty}", "-o", "{tmp}/r.md"], "is empty; expected the output of a robustbench-rpc run"),
        (["{a}", "{b}", "-o", "{tmp}/r.md", "-b", "x"], "Baseline 'x' is not a model in the results"),
    ],
)
def test_cli_errors(
    app: typer.Typer, dirs: list[Path], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    paths = {"a": dirs[0], "b": dirs[1], "empty": tmp_path / "empty", "tmp": tmp_path}
    result = CliRunner().invoke(app, ["report", *[a.format(**paths) for a in args]])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception)
    assert not (tmp_path / "r.md").exists()


def test_mixed_directory_report(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "mixed", create=True, allow_mixed=True)
    write_models(store, ("A", "B"))
    text = write_report(tmp_path / "mixed", tmp_path / "m.md", resamples=50, plots=False).read_text()
    assert table_row(section(text, "## Comparisons"), "imagenet clean")[6] == "+15.00"
