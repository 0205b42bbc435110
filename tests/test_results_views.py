"""Tidy table, views and exports on hand-made records with hand-computed numbers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_results_helpers import PROVENANCE, SHA_A, classification_records, spec, write_model

from robustbench_rpc.errors import UserError
from robustbench_rpc.reporting.exports import export, latex_escape
from robustbench_rpc.reporting.views import build_view
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import TIDY_COLUMNS, tidy

A, B = "symvit_tiny", "rpc_symvit_tiny"


@pytest.fixture(scope="module")
def two_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("views")
    write_model(root / "a", "A")
    write_model(root / "b", "B")
    return [root / "a", root / "b"]


@pytest.fixture(scope="module")
def table(two_dirs: list[Path]) -> pd.DataFrame:
    return tidy(two_dirs)


def value(frame: pd.DataFrame, model: str, metric: str, **coords: object) -> float:
    rows = frame[(frame["model"] == model) & (frame["metric"] == metric)]
    for column, wanted in coords.items():
        rows = rows[rows[column] == wanted]
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


def test_tidy_rows_and_coordinates(table: pd.DataFrame) -> None:
    assert tuple(table.columns) == TIDY_COLUMNS
    assert value(table, A, "top1", condition="clean") == pytest.approx(90.0)
    assert value(table, A, "top5", condition="clean") == pytest.approx(100.0)
    assert value(table, B, "error", condition="corruption", name="fog", severity=1) == pytest.approx(60.0)
    # clean A: 9 right at confidence 0.9 (gap 0.1), 1 wrong at 0.5 (gap 0.5) -> ECE 0.9 * 0.1 + 0.1 * 0.5
    assert value(table, A, "ece", condition="clean") == pytest.approx(14.0)
    fog = table[(table["name"] == "fog") & (table["metric"] == "top1") & (table["model"] == A)].iloc[0]
    assert fog["dataset"] == "imagenet-c" and fog["checkpoint_sha256"] == SHA_A and fog["n"] == 10
    # attack: 8 clean-correct, 4 still correct -> robust 40 %, success 4 of 8 = 50 %
    eps1 = 1 / 255
    assert value(table, A, "robust_top1", eps=eps1) == pytest.approx(40.0)
    assert value(table, A, "clean_top1", eps=eps1) == pytest.approx(80.0)
    assert value(table, A, "success_rate", eps=eps1) == pytest.approx(50.0)
    success = table[(table["metric"] == "success_rate") & (table["model"] == A) & (table["eps"] == eps1)]
    assert int(success["n"].iloc[0]) == 8
    assert value(table, A, "linf_max", eps=eps1) == pytest.approx(eps1)
    assert value(table, A, "linf_mean", eps=eps1) == pytest.approx(0.75 * eps1)
    attack = table[(table["condition"] == "attack")].iloc[0]
    assert attack["norm"] == "Linf" and attack["variant"] == '{"steps": 10}'


def test_summary_rows_mean_accuracy_and_partial_mce(table: pd.DataFrame) -> None:
    from robustbench_rpc.metrics.corruption import load_alexnet_errors

    alex = load_alexnet_errors().per_severity
    summary = table[table["condition"] == "imagenet-c-summary"]
    assert set(summary["model"]) == {A, B}
    # A: (80 + 60 + 50) / 3, B: (90 + 70 + 40) / 3
    assert value(summary, A, "mean_top1") == pytest.approx(190 / 3)
    assert value(summary, B, "mean_top1") == pytest.approx(200 / 3)
    assert value(summary, A, "mean_error") == pytest.approx(110 / 3)
    # 3 of the 75 standard cells: only a partial mCE, with AlexNet summed over the same severities
    ce_noise = (0.2 + 0.4) / (alex["gaussian_noise"][1] + alex["gaussian_noise"][2])
    ce_fog = 0.5 / alex["fog"][1]
    assert value(summary, A, "mce_partial") == pytest.approx(100 * (ce_noise + ce_fog) / 2)
    assert "mce" not in set(summary["metric"])
    clean = load_alexnet_errors().clean_error  # clean error of A: 10 %
    rce_noise = (0.2 - 0.1 + 0.4 - 0.1) / (alex["gaussian_noise"][1] + alex["gaussian_noise"][2] - 2 * clean)
    rce_fog = (0.5 - 0.1) / (alex["fog"][1] - clean)
    assert value(summary, A, "relative_mce_partial") == pytest.approx(100 * (rce_noise + rce_fog) / 2)


def test_full_grid_gives_mce(tmp_path: Path) -> None:
    from robustbench_rpc.metrics.corruption import STANDARD_CORRUPTIONS, load_alexnet_errors

    alex = load_alexnet_errors().per_severity
    store = ResultsStore(tmp_path, create=True)
    expected_ce = []
    for i, name in enumerate(STANDARD_CORRUPTIONS):
        errors = []
        for severity in range(1, 6):
            correct = (i + severity) % 5  # errors 100 %, 80 %, ... per cell of 5 samples
            errors.append(1 - correct / 5)
            cell = spec(A, SHA_A, "imagenet-c", "corruption", name=name, severity=severity)
            store.write_cell(cell, classification_records(5, correct), PROVENANCE)
        expected_ce.append(sum(errors) / sum(alex[name].values()))
    store.write_cell(
        spec(A, SHA_A, "imagenet-c", "corruption", name="spatter", severity=1), classification_records(5, 5), PROVENANCE
    )
    table = tidy(tmp_path)
    assert value(table, A, "mce") == pytest.approx(100 * sum(expected_ce) / 15)
    assert value(table, A, "mean_top1") == pytest.approx(40.0)  # 15 corruptions x (0+20+40+60+80) / 5
    assert value(table, A, "mean_top1_all") == pytest.approx((40.0 * 75 + 100.0) / 76)
    paper = build_view(table, "paper")
    assert paper["ImageNet-C mCE"].tolist() == pytest.approx([100 * sum(expected_ce) / 15])
    assert "ImageNet-C mCE (partial)" not in paper


def test_paper_view(table: pd.DataFrame) -> None:
    paper = build_view(table, "paper")
    assert list(paper["model"]) == ["SymViT", "RPC-SymViT (4 iter/layer 1)"]  # labels from the options
    columns = ["model", "clean top-1", "clean top-5", "ImageNet-C mCE (partial)", "ImageNet-C acc"]
    assert list(paper.columns) == columns
    assert paper["clean top-1"].tolist() == pytest.approx([90.0, 100.0])
    assert paper["ImageNet-C acc"].tolist() == pytest.approx([190 / 3, 200 / 3])
    assert "ImageNet-R top-1" not in paper  # no ImageNet-R cells: column left out


def test_corruptions_severity_and_attacks_views(table: pd.DataFrame) -> None:
    corruptions = build_view(table, "corruptions")
    assert list(corruptions["corruption"]) == ["gaussian_noise", "fog", "mean"]  # ImageNet-C order
    assert list(corruptions.columns) == ["corruption", A, B]
    assert corruptions[A].tolist() == pytest.approx([70.0, 50.0, 60.0])
    assert corruptions[B].tolist() == pytest.approx([80.0, 40.0, 60.0])

    severity = build_view(table, "severity")
    assert severity["severity"].tolist() == [1, 2]
    assert severity[A].tolist() == pytest.approx([65.0, 60.0])
    assert severity[B].tolist() == pytest.approx([65.0, 70.0])

    attacks = build_view(table, "attacks")
    assert list(attacks.columns) == ["attack", "norm", "eps", A, B]
    assert attacks["eps"].tolist() == ["1/255", "4/255"]  # budgets as written on the command line
    assert attacks[A].tolist() == pytest.approx([40.0, 10.0])
    assert attacks[B].tolist() == pytest.approx([60.0, 30.0])


def test_models_in_one_directory_and_labels(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path, create=True, allow_mixed=True)
    for options, correct in (({"rpc": "off"}, 3), ({"rpc": "on"}, 4)):
        cell = spec(A, SHA_A, "imagenet", "clean")
        cell = type(cell)(**{**cell.to_dict(), "model_options": options})
        store.write_cell(cell, classification_records(5, correct), PROVENANCE)
    paper = build_view(tidy(tmp_path), "paper")
    assert sorted(zip(paper["model"], paper["clean top-1"], strict=True)) == [
        (f"SymViT [{A}[rpc=off]]", pytest.approx(60.0)),  # one paper label for both: the model labels tell apart
        (f"SymViT [{A}[rpc=on]]", pytest.approx(80.0)),
    ]


def test_ood_cell_gets_detection_metrics(tmp_path: Path) -> None:
    from robustbench_rpc.metrics import ood

    records = classification_records(8, 4)
    records["label"] = [0, 1, 2, 3, -1, -1, -1, -1]
    records["correct1"] = [True, True, False, False, False, False, False, False]
    records["is_ood"] = [False] * 4 + [True] * 4
    records["ood_score"] = [-0.9, -0.8, -0.3, -0.7, -0.2, -0.6, -0.1, -0.5]
    store = ResultsStore(tmp_path, create=True)
    store.write_cell(spec(A, SHA_A, "imagenet_o", "ood"), records, PROVENANCE)
    table = tidy(tmp_path)
    positive = records["is_ood"].to_numpy()
    score = records["ood_score"].to_numpy()
    assert value(table, A, "aupr") == pytest.approx(100 * ood.aupr(positive, score))
    assert value(table, A, "top1") == pytest.approx(50.0)  # over the 4 labelled samples
    assert build_view(table, "paper")["ImageNet-O AUPR"].tolist() == pytest.approx([value(table, A, "aupr")])


def test_same_cell_in_two_directories_is_refused(two_dirs: list[Path]) -> None:
    with pytest.raises(UserError, match="is in both"):
        tidy([two_dirs[0], two_dirs[0]])


def test_unknown_view_and_empty_view(table: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="did you mean 'attacks'"):
        build_view(table, "attack")
    ResultsStore(tmp_path, create=True)
    with pytest.raises(UserError, match="has no finished cells"):
        tidy(tmp_path)
    clean_only = table[table["condition"] == "clean"]
    with pytest.raises(UserError, match="no cells for the attacks view"):
        build_view(clean_only, "attacks")


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_machine_exports_parse_back(table: pd.DataFrame, tmp_path: Path, fmt: str) -> None:
    view = build_view(table, "corruptions")
    out = tmp_path / f"view.{fmt}"
    assert export(view, fmt, out) is None
    if fmt == "csv":
        back = pd.read_csv(out)
    elif fmt == "json":
        back = pd.DataFrame(json.loads(out.read_text()))
    else:
        back = pd.read_parquet(out)
    assert list(back.columns) == list(view.columns)
    np.testing.assert_allclose(back[A].to_numpy(float), view[A].to_numpy(float))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    if fmt == "csv":
        pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(export(view, "csv"))), back)


def test_text_exports(table: pd.DataFrame) -> None:
    view = build_view(table, "attacks")
    md = export(view, "md")
    lines = md.splitlines()
    assert lines[0] == f"| attack | norm | eps | {A} | {B} |"
    assert lines[1].startswith("| :--- | :--- | :--- | ---: |")
    assert "| pgd | Linf | 1/255 | 40.00 | 60.00 |" in lines
    latex = export(view, "latex")
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\begin{tabular}{lllrr}" in latex
    assert "rpc\\_symvit\\_tiny" in latex and "& 1/255 &" in latex
    assert latex_escape("50% a_b & c") == "50\\% a\\_b \\& c"
    rendered = export(view, "table")
    assert "pgd" in rendered and "40.00" in rendered and A in rendered


def test_export_errors(table: pd.DataFrame, tmp_path: Path) -> None:
    view = build_view(table, "paper")
    with pytest.raises(UserError, match="give an output file with --out"):
        export(view, "parquet")
    with pytest.raises(UserError, match="did you mean 'latex'"):
        export(view, "latx")
    with pytest.raises(UserError, match="does not exist"):
        export(view, "csv", tmp_path / "missing" / "x.csv")
    with pytest.raises(UserError, match="is a directory"):
        export(view, "csv", tmp_path)


def test_budget_text_is_k_over_255_or_the_exact_value() -> None:
    import numpy as np

    from robustbench_rpc.names import eps_text

    assert eps_text(4 / 255, "Linf") == "4/255"
    assert eps_text(float(np.float32(8 / 255)), "Linf") == "8/255"  # a float32 measured norm
    assert eps_text(0.5 / 255, "Linf") == "0.5/255"
    assert eps_text(0.001, "Linf") == "0.001"  # not a multiple of 1/255: the exact value
    assert eps_text(0.5, "L2") == "0.5" and eps_text(2 / 255, "L2") == "0.00784314"  # L2: the value itself
    assert eps_text(float("nan"), "Linf") == "" and eps_text(None, "L2") == ""


def test_summary_table_prints_measured_norms_as_budgets() -> None:
    from robustbench_rpc.cli.evaluate import _value_text

    assert _value_text("linf_max", 4 / 255) == "4/255"  # was 0.02 (two decimals)
    assert _value_text("l2_max", 0.25) == "0.25"
    assert _value_text("robust_top1", 12.345) == "12.35"
