from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datagen import (
    A_ONLY,
    GOLDFISH,
    R_ONLY,
    TENCH,
    TOILET_TISSUE,
    make_flat_val,
    make_imagefolder,
    write_image,
)

from robustbench_rpc.data import LoadReport, build_dataset, class_mask, collate, imagenet_o_detection
from robustbench_rpc.data.folder import folder_dataset
from robustbench_rpc.data.imagenet import imagenet_val
from robustbench_rpc.errors import UserError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PRE = {"input_size": (3, 32, 32), "crop_pct": 0.875, "interpolation": "bicubic"}


def _run(dataset, batch_size=4):
    report = LoadReport()
    batches = []
    for batch in dataset.loader(batch_size=batch_size):
        report.add(batch)
        batches.append(batch)
    return batches, report


def test_partial_class_set_gets_canonical_labels_not_folder_positions(tmp_path):
    make_imagefolder(tmp_path, {TOILET_TISSUE: 2, GOLDFISH: 1, TENCH: 1})
    dataset = build_dataset("imagenet", tmp_path, PRE)
    labels = {s.sample_id.split("/")[0]: s.label for s in dataset.samples}
    assert labels == {TENCH: 0, GOLDFISH: 1, TOILET_TISSUE: 999}
    batches, report = _run(dataset)
    assert batches[0].images.shape == (4, 3, 32, 32) and batches[0].images.dtype == torch.float32
    assert sorted(batches[0].labels.tolist()) == [0, 1, 999, 999]
    assert report.loaded == 4 and not report.skipped


def test_corrupt_gray_and_cmyk_images_are_skipped_or_converted_and_counted(tmp_path):
    kinds = {
        f"{TENCH}/img_0.JPEG": "corrupt",
        f"{TENCH}/img_1.JPEG": "gray",
        f"{GOLDFISH}/img_0.JPEG": "cmyk",
    }
    make_imagefolder(tmp_path, {TENCH: 3, GOLDFISH: 2}, kinds)
    write_image(tmp_path / GOLDFISH / "alpha.png", 9, "rgba")
    dataset = build_dataset("imagenet", tmp_path, PRE)
    assert len(dataset) == 6
    batches, report = _run(dataset, batch_size=6)
    assert len(batches[0]) == 5 and batches[0].images.shape[0] == 5
    assert batches[0].skipped[0][0] == f"{TENCH}/img_0.JPEG"
    assert batches[0].skipped[0][1].startswith("corrupt image data")
    summary = report.as_dict()
    assert summary["loaded"] == 5 and summary["skipped"] == 1
    assert summary["skipped_by_reason"] == {"corrupt image data": 1}
    assert summary["converted"] == {"CMYK": 1, "L": 1, "RGBA": 1}
    assert "1 skipped" in report.summary()


def test_collate_of_an_all_unreadable_batch_is_empty_not_an_error(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 1}, {f"{TENCH}/img_0.JPEG": "text"})
    dataset = build_dataset("imagenet", tmp_path, PRE)
    batch = collate([dataset[0]])
    assert len(batch) == 0 and batch.images.shape[0] == 0
    assert batch.skipped == [(f"{TENCH}/img_0.JPEG", "not an image file")]


def test_decode_path_without_preprocessing_yields_uint8(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 1}, size=(50, 30))
    dataset = build_dataset("imagenet", tmp_path)
    sample = dataset[0]
    assert sample.image.dtype == torch.uint8 and sample.image.shape == (3, 30, 50)
    assert sample.label == 0 and sample.sample_id == f"{TENCH}/img_0.JPEG" and sample.index == 0
    assert torch.equal(dataset.decode(0), sample.image)


