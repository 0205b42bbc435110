"""Paired comparisons (bootstrap intervals, McNemar) on small hand-made results directories, and the CLI.

The statistics themselves are tested in test_metrics_paired.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from test_results_helpers import SHA_A, SHA_B, attack_records, classification_records, spec
from typer.testing import CliRunner

from robustbench_rpc.cli.compare import compare_command
from robustbench_rpc.errors import UserError
from robustbench_rpc.metrics import ood
from robustbench_rpc.metrics.paired import bootstrap_accuracy_difference
from robustbench_rpc.results.compare import compare
from robustbench_rpc.results.store import ResultsStore

A, B = "symvit_tiny", "rpc_symvit_tiny"
N = 40
PROVENANCE = {
    "time": "2025-01-02T03:04:05+00:00",
    "device": "cpu",
    "seed": 7,
    "versions": {"robustbench-rpc": "0.1.0", "torch": "2.5.0", "timm": "1.0.0"},
    "command_line": ["robustbench-rpc", "eval", "--model", "x"],
    "dataset": {"root": "/data/val", "file_count": 40, "total_bytes": 1234, "listing_sha256": "f" * 64},
}
#: Top-1 correctness of each cell: sample i is correct when lo <= i < hi, per model (A, B).
CORRECT_RANGES = {
    ("imagenet", "clean", ()): ((0, 30), (0, 36)),
    ("imagenet-c", "corruption", (("name", "gaussian_noise"), ("severity", 3))): ((0, 20), (4, 26)),
    ("imagenet-c", "corruption", (("name", "fog"), ("severity", 3))): ((0, 28), (0, 24)),
}
#: Attack cells: eps (x/255) -> (clean correct, robust correct) of the first samples, per model (A, B).
ATTACK_COUNTS = {1: ((30, 12), (36, 20)), 4: ((30, 4), (36, 10))}


def correct_records(lo: int, hi: int, n: int = N) -> pd.DataFrame:
    """Return classification records whose samples lo..hi-1 are top-1 correct."""
    frame = classification_records(n, n)
    correct = [lo <= i < hi for i in range(n)]
    frame["correct1"] = correct
    frame["pred"] = [lab if ok else (lab + 1) % 7 for lab, ok in zip(frame["label"], correct, strict=True)]
    frame["prob_max"] = [0.5 + 0.4 * ok for ok in correct]
    return frame


def write_models(store: ResultsStore, which: tuple[str, ...] = ("A", "B"), shuffle_b: bool = False) -> None:
    """Write the cells of models A and/or B into ``store`` (B's clean records in shuffled order if asked)."""
    for key in which:
        model, sha, k = (A, SHA_A, 0) if key == "A" else (B, SHA_B, 1)
        run_id = store.start_run(PROVENANCE, model=spec(model, sha, "imagenet", "clean"))
        for (dataset, condition, params), ranges in CORRECT_RANGES.items():
            records = correct_records(*ranges[k])
            if shuffle_b and key == "B" and condition == "clean":
                records = records.sample(frac=1.0, random_state=3).reset_index(drop=True)
            store.write_cell(
                spec(model, sha, dataset, condition, **dict(params)), records, PROVENANCE, run_id=run_id
            )
        for eps255, counts in ATTACK_COUNTS.items():
            clean, robust = counts[k]
            cell = spec(model, sha, "imagenet", "attack", name="pgd", norm="Linf", eps=eps255 / 255, steps=10)
            store.write_cell(cell, attack_records(N, clean, robust, eps255 / 255), PROVENANCE, run_id=run_id)


def write_pair_dirs(root: Path) -> list[Path]:
    """Write model A into root/a and model B into root/b; return the two directories."""
    write_models(ResultsStore(root / "a", create=True), ("A",))
    write_models(ResultsStore(root / "b", create=True), ("B",))
    return [root / "a", root / "b"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_pair_dirs(tmp_path_factory.mktemp("compare"))


@pytest.fixture(scope="module")
def frame(dirs: list[Path]) -> pd.DataFrame:
    return compare(dirs)


def row(frame: pd.DataFrame, cell: str) -> pd.Series:
    rows = frame[frame["cell"] == cell]
    assert len(rows) == 1, frame["cell"].tolist()
    return rows.iloc[0]


# -------------------------------------------------------------------------------------------- comparisons
def test_compare_values_against_hand_counts(frame: pd.DataFrame) -> None:
    assert frame["cell"].tolist() == [
        "imagenet clean",
        "imagenet-c gaussian_noise s3",
        "imagenet-c fog s3",
        "imagenet pgd Linf 1/255 [steps=10]",
        "imagenet pgd Linf 4/255 [steps=10]",
    ]
    assert set(frame["baseline"]) == {A} and set(frame["model"]) == {B}
    assert (frame["n"] == N).all()
    expected = {  # cell: (A %, B %, McNemar p from the discordant counts)
        "imagenet clean": (75.0, 90.0, 2 / 2**6),  # 0 vs 6 discordant
        "imagenet-c gaussian_noise s3": (50.0, 55.0, 2 * (1 + 10 + 45 + 120 + 210) / 2**10),  # 4 vs 6
        "imagenet-c fog s3": (70.0, 60.0, 2 / 2**4),  # 4 vs 0
        "imagenet pgd Linf 1/255 [steps=10]": (30.0, 50.0, 2 / 2**8),  # 0 vs 8
        "imagenet pgd Linf 4/255 [steps=10]": (10.0, 25.0, 2 / 2**6),  # 0 vs 6
    }
    for cell, (value_a, value_b, p) in expected.items():
        r = row(frame, cell)
        assert (r["baseline_value"], r["model_value"]) == pytest.approx((value_a, value_b))
        assert r["diff"] == pytest.approx(value_b - value_a)
        assert r["p_value"] == pytest.approx(p)
        assert r["ci_low"] <= r["diff"] <= r["ci_high"]
    assert row(frame, "imagenet clean")["metric"] == "top1"
    assert row(frame, "imagenet pgd Linf 4/255 [steps=10]")["metric"] == "robust_top1"
    assert row(frame, "imagenet pgd Linf 4/255 [steps=10]")["eps"] == pytest.approx(4 / 255)


def test_compare_interval_is_the_paired_bootstrap(frame: pd.DataFrame) -> None:
    # clean: B is right wherever A is, plus on samples 30..35; the interval is that of the default bootstrap
    base = np.array([i < 30 for i in range(N)])
    model = np.array([i < 36 for i in range(N)])
    r = row(frame, "imagenet clean")
    assert (r["ci_low"], r["ci_high"]) == bootstrap_accuracy_difference(base, model, resamples=2000, seed=0)
    assert r["ci_low"] > 0.0  # every resample favours B (a resample without any of the 6 has p = 0.85**40)


def test_compare_baseline_choice_and_prefix(dirs: list[Path], frame: pd.DataFrame) -> None:
    reverse = compare(dirs, baseline="rpc_sym", resamples=200)
    assert set(reverse["baseline"]) == {B} and set(reverse["model"]) == {A}
    assert reverse["diff"].tolist() == pytest.approx((-frame["diff"]).tolist())
    assert reverse["p_value"].tolist() == pytest.approx(frame["p_value"].tolist())


def test_compare_pairs_by_sample_id_and_mixed_directory(tmp_path: Path, frame: pd.DataFrame) -> None:
    store = ResultsStore(tmp_path / "mixed", create=True, allow_mixed=True)
    write_models(store, ("A", "B"), shuffle_b=True)
    mixed = compare(tmp_path / "mixed")
    columns = ["cell", "baseline", "model", "n", "baseline_value", "model_value", "diff", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(mixed[columns], frame[columns])
    # the default baseline is the model stored first
    store = ResultsStore(tmp_path / "b_first", create=True, allow_mixed=True)
    write_models(store, ("B", "A"))
    assert set(compare(tmp_path / "b_first", resamples=50)["baseline"]) == {B}


def test_compare_uses_only_paired_samples(tmp_path: Path) -> None:
    a = ResultsStore(tmp_path / "a", create=True)
    b = ResultsStore(tmp_path / "b", create=True)
    a.write_cell(spec(A, SHA_A, "imagenet", "clean"), correct_records(0, 30), PROVENANCE)
    # B was evaluated on the last 30 samples only: 20 of them (10..29) correct
    b.write_cell(spec(B, SHA_B, "imagenet", "clean"), correct_records(10, 30).iloc[10:], PROVENANCE)
    r = compare([tmp_path / "a", tmp_path / "b"], resamples=100).iloc[0]
    assert r["n"] == 30
    assert (r["baseline_value"], r["model_value"]) == pytest.approx((100 * 20 / 30, 100 * 20 / 30))
    assert r["p_value"] == 1.0


def test_compare_ood_cell_uses_aupr(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    positive = rng.random(80) < 0.5
    scores = {A: rng.normal(size=80) + 0.5 * positive, B: rng.normal(size=80) + 1.5 * positive}
    for model, sha in ((A, SHA_A), (B, SHA_B)):
        records = classification_records(80, 40)
        records["label"] = np.where(positive, -1, records["label"])
        records["is_ood"] = positive
        records["ood_score"] = scores[model]
        store = ResultsStore(tmp_path / model, create=True)
        store.write_cell(spec(model, sha, "imagenet-o", "ood"), records, PROVENANCE)
    r = compare([tmp_path / A, tmp_path / B], resamples=300).iloc[0]
    assert r["metric"] == "aupr" and np.isnan(r["p_value"]) and r["n"] == 80
    assert r["baseline_value"] == pytest.approx(100 * ood.aupr(positive, scores[A]))
    assert r["model_value"] == pytest.approx(100 * ood.aupr(positive, scores[B]))
    assert r["ci_low"] <= r["diff"] <= r["ci_high"]


# -------------------------------------------------------------------------------------------------- errors
def test_unknown_baseline(dirs: list[Path]) -> None:
    with pytest.raises(
        UserError,
        match=r"Baseline 'symvit_tinny' is not a model in the results; expected one of "
        r"symvit_tiny, rpc_symvit_tiny \(did you mean 'symvit_tiny'",
    ):
        compare(dirs, baseline="symvit_tinny")


def test_no_shared_cell(tmp_path: Path) -> None:
    ResultsStore(tmp_path / "a", create=True).write_cell(
        spec(A, SHA_A, "imagenet", "clean"), correct_records(0, 10), PROVENANCE
    )
    ResultsStore(tmp_path / "b", create=True).write_cell(
        spec(B, SHA_B, "imagenet-c", "corruption", name="fog", severity=1), correct_records(0, 10), PROVENANCE
    )
    with pytest.raises(UserError, match=f"Models {B} share no cell .* with baseline {A}"):
        compare([tmp_path / "a", tmp_path / "b"])


def test_single_model(dirs: list[Path]) -> None:
    with pytest.raises(UserError, match=f"only model {A}; a comparison needs at least two models"):
        compare(dirs[0])


# ----------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("compare")(compare_command)

    @app.command("other")
    def other() -> None:  # a second command so that typer keeps "compare" as a sub-command
        pass

    return app


def test_cli_csv_to_stdout(app: typer.Typer, dirs: list[Path]) -> None:
    result = CliRunner().invoke(app, ["compare", *map(str, dirs), "-f", "csv", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert table["diff"].tolist() == pytest.approx([15.0, 5.0, -10.0, 20.0, 15.0])
    assert table["n"].tolist() == [N] * 5


def test_cli_console_table_and_markdown_file(app: typer.Typer, dirs: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", *map(str, dirs), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "Comparison against symvit_tiny" in result.stdout
    assert "+15.00" in result.stdout and "0.0312" in result.stdout
    assert "imagenet pgd Linf 4/255 [steps=10]" in result.stdout  # not swallowed as rich markup
    out = tmp_path / "cmp.md"
    result = CliRunner().invoke(app, ["compare", *map(str, dirs), "-f", "md", "-o", str(out), "-b", B])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("| cell | metric | model | n | rpc_symvit_tiny (baseline) |")
    assert "| imagenet clean | top1 | symvit_tiny | 40 | 90.00 | 75.00 | -15.00 |" in lines[2]


def test_cli_json_file(app: typer.Typer, dirs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(app, ["compare", *map(str, dirs), "-f", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert rows[0]["cell"] == "imagenet clean" and rows[0]["p_value"] == pytest.approx(1 / 32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}", "{b}", "--baseline", "vit_base"], "Baseline 'vit_base' is not a model in the results"),
        (["{a}", "{b}", "--format", "xlsx"], "Unknown format 'xlsx'"),
        (["{empty}"], "is empty; expected the output of a robustbench-rpc run"),
        (["{old}", "{b}"], "uses results schema version 0, but this robustbench-rpc reads version 1"),
        (["{a}"], "a comparison needs at least two models"),
    ],
)
def test_cli_errors(
    app: typer.Typer, dirs: list[Path], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    old = tmp_path / "old"
    write_models(ResultsStore(old, create=True), ("A",))
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 0}))
    paths = {"a": dirs[0], "b": dirs[1], "empty": tmp_path / "empty", "old": old}
    result = CliRunner().invoke(app, ["compare", *[a.format(**paths) for a in args]])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)
    assert message in str(result.exception)
