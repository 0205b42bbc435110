"""The distribution-shift test sets on tiny trees in their released layouts: loaders, layout errors, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import make_imagefolder
from PIL import Image

from robustbench_rpc.api import evaluate
from robustbench_rpc.data.classes import mask_logits, wnid_to_index
from robustbench_rpc.data.corruption_sets import C_BAR_SEVERITIES, CorruptionSet
from robustbench_rpc.data.shifts import BorderCrop, imagenet_sketch, imagenet_v2, objectnet, stylized_imagenet
from robustbench_rpc.engine.records import records_from_logits
from robustbench_rpc.errors import UserError
from robustbench_rpc.names import THREEDCC_CORRUPTIONS
from robustbench_rpc.reporting.views import paper_view
from robustbench_rpc.results.store import ResultsStore
from robustbench_rpc.results.tidy import tidy

WNIDS = ["n01440764", "n01443537", "n15075141"]  # canonical indices 0, 1, 999
INDEX = {w: wnid_to_index()[w] for w in WNIDS}


def _v2_tree(root: Path) -> Path:
    for variant in ("imagenetv2-matched-frequency-format-val", "imagenetv2-top-images-format-val"):
        make_imagefolder(root / variant, {"0": 2, "1": 1, "999": 1}, ext=".jpeg")
    return root


# ImageNet-V2 ------------------------------------------------------------------------------------------------------

def test_imagenet_v2_variants_and_index_labels(tmp_path):
    found = imagenet_v2(_v2_tree(tmp_path))
    assert [d.info["variant"] for d in found] == ["matched-frequency", "top-images"]
    assert sorted(s.label for s in found[0].samples) == [0, 0, 1, 999]
    assert found[0].class_indices is None  # 1000 classes
    [one] = imagenet_v2(tmp_path / "imagenetv2-top-images-format-val")
    assert one.info["variant"] == "top-images" and len(one) == 4
    with pytest.raises(UserError, match="has no threshold-0.7 variant"):
        imagenet_v2(tmp_path, "threshold-0.7")


def test_imagenet_v2_refuses_wnid_folders_and_sketch_refuses_index_folders(tmp_path):
    make_imagefolder(tmp_path / "wnids", {WNIDS[0]: 1})
    with pytest.raises(UserError, match=r"has wnid folders \('n01440764'\); expected <root>/<0..999>/\*.jpeg .*"
                                        "ImageNet-V2 names its folders by class index"):
        imagenet_v2(tmp_path / "wnids")
    make_imagefolder(tmp_path / "v2", {"0": 1, "5": 1})
    with pytest.raises(UserError, match="has class-index folders .* the ImageNet-V2 layout; expected "
                                        r"<root>/sketch/<wnid>/\*.JPEG"):
        imagenet_sketch(tmp_path / "v2")


# ImageNet-Sketch and Stylized-ImageNet ----------------------------------------------------------------------------

def test_sketch_and_stylized_layouts(tmp_path):
    make_imagefolder(tmp_path / "ImageNet-Sketch" / "sketch", {w: 1 for w in WNIDS})
    sketch = imagenet_sketch(tmp_path / "ImageNet-Sketch")  # the zip's top folder 'sketch/' is found
    assert sorted(s.label for s in sketch.samples) == [0, 1, 999]
    make_imagefolder(tmp_path / "stylized" / "val", {WNIDS[1]: 2})
    stylized = stylized_imagenet(tmp_path / "stylized")
    assert [s.label for s in stylized.samples] == [1, 1] and stylized.root.name == "val"


# ObjectNet --------------------------------------------------------------------------------------------------------

#: A permutation standing in for ImageNet 2012 ids vs sorted-wnid indices (the release's own files differ).
PERM = [(7 * i + 3) % 1000 for i in range(1000)]


def _objectnet_tree(root: Path) -> Path:
    base = root / "objectnet-1.0"
    maps = base / "mappings"
    maps.mkdir(parents=True)
    (maps / "folder_to_objectnet_label.json").write_text(json.dumps(
        {"alarm_clock": "Alarm clock", "banana": "Banana", "chair": "Chair"}))
    (maps / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {"Alarm clock": "analog clock; digital clock", "Banana": "banana"}))  # Chair: not in ImageNet
    lines = [f"class {i}" for i in range(1000)]
    # ImageNet 2012 id -> its label line; the sorted-wnid index p has 2012 id PERM[p]
    for index, name in ((409, "analog clock"), (530, "digital clock"), (954, "banana")):
        lines[PERM[index]] = name
    (maps / "imagenet_to_label_2012_v2").write_text("\n".join(lines) + "\n")
    (maps / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(p): PERM[p] for p in range(1000)}))
    for folder, n in (("alarm_clock", 2), ("banana", 1), ("chair", 3)):
        (base / "images" / folder).mkdir(parents=True)
        for i in range(n):
            pixels = np.full((20, 24, 3), 90 + 40 * i, dtype=np.uint8)
            pixels[:2], pixels[-2:], pixels[:, :2], pixels[:, -2:] = (255, 0, 0), (255, 0, 0), (255, 0, 0), (255, 0, 0)
            Image.fromarray(pixels).save(base / "images" / folder / f"{folder}_{i}.png")
    return root


def test_objectnet_mapping_overlap_and_border(tmp_path):
    ds = objectnet(_objectnet_tree(tmp_path))
    assert ds.info["classes_overlapping"] == 2 and ds.info["folders_skipped"] == 1  # chair: no ImageNet class
    assert sorted(s.label for s in ds.samples) == [409, 409, 954]  # a class's smallest ImageNet index
    assert ds.class_indices.tolist() == [[409, 530, 954], [409, 409, 954]]
    image = ds.with_transform(BorderCrop(None))[0].image
    assert image.shape == (3, 16, 20)  # 2 pixels off each side
    assert not ((image[0] == 255) & (image[1] == 0)).any()  # no red border left


def test_objectnet_prediction_is_restricted_and_merged():
    classes = torch.tensor([[409, 530, 954], [409, 409, 954]])
    logits = torch.zeros(3, 1000)
    logits[0, 530], logits[0, 954] = 5.0, 4.0  # digital clock wins: the alarm-clock class
    logits[1, 7] = 50.0  # an unmapped class is ignored...
    logits[1, 954] = 1.0  # ...so banana wins
    logits[2, 409], logits[2, 954] = 1.0, 2.0  # banana over analog clock
    masked = mask_logits(logits, classes)
    records = records_from_logits(masked, torch.tensor([409, 954, 409]), ["a", "b", "c"], [0, 1, 2])
    assert [r["pred"] for r in records] == [409, 954, 954]
    assert [r["correct1"] for r in records] == [True, True, False]  # by hand: 2 of 3
    assert all(r["correct5"] for r in records)  # only 2 merged classes: both are in the top 5
    assert masked[0, 409] == 5.0 and torch.isinf(masked[0, 530])  # the group's maximum at its representative


def test_objectnet_wrong_layout(tmp_path):
    make_imagefolder(tmp_path / "flat", {"alarm_clock": 1})
    with pytest.raises(UserError, match=r"objectnet root .* has folders 'alarm_clock'; expected <root>/images/"):
        objectnet(tmp_path / "flat")


# ImageNet-C-bar and ImageNet-3DCC ---------------------------------------------------------------------------------

def _corruption_tree(root: Path, corruptions, folders) -> Path:
    for c in corruptions:
        for folder in folders(c):
            make_imagefolder(root / c / folder, {WNIDS[0]: 1, WNIDS[1]: 1}, size=(32, 32))
    return root


def test_c_bar_layout_has_parameter_folders(tmp_path):
    root = _corruption_tree(tmp_path / "ImageNet-C-Bar", C_BAR_SEVERITIES,
                            lambda c: [f"{v:.2f}" for v in C_BAR_SEVERITIES[c]])
    full = CorruptionSet("imagenet-c-bar", root)
    assert len(full.cells()) == 50  # 10 corruptions x 5 severities
    cell = full.dataset("caustic_refraction", 1)
    assert cell.root.name == "2.35" and sorted(s.label for s in cell.samples) == [0, 1]
    wrong = _corruption_tree(tmp_path / "numbered", ["sparkles"], lambda c: ["1", "2", "3", "4", "5"])
    with pytest.raises(UserError, match=r"has severity folders '1', '2', '3', '4' and 1 more; expected the "
                                        r"parameter values of the release \(1.00, 2.00, 3.00, 5.00, 6.00\)"):
        CorruptionSet("imagenet-c-bar", wrong, "sparkles")
    with pytest.raises(UserError, match="has none of its corruption folders"):
        CorruptionSet("imagenet-3dcc", root)


def test_3dcc_layout(tmp_path):
    root = _corruption_tree(tmp_path, THREEDCC_CORRUPTIONS[:2], lambda c: ["1", "2", "3", "4", "5"])
    dcc = CorruptionSet("imagenet-3dcc", root, "near_focus,far_focus")
    assert dcc.cells() == [(c, s) for c in ("near_focus", "far_focus") for s in range(1, 6)]
    with pytest.raises(UserError, match="lacks 50 of the cells asked for"):
        CorruptionSet("imagenet-3dcc", root)  # all 12 asked for, 2 present


# In evaluate --suite, the tidy table and the paper view ------------------------------------------------------------

def test_shift_suites_end_to_end(tmp_path):
    data = tmp_path / "data"
    _v2_tree(data / "imagenet-v2")
    make_imagefolder(data / "imagenet-sketch" / "sketch", {w: 1 for w in WNIDS}, size=(32, 32))
    make_imagefolder(data / "stylized-imagenet" / "val", {w: 1 for w in WNIDS}, size=(32, 32))
    _objectnet_tree(data)
    _corruption_tree(data / "ImageNet-C-Bar", ["sparkles", "plasma_noise"],
                     lambda c: [f"{v:.2f}" for v in C_BAR_SEVERITIES[c]])
    _corruption_tree(data / "ImageNet-3DCC", ["flash"], lambda c: ["1", "2", "3", "4", "5"])
    out = tmp_path / "r"
    evaluate("symvit_digits_patch8_32", out=out, suite="imagenet-v2,imagenet-sketch,stylized-imagenet,objectnet,"
             "imagenet-c-bar,imagenet-3dcc", data_root=data, corruptions="sparkles,plasma_noise,flash",
             model_options={"num_classes": 1000}, batch_size=8, progress=False, device="cpu")
    store = ResultsStore(out)
    cells = {(s.dataset, s.condition, s.params.get("variant"), s.params.get("name"), s.params.get("severity")): r
             for s, r, _ in store.iter_cells()}
    assert len(cells) == 2 + 1 + 1 + 1 + 10 + 5
    frame = tidy(out)
    summary = frame[frame["condition"] == "imagenet-c-summary"].set_index(["dataset", "metric"])["value"]
    for dataset, names in (("imagenet-c-bar", ("sparkles", "plasma_noise")), ("imagenet-3dcc", ("flash",))):
        errors = [100 * (1 - cells[(dataset, "corruption", None, c, s)]["correct1"].mean())
                  for c in names for s in range(1, 6)]
        assert summary[(dataset, "mean_error")] == pytest.approx(np.mean(errors))  # by hand over its cells
    objectnet_records = cells[("objectnet", "clean", None, None, None)]
    assert set(objectnet_records["pred"]) <= {409, 954}  # restricted to the mapped (merged) classes
    paper = paper_view(frame).iloc[0]
    assert paper["ObjectNet top-1"] == pytest.approx(100 * objectnet_records["correct1"].mean())
    assert paper["ImageNet-C-bar mean error"] == pytest.approx(summary[("imagenet-c-bar", "mean_error")])
    v2 = cells[("imagenet-v2", "clean", "top-images", None, None)]
    assert paper["ImageNet-V2 top-1 [variant=top-images]"] == pytest.approx(100 * v2["correct1"].mean())
    assert "ImageNet-V2 top-1 [variant=matched-frequency]" in paper.index
    assert "ImageNet-Sketch top-1" in paper.index and "Stylized-ImageNet top-1" in paper.index
    assert "ImageNet-3DCC mean error" in paper.index and "clean top-1" not in paper.index  # no shift is "clean"


def test_ar_all_classes_option(tmp_path):
    from robustbench_rpc.data.classes import subset_wnids

    root = tmp_path / "imagenet-a"
    make_imagefolder(root, {w: 1 for w in subset_wnids("imagenet-a")[:3]}, size=(32, 32))
    for flag, out in ((False, "masked"), (True, "all")):
        evaluate("symvit_digits_patch8_32", out=tmp_path / out, suite="imagenet-a", paths={"imagenet-a": str(root)},
                 model_options={"num_classes": 1000}, progress=False, device="cpu", ar_all_classes=flag)
    [(masked_spec, masked, _)] = list(ResultsStore(tmp_path / "masked").iter_cells())
    [(all_spec, every, _)] = list(ResultsStore(tmp_path / "all").iter_cells())
    allowed = {wnid_to_index()[w] for w in subset_wnids("imagenet-a")}
    assert set(masked["pred"]) <= allowed and "classes" not in masked_spec.params
    assert all_spec.params["classes"] == 1000
    assert not set(every["pred"]) <= allowed  # a random 1000-class head predicts outside the 200 classes


def test_path_option_from_the_cli(tmp_path, capsys):
    from robustbench_rpc.cli.app import main

    _v2_tree(tmp_path / "v2")
    argv = ["evaluate", "-m", "symvit_digits_patch8_32", "--num-classes", "1000", "--suite", "imagenet-v2", "-q",
            "--device", "cpu", "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--path", "imagenet-v2=" + str(tmp_path / "v2")])
    assert exit_info.value.code in (0, None)
    assert len(list(ResultsStore(tmp_path / "r").iter_cells())) == 2
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--path", "imagenetv2=" + str(tmp_path / "v2")])
    assert exit_info.value.code == 2
    assert "--path names unknown dataset 'imagenetv2'" in capsys.readouterr().err
