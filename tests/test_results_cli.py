"""The ``table`` command through typer's test runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from test_results_helpers import write_model
from typer.testing import CliRunner

from robustbench_rpc.cli.table import table_command
from robustbench_rpc.errors import UserError

A, B = "symvit_tiny", "rpc_symvit_tiny"


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("table")(table_command)

    @app.command("other")
    def other() -> None:  # a second command so that typer keeps "table" as a sub-command
        pass

    return app


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("cli")
    write_model(root / "a", "A")
    write_model(root / "b", "B")
    return [str(root / "a"), str(root / "b")]


def test_table_csv_to_stdout(app: typer.Typer, dirs: list[str]) -> None:
    result = CliRunner().invoke(app, ["table", *dirs, "--view", "attacks", "--format", "csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame[A].tolist() == pytest.approx([40.0, 10.0])
    assert frame[B].tolist() == pytest.approx([60.0, 30.0])


def test_table_default_is_paper_console_table(app: typer.Typer, dirs: list[str]) -> None:
    result = CliRunner().invoke(app, ["table", *dirs])
    assert result.exit_code == 0, result.output
    assert "clean top-1" in result.stdout and "90.00" in result.stdout
    assert "RPC-SymViT (4 iter/layer 1)" in result.stdout  # the paper's row label of B


def test_table_json_to_file(app: typer.Typer, dirs: list[str], tmp_path: Path) -> None:
    out = tmp_path / "paper.json"
    result = CliRunner().invoke(app, ["table", *dirs, "-f", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["SymViT", "RPC-SymViT (4 iter/layer 1)"]
    assert rows[0]["clean top-1"] == pytest.approx(90.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/results"], "does not exist"),
        (["{a}", "--format", "parquet"], "give an output file with --out"),
        (["{a}", "--view", "papr"], "did you mean 'paper'"),
        (["{a}", "--out", "/no/such/folder/t.csv", "-f", "csv"], "the folder /no/such/folder does not exist"),
    ],
)
def test_table_errors(app: typer.Typer, dirs: list[str], args: list[str], message: str) -> None:
    args = [a.format(a=dirs[0]) for a in args]
    result = CliRunner().invoke(app, ["table", *args])
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception)


def test_empty_results_directory(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["table", str(tmp_path)])
    assert isinstance(result.exception, UserError)
    assert str(result.exception) == (
        f"Results directory {tmp_path} is empty; expected the output of a robustbench-rpc run."
    )
