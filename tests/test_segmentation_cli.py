"""Segmentation through the commands: table --view segmentation, compare with paired bootstrap intervals, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clirun import run_cli
from test_segmentation_engine import ColourModel, SceneSource

from robustbench_rpc.errors import UserError
from robustbench_rpc.metrics.segmentation import class_areas, segmentation_metrics
from robustbench_rpc.results.tidy import tidy
from robustbench_rpc.segment import evaluate_segmentation

RUN = {"batch_size": 5, "progress": False, "device": "cpu", "corruptions": "gaussian_noise,brightness,fog",
       "severities": "2"}


def _worse() -> ColourModel:
    model = ColourModel()
    with torch.no_grad():
        model.conv.bias.copy_(torch.tensor([0.4, -0.3, -3.0]))  # misses the green squares: lower mIoU
    return model


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Results of two stand-in Segmenters (plain and RPC, as the paper labels them), clean and corrupted."""
    root = tmp_path_factory.mktemp("seg")
    evaluate_segmentation(ColourModel(), out=root / "sym", data=SceneSource(), suite="clean,corrupted",
                          model_name="segmenter_symvit_tiny_mask", **RUN)
    evaluate_segmentation(_worse(), out=root / "rpc", data=SceneSource(), suite="clean,toy-scenes-c",
                          model_name="segmenter_rpc_symvit_tiny_mask",
                          model_options={"rpc_iters": 2, "rpc_layers": "all"}, **RUN)
    return root


def test_table_view_segmentation_in_the_paper_layout(two_models, capsys):
    code, out, err = run_cli(capsys, "table", str(two_models / "sym"), str(two_models / "rpc"), "--view",
                             "segmentation", "--format", "md")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "| model | clean mAcc | clean mIoU | corrupted mAcc | corrupted mIoU |"
    assert lines[2].startswith("| SymViT | ") and lines[3].startswith("| RPC-SymViT (2 iter/all layers) | ")
    frame = tidy([two_models / "sym", two_models / "rpc"])
    sym = frame[frame["model"] == "segmenter_symvit_tiny_mask"]
    clean = sym[(sym["condition"] == "clean") & (sym["metric"] == "mIoU")]["value"].item()
    corrupted = sym[(sym["condition"] == "corruption") & (sym["metric"] == "mIoU")]["value"].mean()
    assert lines[2].split(" | ")[2] == f"{clean:.2f}" and lines[2].split(" | ")[4].rstrip(" |") == f"{corrupted:.2f}"
    code, out, _ = run_cli(capsys, "table", str(two_models / "sym"), "--view", "segmentation", "--format", "latex")
    assert code == 0 and "\\begin{tabular}" in out and "SymViT" in out