def test_flat_layout_with_labels_files_in_several_formats(tmp_path):
    root = tmp_path / "val"
    names = {"ILSVRC2012_val_00000001.JPEG": GOLDFISH, "ILSVRC2012_val_00000002.JPEG": TOILET_TISSUE}
    make_flat_val(root, names)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("file,wnid,class_index\n" + "".join(f"{f},{w},0\n" for f, w in names.items()))
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text(
        "ImageId,PredictionString\n" + "".join(f"{f[:-5]},{w} 1 2 3 4\n" for f, w in names.items())
    )
    lines = tmp_path / "val.txt"
    lines.write_text("ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000002.JPEG 999\n")
    for labels in (csv_file, kaggle, lines):
        dataset = build_dataset("imagenet", root, PRE, labels_file=labels)
        assert {s.sample_id: s.label for s in dataset.samples} == {
            "ILSVRC2012_val_00000001.JPEG": 1,
            "ILSVRC2012_val_00000002.JPEG": 999,
        }
    official = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    official.write_text("490\n361\n")
    with pytest.raises(UserError, match="one value per line"):
        imagenet_val(root, official)
    with pytest.raises(UserError, match="no class folders.*labels file"):
        imagenet_val(root)


def test_flat_layout_images_without_label_are_counted_not_silently_dropped(tmp_path):
    root = tmp_path / "val"
    make_flat_val(root, {"a.JPEG": TENCH, "b.JPEG": TENCH})
    labels = tmp_path / "l.txt"
    labels.write_text(f"a.JPEG {TENCH}\n")
    dataset = imagenet_val(root, labels)
    assert len(dataset) == 1 and dataset.missing == [("b.JPEG", "no label in labels file")]
    report = LoadReport()
    report.add_missing(dataset.missing)
    assert report.as_dict()["skipped_by_reason"] == {"no label in labels file": 1}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "does not exist"),
        (lambda r: r.mkdir(), "is empty; expected"),
        (lambda r: make_imagefolder(r, {"cats": 1, "dogs": 1}), "2 folders that are not ImageNet wnids"),
        (lambda r: make_imagefolder(r, {"n99999999": 1}), "not ImageNet-1k classes"),
        (lambda r: make_imagefolder(r, {"fog": 1, "snow": 1}), "ImageNet-C layout"),
        (lambda r: make_imagefolder(r, {TENCH: 1, GOLDFISH: 0}), "1 empty class folders .*'n01443537'"),
    ],
)
def test_wrong_layouts_are_one_sentence_user_errors(tmp_path, setup, message):
    root = tmp_path / "root"
    setup(root)
    with pytest.raises(UserError, match=message) as info:
        build_dataset("imagenet", root, PRE)
    text = str(info.value)
    assert text.count("\n") == 0 and text.endswith(".")


def test_imagenet_a_and_r_use_their_own_200_class_masks(tmp_path):
    make_imagefolder(tmp_path / "a", {A_ONLY: 2})
    make_imagefolder(tmp_path / "r", {R_ONLY: 2})
    a = build_dataset("imagenet-a", tmp_path / "a", PRE)
    r = build_dataset("imagenet-r", tmp_path / "r", PRE)
    assert torch.equal(a.class_indices, class_mask("imagenet-a"))
    assert torch.equal(r.class_indices, class_mask("imagenet-r"))
    assert a.samples[0].label == 6 and r.samples[0].label == 1
    with pytest.raises(UserError, match="outside the 200 imagenet-a classes"):
        build_dataset("imagenet-a", tmp_path / "r", PRE)
    assert len(build_dataset("imagenet-r", tmp_path / "r", PRE, limit=1)) == 1


def test_imagenet_o_detection_marks_ood_positives_and_uses_o_classes_of_val(tmp_path):
    o_root, val_root = tmp_path / "o", tmp_path / "val"
    make_imagefolder(o_root, {GOLDFISH: 2})  # goldfish is one of ImageNet-O's 200 classes
    make_imagefolder(val_root, {GOLDFISH: 3, TENCH: 2})  # tench is not: excluded from the in-distribution set
    dataset = imagenet_o_detection(o_root, val_root)
    ood = [s for s in dataset.samples if s.is_ood]
    ind = [s for s in dataset.samples if not s.is_ood]
    assert len(ood) == 2 and all(s.label == -1 for s in ood)
    assert len(ind) == 3 and all(s.label == 1 for s in ind)
    assert torch.equal(dataset.class_indices, class_mask("imagenet-o"))
    assert len({s.sample_id for s in dataset.samples}) == 5
    batch = collate([dataset.with_transform(None)[i] for i in range(len(dataset))])
    assert batch.is_ood.tolist() == [False] * 3 + [True] * 2
    limited = build_dataset("imagenet-o", o_root, PRE, imagenet_root=val_root, limit=1)
    assert sum(s.is_ood for s in limited.samples) == 1 and len(limited) == 2
    with pytest.raises(UserError, match="--imagenet-root"):
        build_dataset("imagenet-o", o_root, PRE)


