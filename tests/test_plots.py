"""Plots of small hand-made results: the figures' series, titles and labels, and the PNG / SVG files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from test_compare import PROVENANCE, A, B, correct_records, write_pair_dirs
from test_results_helpers import SHA_A, attack_records, spec
from typer.testing import CliRunner

from robustbench_rpc.cli.compare import plot_command
from robustbench_rpc.errors import UserError
from robustbench_rpc.reporting.plots import attack_figures, make_figures, write_plots
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_pair_dirs(tmp_path_factory.mktemp("plots"))


@pytest.fixture(scope="module")
def table(dirs: list[Path]) -> pd.DataFrame:
    return tidy(dirs)


def legend_texts(axes: object) -> list[str]:
    return [t.get_text() for t in axes.get_legend().get_texts()]


def test_attack_plot_lines(table: pd.DataFrame) -> None:
    figures = make_figures(table)
    assert list(figures) == ["attacks_pgd_linf", "corruptions", "severity"]
    axes = figures["attacks_pgd_linf"].axes[0]
    assert axes.get_title() == "Robust top-1 accuracy under pgd (Linf)"
    assert axes.get_xlabel() == "perturbation budget ε (units of 1/255)"
    assert axes.get_ylabel() == "robust top-1 accuracy (%)"
    assert legend_texts(axes) == [A, B]
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == [A, B]
    for line, expected in zip(lines, ([30.0, 10.0], [50.0, 25.0]), strict=True):  # 12, 4 / 20, 10 of 40
        assert np.asarray(line.get_xdata(), dtype=float) == pytest.approx([1.0, 4.0])
        assert np.asarray(line.get_ydata(), dtype=float) == pytest.approx(expected)


def test_corruption_bars(table: pd.DataFrame) -> None:
    axes = make_figures(table)["corruptions"].axes[0]
    assert axes.get_title() == "Top-1 accuracy per corruption (mean over severities)"
    assert axes.get_ylabel() == "top-1 accuracy (%)"
    assert [t.get_text() for t in axes.get_xticklabels()] == ["gaussian_noise", "fog", "mean"]
    assert legend_texts(axes) == [A, B]
    heights = [[bar.get_height() for bar in container] for container in axes.containers]
    assert heights[0] == pytest.approx([50.0, 70.0, 60.0])
    assert heights[1] == pytest.approx([55.0, 60.0, 57.5])


def test_severity_lines(table: pd.DataFrame) -> None:
    axes = make_figures(table)["severity"].axes[0]
    assert axes.get_xlabel().startswith("corruption severity")
    assert axes.get_ylabel() == "top-1 accuracy (%)"
    assert [line.get_label() for line in axes.get_lines()] == [A, B]
    assert [list(line.get_ydata()) for line in axes.get_lines()] == [[60.0], [57.5]]
    assert [list(line.get_xdata()) for line in axes.get_lines()] == [[3], [3]]


def test_files_are_valid_png_and_svg(table: pd.DataFrame, tmp_path: Path) -> None:
    written = write_plots(table, tmp_path / "out")
    names = sorted(p.name for plot in written for p in plot.paths)
    assert names == sorted(
        f"{s}.{f}" for s in ("attacks_pgd_linf", "corruptions", "severity") for f in ("png", "svg")
    )
    for plot in written:
        png, svg = plot.paths
        with Image.open(png) as image:
            image.verify()
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
        assert plot.figure.axes[0].get_title() in svg.read_text()
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_l2_attack_axis_in_pixel_units(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r", create=True)
    for eps in (0.5, 1.0):
        cell = spec(A, SHA_A, "imagenet", "attack", name="apgd-ce", norm="L2", eps=eps)
        store.write_cell(cell, attack_records(20, 15, 10 if eps == 0.5 else 5, eps), PROVENANCE)
    axes = attack_figures(tidy(tmp_path / "r"))["attacks_apgd_ce_l2"].axes[0]
    assert axes.get_xlabel() == "perturbation budget ε (L2 norm, pixel units in [0, 1])"
    assert list(axes.get_lines()[0].get_xdata()) == [0.5, 1.0]
    assert list(axes.get_lines()[0].get_ydata()) == [50.0, 25.0]


def test_nothing_to_plot(tmp_path: Path) -> None:
    ResultsStore(tmp_path / "r", create=True).write_cell(
        spec(A, SHA_A, "imagenet", "clean"), correct_records(0, 10), PROVENANCE
    )
    with pytest.raises(UserError, match="no attack or corruption cells to plot"):
        make_figures(tidy(tmp_path / "r"))


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("plot")(plot_command)

    @app.command("other")
    def other() -> None:  # a second command so that typer keeps "plot" as a sub-command
        pass

    return app


def test_cli_default_folder_and_formats(app: typer.Typer, tmp_path: Path) -> None:
    dirs = write_pair_dirs(tmp_path)
    result = CliRunner().invoke(app, ["plot", *map(str, dirs), "--formats", "svg"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (dirs[0] / "plots").iterdir()) == [
        "attacks_pgd_linf.svg",
        "corruptions.svg",
        "severity.svg",
    ]
    assert tidy(dirs)["model_label"].nunique() == 2  # the plots folder does not disturb the results directory


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--formats", "gif"], "Unknown plot format gif; expected png, svg, pdf."),
        (["--out", "{file}"], "is a file; expected a folder"),
    ],
)
def test_cli_errors(
    app: typer.Typer, dirs: list[Path], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.format(file=tmp_path / "file") for a in args]
    result = CliRunner().invoke(app, ["plot", str(dirs[0]), *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception)


def test_cli_empty_results(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert isinstance(result.exception, UserError)
    assert "is empty; expected the output of a robustbench-rpc run" in str(result.exception)