def test_compare_gives_paired_bootstrap_intervals_over_images(two_models, capsys):
    code, out, err = run_cli(capsys, "compare", str(two_models / "sym"), str(two_models / "rpc"), "--format",
                             "json", "--resamples", "300")
    assert code == 0, err
    rows = json.loads(out)
    clean = [r for r in rows if r["condition"] == "clean"]
    assert [r["metric"] for r in clean] == ["mIoU", "mAcc"] and all(r["n"] == 10 for r in clean)
    source = SceneSource()
    with torch.no_grad():
        base = ColourModel()(source.images).argmax(1).numpy()
        other = _worse()(source.images).argmax(1).numpy()
    masks = source.masks.numpy()
    expected = (segmentation_metrics(class_areas(other, masks, 3))["mIoU"]
                - segmentation_metrics(class_areas(base, masks, 3))["mIoU"])
    miou = clean[0]
    assert miou["diff"] == pytest.approx(expected) and expected < 0
    assert miou["ci_low"] <= miou["diff"] <= miou["ci_high"]
    # the interval is that of resampling the same images for both models
    rng = np.random.default_rng(0)
    diffs = []
    areas = [[class_areas(p[i], masks[i], 3) for i in range(10)] for p in (base, other)]
    for _ in range(300):
        counts = np.bincount(rng.integers(0, 10, 10), minlength=10)
        values = []
        for per_image in areas:
            total = per_image[0]
            total = type(total)(*(sum(c * getattr(a, f) for c, a in zip(counts, per_image, strict=True))
                                  for f in ("intersect", "union", "pred", "label")))
            values.append(segmentation_metrics(total)["mIoU"])
        diffs.append(values[1] - values[0])
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    assert (miou["ci_low"], miou["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert len([r for r in rows if r["condition"] == "corruption"]) == 6  # 3 cells x (mIoU, mAcc)


def test_report_has_a_segmentation_section_with_bars_and_masks(two_models, tmp_path, capsys):
    report = tmp_path / "report.md"
    code, _, err = run_cli(capsys, "report", str(two_models / "sym"), str(two_models / "rpc"), "--out",
                           str(report))
    assert code == 0, err
    text = report.read_text()
    section = text.split("## Segmentation\n", 1)[1].split("\n## ", 1)[0]
    assert "| model | clean mAcc | clean mIoU | corrupted mAcc | corrupted mIoU |" in section
    assert "| corruption | SymViT | RPC-SymViT (2 iter/all layers) |" in section
    assert "![Predicted masks of SymViT on toy-scenes](report_plots/masks_segmenter_symvit_tiny_mask_toy_scenes.png)" \
        in section
    plots = tmp_path / "report_plots"
    assert (plots / "segmentation_corruptions.png").is_file()
    assert (plots / "masks_segmenter_rpc_symvit_tiny_mask_toy_scenes.png").is_file()


def test_segmentation_view_of_classification_results_is_a_sentence(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", "-m", "symvit_digits_patch8_32", "--suite", "digits", "--limit", "8",
                           "--out", str(tmp_path / "cls"), "--quiet")
    assert code == 0, err
    code, _, err = run_cli(capsys, "table", str(tmp_path / "cls"), "--view", "segmentation")
    assert code != 0
    assert "The results have no segmentation cells for the segmentation view; run evaluate --task segmentation " \
           "first." in err


DIGITS = ["--num-classes", "11", "--data", "digit-scenes", "--limit", "3", "--batch-size", "3", "--quiet"]


def test_evaluate_and_attack_on_digit_scenes_end_to_end(tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, err = run_cli(capsys, "evaluate", "--task", "segmentation", "-m", "segmenter_symvit_digits",
                                *DIGITS, "--suite", "clean,digit-scenes-c", "--corruptions", "fog",
                                "--severities", "2", "--out", str(out))
    assert code == 0, err
    assert "random weights" in err and "mIoU" in stdout and "2 cell(s) computed" in stdout
    code, stdout, err = run_cli(capsys, "attack", "--task", "segmentation", "-m", "segmenter_symvit_digits",
                                *DIGITS, "--attack", "pgd,segpgd", "--eps", "1/255,2/255", "--option", "steps=2",
                                "--out", str(out))
    assert code == 0, err
    assert "4 cell(s) computed" in stdout
    frame = tidy(out)
    attacks = frame[(frame["condition"] == "attack") & (frame["metric"] == "linf_max")]
    # each budget used up to float32 rounding (the attack's own check allows no more)
    assert sorted(attacks["value"] * 255) == pytest.approx([1, 1, 2, 2], abs=1e-4)
    for eps, variant in zip(attacks["eps"], attacks["variant"], strict=True):  # what ran is in the cell
        assert json.loads(variant) == {"limit": 3, "step_size": pytest.approx(2.5 * eps / 2), "steps": 2,
                                       "task": "segmentation", "seed": 0, "batch_size": 3}  # random starts
    code, stdout, err = run_cli(capsys, "table", str(out), "--view", "segmentation", "--format", "md")
    assert code == 0, err
    header = stdout.strip().splitlines()[0]
    assert header == ("| model | clean mAcc | clean mIoU | corrupted mAcc | corrupted mIoU | worst case 1/255 mAcc | "
                      "worst case 1/255 mIoU | worst case 2/255 mAcc | worst case 2/255 mIoU | PGD 1/255 mAcc | "
                      "PGD 1/255 mIoU | PGD 2/255 mAcc | PGD 2/255 mIoU | SegPGD 1/255 mAcc | SegPGD 1/255 mIoU | "
                      "SegPGD 2/255 mAcc | SegPGD 2/255 mIoU |")
    row = stdout.strip().splitlines()[2]
    assert row.startswith("| SymViT | ")
    values = [float(v) for v in row.strip("|").split("|")[1:]]
    for k in range(4):  # the worst case is at most every attack's value at its budget and metric
        assert values[4 + k] <= min(values[8 + k], values[12 + k]) + 1e-9
    assert "Threat model pixel" in stdout
    code, stdout, _ = run_cli(capsys, "evaluate", "--task", "segmentation", "-m", "segmenter_symvit_digits",
                              *DIGITS, "--suite", "clean", "--out", str(out))
    assert code == 0 and "0 cell(s) computed, 1 already finished" in stdout  # finished cells are skipped


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "--task", "segmentation", "--imagenet", "/data"], "--imagenet does not apply to --task "
     "segmentation; its data is --data digit-scenes, ade20k:PATH or segfolder:PATH."),
    (["evaluate", "--task", "detection"], "Unknown --task 'detection'; expected classification or segmentation."),
    (["evaluate", "--suite", "digits"], "segmenter_symvit_digits is a segmentation model; pass --task segmentation "
     "with --data digit-scenes, ade20k:PATH or segfolder:PATH."),
    (["evaluate", "--task", "segmentation", "--data", "digit-scenes", "--suite", "clean,imagenet-c"],
     "Unknown segmentation suite entry 'imagenet-c'; expected some of clean, corrupted, digit-scenes-c."),
    (["evaluate", "--task", "segmentation"], "--task segmentation needs --data: digit-scenes (embedded), "
     "ade20k:PATH (ADEChallengeData2016) or segfolder:PATH (images/, masks/, classes.txt)."),
    (["attack", "--task", "segmentation", "--data", "digit-scenes", "--attack", "cw", "--eps", "1/255"],
     "Unknown segmentation attack 'cw'; expected some of pgd, fgsm, segpgd."),
    (["attack", "--task", "segmentation", "--data", "digit-scenes"], "attack --task segmentation needs --eps, "
     "e.g. --eps 1/255,2/255."),
    (["attack", "--task", "segmentation", "--data", "digit-scenes", "--eps", "1/255", "--option", "restarts=2"],
     "Segmentation attacks take no option restarts; their options are steps and step_size."),
    (["evaluate", "--task", "segmentation", "--data", "ade20k:/nonexistent/ade"], "ADE20K folder /nonexistent/ade "
     "does not exist; expected the ADEChallengeData2016 layout"),
])
def test_bad_input_is_one_sentence_and_nothing_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "r"
    command, rest = argv[0], argv[1:]
    code, _, err = run_cli(capsys, command, "-m", "segmenter_symvit_digits", "--num-classes", "11", "--quiet",
                           "--out", str(out), *rest)
    assert code != 0
    text = " ".join(err.split())
    assert message in text and "Traceback" not in err
    assert not out.exists()