def test_folder_dataset_with_wnids_or_a_user_class_list(tmp_path):
    make_imagefolder(tmp_path / "w", {GOLDFISH: 1})
    assert folder_dataset(tmp_path / "w").samples[0].label == 1
    make_imagefolder(tmp_path / "c", {"cat": 1, "dog": 2})
    ordered = tmp_path / "ordered.txt"
    ordered.write_text("dog\ncat\n")
    dataset = build_dataset("folder", tmp_path / "c", PRE, class_list=ordered)
    assert dataset.num_classes == 2
    assert sorted(s.label for s in dataset.samples) == [0, 0, 1]
    mapped = tmp_path / "mapped.txt"
    mapped.write_text(f"cat {TOILET_TISSUE}\ndog 1\n")
    dataset = build_dataset("folder", tmp_path / "c", PRE, class_list=mapped)
    assert dataset.num_classes == 1000 and sorted(s.label for s in dataset.samples) == [1, 1, 999]
    partial = tmp_path / "partial.txt"
    partial.write_text("cat\n")
    with pytest.raises(UserError, match="not in the class list.*'dog'"):
        build_dataset("folder", tmp_path / "c", PRE, class_list=partial)


def test_fingerprint_is_stable_and_tracks_the_file_list(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 2})
    first = build_dataset("imagenet", tmp_path, PRE).fingerprint()
    assert first == build_dataset("imagenet", tmp_path, PRE).fingerprint()
    assert first["num_files"] == 2 and first["root"] == str(tmp_path.absolute())
    write_image(tmp_path / TENCH / "extra.JPEG")
    assert build_dataset("imagenet", tmp_path, PRE).fingerprint()["paths_sha256"] != first["paths_sha256"]


def test_registry_rejects_unknown_names_and_misplaced_options(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 1})
    with pytest.raises(UserError, match="did you mean 'imagenet-r'"):
        build_dataset("imagenet_r", tmp_path)
    with pytest.raises(UserError, match="apply to imagenet-c only"):
        build_dataset("imagenet", tmp_path, corruptions="fog")
    with pytest.raises(UserError, match="--limit 0"):
        build_dataset("imagenet", tmp_path, limit=0)


@pytest.mark.skipif(
    not (SHARED / "imagenet-val-100").is_dir(), reason="../shared/data/imagenet-val-100 absent"
)
def test_shared_imagenet_val_100_labels_and_subset():
    import csv

    root = SHARED / "imagenet-val-100"
    dataset = build_dataset("imagenet", root, {"input_size": (3, 224, 224), "crop_pct": 0.875})
    with open(SHARED / "imagenet-val-100.labels.csv", newline="") as fh:
        expected = {r["file"]: int(r["class_index"]) for r in csv.DictReader(fh)}
    assert len(dataset) == 100
    assert all(expected[s.sample_id.split("/")[1]] == s.label for s in dataset.samples)
    image = dataset[0].image
    assert image.shape == (3, 224, 224) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    subset = build_dataset("imagenet", root, subset="robustbench-5k")
    assert 0 < len(subset) < 100 and len(subset) + len(subset.missing) == 5000
    in_a = [s for s in dataset.samples if s.label in set(class_mask("imagenet-a").tolist())]
    in_r = [s for s in dataset.samples if s.label in set(class_mask("imagenet-r").tolist())]
    assert (len(in_a), len(in_r)) == (27, 34)  # as documented in ../shared/data/README.md