def test_a_segmentation_model_with_other_classes_than_the_data_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", "--task", "segmentation", "-m", "segmenter_symvit_digits",
                           "--num-classes", "5", "--data", "digit-scenes", "--limit", "2", "--quiet", "--out",
                           str(tmp_path / "r"))
    assert code != 0 and "The model has 5 outputs but digit-scenes has 11 classes" in " ".join(err.split())
    assert not (tmp_path / "r").exists()


def test_plot_writes_the_segmentation_figures(two_models, tmp_path, capsys):
    code, _, err = run_cli(capsys, "plot", str(two_models / "sym"), str(two_models / "rpc"), "--out",
                           str(tmp_path / "plots"))
    assert code == 0, err
    assert (tmp_path / "plots" / "segmentation_corruptions.png").is_file()
    assert (tmp_path / "plots" / "segmentation_corruptions.svg").is_file()


def test_robustbench_entries_of_segmentation_results_are_refused(two_models, tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", str(two_models / "sym"), "--format", "robustbench", "--out",
                           str(tmp_path / "entries.json"))
    assert code != 0 and not (tmp_path / "entries.json").exists()
    assert ("RobustBench entries are for classification results, but these hold only segmentation cells; use "
            "report --format md or table --view segmentation.") in " ".join(err.split())


def test_image_size_resizes_images_and_masks_before_the_model(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", "--task", "segmentation", "-m", "segmenter_symvit_digits",
                           "--num-classes", "11", "--data", "digit-scenes", "--limit", "2", "--image-size", "32",
                           "--keep-predictions", "0", "--quiet", "--out", str(tmp_path / "r"))
    assert code == 0, err
    from robustbench_rpc.results.store import ResultsStore

    store = ResultsStore(tmp_path / "r")
    (cell,) = store.cell_files()
    records = store.read_records(cell)
    from robustbench_rpc.data.segmentation import load_segmentation_source

    _, batch = next(iter(load_segmentation_source("digit-scenes", limit=2, image_size=32).shard_batches(2)))
    assert batch.masks.shape == (2, 32, 32)
    labelled = (batch.masks != 255).flatten(1).sum(1).tolist()  # the pixels of the 32 x 32 scenes that count
    assert [sum(p) for p in records["area_pred"]] == labelled == [sum(v) for v in records["area_label"]]
    assert cell.meta["extra"]["class_names"] == ["background", *map(str, range(10))]
    assert not (tmp_path / "r" / "predictions").exists()


def test_segmentation_demo_runs_both_segmenters_and_writes_the_report(tmp_path, monkeypatch):
    from robustbench_rpc.demo import segmentation as demo
    from robustbench_rpc.demo.train_segmentation import save_segmenter_checkpoint
    from robustbench_rpc.models.segmentation import load_segmentation_model

    weights = {}
    torch.manual_seed(0)
    for name in demo.SEGMENTERS.values():  # stand-ins for the shipped weights: random, saved in their format
        model = load_segmentation_model(name, num_classes=11, **({"rpc_iters": 2} if "rpc" in name else {}))
        weights[name] = tmp_path / f"{name}.safetensors"
        save_segmenter_checkpoint(model, weights[name], {})
    settings = demo.SegmentationDemoSettings(limit=4, corruptions="fog,contrast", severities="1", attacks="pgd",
                                             eps="2/255", steps=1, attack_limit=2, batch_size=4)
    result = demo.run_segmentation_demo(tmp_path / "demo", settings, checkpoints=weights, device="cpu")
    assert list(result.table["model"]) == ["SymViT", "RPC-SymViT (2 iter/layer 1)"]
    assert list(result.table.columns) == ["model", "clean mAcc", "clean mIoU", "corrupted mAcc", "corrupted mIoU",
                                          "PGD 2/255 mAcc", "PGD 2/255 mIoU"]
    text = result.report.read_text()
    assert "## Segmentation" in text and "mIoU per corruption" in text
    with pytest.raises(UserError, match="shipped weights of segmenter_symvit_digits are missing"):
        monkeypatch.setattr("robustbench_rpc.models.segmentation.shipped_segmentation_checkpoint", lambda n: None)
        demo.run_segmentation_demo(tmp_path / "none", settings)
    assert not (tmp_path / "none").exists()


def test_segmentation_view_keeps_cells_of_other_parameters_apart():
    import pandas as pd

    from robustbench_rpc.reporting.segmentation import segmentation_view

    def row(metric, value, limit):
        return {"model": "segmenter_symvit_digits", "model_label": "segmenter_symvit_digits", "model_options": "{}",
                "dataset": "digit-scenes", "condition": "clean", "name": None, "eps": float("nan"),
                "variant": json.dumps({"limit": limit, "task": "segmentation"}), "metric": metric, "value": value}

    frame = pd.DataFrame([row("mIoU", 40.0, 10), row("mAcc", 50.0, 10), row("mIoU", 44.0, 20)])
    view = segmentation_view(frame)
    assert list(view.columns) == ["model", "clean mAcc", "clean mIoU [limit=10]", "clean mIoU [limit=20]"]
    assert view.iloc[0].tolist() == ["SymViT", 50.0, 40.0, 44.0]


def test_report_draws_each_clean_cell_of_a_model_in_its_own_figure(tmp_path, capsys):
    out = tmp_path / "r"
    for limit in ("2", "3"):  # two clean cells of one model and dataset
        code, _, err = run_cli(capsys, "evaluate", "--task", "segmentation", "-m", "segmenter_symvit_digits",
                               "--data", "digit-scenes", "--limit", limit, "--keep-predictions", "1", "--out",
                               str(out), "-q")
        assert code == 0, err
    code, _, err = run_cli(capsys, "report", str(out), "--out", str(tmp_path / "report.md"))
    assert code == 0, err
    figures = sorted(p.name for p in (tmp_path / "report_plots").glob("masks_*.png"))
    assert len(figures) == 2 and figures[0] != figures[1]
    text = (tmp_path / "report.md").read_text()
    assert all(f"report_plots/{name}" in text for name in figures)
