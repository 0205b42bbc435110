"""Segmentation data: digit scenes, ADE20K and segfolder trees, canonical shards, and the bad-input sentences."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robustbench_rpc.data.digits import load_digits_split
from robustbench_rpc.data.segmentation import (
    ADE20K_CLASSES,
    DIGIT_SCENE_CLASSES,
    digit_scenes_source,
    load_segmentation_source,
)
from robustbench_rpc.data.segmentation.scenes import RIM, STROKE
from robustbench_rpc.engine.sources import LoaderOptions
from robustbench_rpc.errors import UserError

# ---------------------------------------------------------------- digit scenes


@pytest.fixture(scope="module")
def test_scenes():
    return digit_scenes_source("test")


def test_digit_scenes_are_deterministic_and_prefix_stable(test_scenes):
    again = digit_scenes_source("test")
    assert test_scenes.items.images.numpy().tobytes() == again.items.images.numpy().tobytes()
    assert test_scenes.items.masks.numpy().tobytes() == again.items.masks.numpy().tobytes()
    assert test_scenes.fingerprint() == again.fingerprint()
    head = digit_scenes_source("test", limit=7)
    assert len(head) == 7 and head.sample_ids == test_scenes.sample_ids[:7]
    assert torch.equal(head.items.images, test_scenes.items.images[:7])
    assert head.fingerprint()["sha256"] != test_scenes.fingerprint()["sha256"]
    assert len(digit_scenes_source("train")) == 400 and len(test_scenes) == 200
    assert len(digit_scenes_source("train", n=30)) == 30


def test_digit_scene_masks_agree_with_the_drawn_digits(test_scenes):
    from sklearn.datasets import load_digits

    data = load_digits()
    items = test_scenes.items
    for i in range(40):
        mask = items.masks[i].long()
        image = items.images[i]
        covered = torch.zeros_like(mask, dtype=torch.bool)
        assert 2 <= len(items.layouts[i]) <= 4
        for d in items.layouts[i]:
            assert d.digit == data.target[d.source_index]
            assert 16 <= d.side <= 24
            # an independent reference: torch's bilinear resize of the 8x8 digit to the drawn side
            raw = torch.from_numpy(data.images[d.source_index] / 16.0)[None, None]
            alpha = F.interpolate(raw, size=(d.side, d.side), mode="bilinear", align_corners=False)[0, 0]
            expected = torch.where(alpha >= STROKE, 1 + d.digit, torch.where(alpha >= RIM, 255, 0))
            box = (slice(d.top, d.top + d.side), slice(d.left, d.left + d.side))
            assert not covered[box].any(), "digits overlap"
            covered[box] = True
            assert torch.equal(mask[box], expected.long())
            strokes = mask[box] == 1 + d.digit
            assert strokes.sum() > 10
            # stroke pixels show the digit's colour at least half opaque over a background <= 0.45
            colour = torch.tensor(d.colour, dtype=torch.float32)
            drawn = image[(slice(None), *box)][:, strokes]
            assert ((drawn - colour[:, None]).abs() <= 0.5 * (colour[:, None]) + 1e-5).all()
        assert (mask[~covered] == 0).all()
        assert image[:, ~covered].max() <= 0.45 + 1e-6  # the background is dark; the digits are bright
        assert image.min() >= 0 and image.max() <= 1


def test_digit_scenes_hold_every_class_and_ignored_rims(test_scenes):
    values = torch.unique(test_scenes.items.masks.long()).tolist()
    assert values == [*range(11), 255]
    assert list(DIGIT_SCENE_CLASSES) == ["background", *(str(d) for d in range(10))]
    assert test_scenes.num_classes == 11 and test_scenes.ignore_index == 255
    assert test_scenes.class_names == list(DIGIT_SCENE_CLASSES)


def test_train_and_test_scenes_draw_disjoint_digits_of_the_digits_split():
    used = {}
    for split in ("train", "test"):
        source = digit_scenes_source(split)
        used[split] = {d.source_index for layout in source.items.layouts for d in layout}
        assert used[split] <= set(load_digits_split(split).indices.tolist())
    assert not used["train"] & used["test"]


def test_building_500_scenes_is_fast():
    digit_scenes_source("test", limit=1)  # scikit-learn imported and its digits read
    start = time.perf_counter()
    source = digit_scenes_source("train", n=500)
    assert len(source) == 500
    assert time.perf_counter() - start < 3.0


def test_digit_scenes_image_size_resizes_images_and_masks():
    source = load_segmentation_source("digit-scenes:train", limit=3, image_size=32)
    batch = next(source.batches(3))
    assert batch.images.shape == (3, 3, 32, 32) and batch.masks.shape == (3, 32, 32)
    assert source.fingerprint()["image_size"] == "32 x 32"


# ---------------------------------------------------------------- shards


def test_shard_batches_cover_every_sample_once_with_canonical_numbers(test_scenes):
    source = test_scenes.limit(11)
    whole = list(source.batches(3))
    seen = []
    for rank in range(3):
        for number, batch in source.shard_batches(3, rank=rank, world_size=3, loading=LoaderOptions()):
            assert number % 3 == rank
            assert batch.indices.tolist() == list(range(3 * number, min(3 * number + 3, 11)))
            assert torch.equal(batch.masks, whole[number].masks)
            assert torch.equal(batch.images, whole[number].images)
            assert (batch.labels == -1).all() and batch.masks.dtype == torch.long
            seen.extend(batch.sample_ids)
    assert sorted(seen) == source.sample_ids and len(seen) == 11
    numbers = [n for n, _ in source.shard_batches(3, skip=frozenset({0, 2}))]
    assert numbers == [1, 3]


def test_shard_batches_with_a_worker_process(test_scenes):
    source = test_scenes.limit(6)
    got = list(source.shard_batches(2, loading=LoaderOptions(workers=1)))
    assert [n for n, _ in got] == [0, 1, 2]
    assert torch.equal(torch.cat([b.masks for _, b in got]), source.items.masks[:6].long())


# ---------------------------------------------------------------- file trees


def _jpeg(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([ys * 255 // max(height - 1, 1), xs * 255 // max(width - 1, 1),
                       np.full_like(ys, int(rng.integers(0, 255)))], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _mask(path, values, mode="L", palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(values, dtype=np.uint8), mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        img.putdata(np.asarray(values, dtype=np.uint8).ravel().tolist())
    img.save(path)


def _ade_tree(root, masks):
    for i, values in enumerate(masks, start=1):
        values = np.asarray(values)
        _jpeg(root / "images" / "validation" / f"ADE_val_{i:08d}.jpg", *values.shape, seed=i)
        _mask(root / "annotations" / "validation" / f"ADE_val_{i:08d}.png", values)
    return root


def test_ade20k_reduces_zero_label_pixel_by_pixel(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 151, (512, 544))
    raw[:4, :4] = 0
    raw[4:8, :4] = 150
    raw[8:12, :4] = 255
    root = _ade_tree(tmp_path / "ADEChallengeData2016", [raw])
    source = load_segmentation_source(f"ade20k:{root}")
    assert source.num_classes == 150 and source.class_names == list(ADE20K_CLASSES)
    assert source.class_names[0] == "wall" and source.class_names[149] == "flag"
    batch = next(source.batches(1))
    assert batch.images.shape == (1, 3, 512, 544)  # short side 512 already: not resized
    expected = np.where(raw == 0, 255, np.where(raw == 255, 255, raw - 1))
    assert np.array_equal(batch.masks[0].numpy(), expected)
    assert batch.masks[0, 5, 1] == 149 and batch.masks[0, 1, 1] == 255
    assert batch.sample_ids == ["images/validation/ADE_val_00000001.jpg"]
    # the parent folder of ADEChallengeData2016 works too
    assert load_segmentation_source(f"ade20k:{tmp_path}").fingerprint() == source.fingerprint()


def test_ade20k_resizes_to_short_side_512_and_pads_mixed_batches(tmp_path):
    small = np.arange(30 * 40).reshape(30, 40) % 151
    wide = np.ones((20, 100), dtype=np.int64) * 7
    root = _ade_tree(tmp_path, [small, wide])
    source = load_segmentation_source(f"ade20k:{root}")
    assert source.fingerprint()["image_size"] == "short side 512 (long side <= 2048)"
    first, second = source.items[0], source.items[1]
    assert tuple(first.mask.shape) == (512, 683) and tuple(first.image.shape) == (3, 512, 683)
    assert tuple(second.mask.shape) == (410, 2048)  # the long side caps the scale: 2048 / 100
    rows = np.floor(np.arange(512) * (30 / 512)).astype(int)
    cols = np.floor(np.arange(683) * (40 / 683)).astype(int)
    reduced = np.where(small == 0, 255, small - 1)
    assert np.array_equal(first.mask.numpy(), reduced[rows][:, cols])
    assert first.image.min() >= 0.0 and first.image.max() <= 1.0
    batch = next(source.batches(2))
    assert batch.images.shape == (2, 3, 512, 2048) and batch.masks.shape == (2, 512, 2048)
    assert (batch.masks[0, :, 683:] == 255).all() and (batch.images[0, :, :, 683:] == 0).all()
    assert (batch.masks[1, 410:] == 255).all() and (batch.masks[1, :410] == 6).all()
    square = load_segmentation_source(f"ade20k:{root}", image_size=32)
    batch = next(square.batches(2))
    assert batch.images.shape == (2, 3, 32, 32) and batch.masks.shape == (2, 32, 32)
    assert square.fingerprint()["image_size"] == "square 32"
    assert len(load_segmentation_source(f"ade20k:{root}", limit=1)) == 1


def test_fingerprint_follows_the_file_contents(tmp_path):
    values = np.full((16, 24), 3)
    root = _ade_tree(tmp_path, [values])
    before = load_segmentation_source(f"ade20k:{root}", image_size=16).fingerprint()
    assert before["num_samples"] == 1 and before["dataset"] == "ade20k"
    assert load_segmentation_source(f"ade20k:{root}", image_size=16).fingerprint() == before
    values[0, 0] = 4
    _mask(root / "annotations" / "validation" / "ADE_val_00000001.png", values)
    after = load_segmentation_source(f"ade20k:{root}", image_size=16).fingerprint()
    assert after["sha256"] != before["sha256"]
    _jpeg(root / "images" / "validation" / "ADE_val_00000001.jpg", 16, 24, seed=99)
    assert load_segmentation_source(f"ade20k:{root}", image_size=16).fingerprint()["sha256"] != after["sha256"]


def _segfolder(root, classes=("sky", "road", "car")):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_segfolder_reads_palette_and_grey_masks_with_ignored_pixels(tmp_path):
    root = _segfolder(tmp_path / "set")
    a = np.array([[0, 1, 2, 255]] * 4)
    b = np.array([[2, 2], [1, 0]])
    _jpeg(root / "images" / "a.jpg", 4, 4)
    _mask(root / "masks" / "a.png", a, palette=True)
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).convert("RGBA").save(root / "images" / "b.png")
    _mask(root / "masks" / "b.png", b)
    (root / "masks" / "c.png").write_bytes((root / "masks" / "b.png").read_bytes())  # a mask alone is ignored
    source = load_segmentation_source(f"segfolder:{root}")
    assert source.class_names == ["sky", "road", "car"] and source.num_classes == 3
    assert Image.open(root / "masks" / "a.png").mode == "P"
    batches = list(source.batches(1))
    assert np.array_equal(batches[0].masks[0].numpy(), a)
    assert np.array_equal(batches[1].masks[0].numpy(), b)
    assert batches[0].images.shape == (1, 3, 4, 4) and batches[1].images.shape == (1, 3, 2, 2)
    assert source.report.summary() == "2 loaded, converted to RGB: RGBA: 1"
    assert source.sample_ids == ["images/a.jpg", "images/b.png"]
    assert source.fingerprint()["dataset"] == "segfolder"


def test_unreadable_images_are_skipped_and_reported(tmp_path):
    root = _segfolder(tmp_path / "set")
    for stem in ("a", "b"):
        _jpeg(root / "images" / f"{stem}.jpg", 4, 4)
        _mask(root / "masks" / f"{stem}.png", np.zeros((4, 4)))
    (root / "images" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    source = load_segmentation_source(f"segfolder:{root}")
    [batch] = list(source.batches(2))
    assert batch.sample_ids == ["images/a.jpg"]
    assert batch.skipped[0][0] == "images/b.jpg"
    assert source.report.loaded == 1 and len(source.report.skipped) == 1
    [(number, shard)] = list(source.shard_batches(2))
    assert number == 0 and len(shard) == 1 and shard.skipped == batch.skipped


# ---------------------------------------------------------------- bad input


def test_a_mask_of_another_size_names_both_files(tmp_path):
    root = _segfolder(tmp_path / "set")
    _jpeg(root / "images" / "a.jpg", 4, 6)
    _mask(root / "masks" / "a.png", np.zeros((4, 5)))
    with pytest.raises(UserError, match=r"mask .*a\.png is 5 x 4 pixels but its image .*a\.jpg is 6 x 4"):
        load_segmentation_source(f"segfolder:{root}")


def test_label_values_outside_the_class_list(tmp_path):
    root = _segfolder(tmp_path / "set")
    _jpeg(root / "images" / "a.jpg", 4, 4)
    _mask(root / "masks" / "a.png", np.full((4, 4), 3))
    with pytest.raises(UserError, match=r"mask .*a\.png has label value 3, outside the 3 classes"):
        load_segmentation_source(f"segfolder:{root}")
    ade = _ade_tree(tmp_path / "ade", [np.full((4, 4), 151)])
    with pytest.raises(UserError, match=r"ADE_val_00000001\.png has label value 151, outside the 150 classes"):
        load_segmentation_source(f"ade20k:{ade}")


def test_an_image_without_a_mask(tmp_path):
    root = _segfolder(tmp_path / "set")
    _jpeg(root / "images" / "lonely.jpg", 4, 4)
    with pytest.raises(UserError, match=r"image .*lonely\.jpg has no mask .*lonely\.png"):
        load_segmentation_source(f"segfolder:{root}")


def test_two_images_of_one_stem(tmp_path):
    root = _segfolder(tmp_path / "set")
    _jpeg(root / "images" / "a.jpg", 4, 4)
    _jpeg(root / "images" / "a.png", 4, 4)
    _mask(root / "masks" / "a.png", np.zeros((4, 4)))
    with pytest.raises(UserError, match=r"images .*a\.jpg and .*a\.png share the stem 'a'"):
        load_segmentation_source(f"segfolder:{root}")


def test_empty_folders_and_other_layouts(tmp_path):
    root = _segfolder(tmp_path / "set")
    with pytest.raises(UserError, match=r"images holds no \.png, \.jpg or \.jpeg images"):
        load_segmentation_source(f"segfolder:{root}")
    with pytest.raises(UserError, match=r"has no images/validation folder; expected the ADEChallengeData2016"):
        load_segmentation_source(f"ade20k:{root}")
    (tmp_path / "ade" / "images" / "validation").mkdir(parents=True)
    with pytest.raises(UserError, match=r"has no annotations/validation folder"):
        load_segmentation_source(f"ade20k:{tmp_path / 'ade'}")
    (tmp_path / "ade" / "annotations" / "validation").mkdir(parents=True)
    with pytest.raises(UserError, match=r"validation holds no \.jpg images"):
        load_segmentation_source(f"ade20k:{tmp_path / 'ade'}")
    with pytest.raises(UserError, match=r"does not exist"):
        load_segmentation_source(f"ade20k:{tmp_path / 'nowhere'}")
    (root / "classes.txt").write_text("\n\n")
    with pytest.raises(UserError, match=r"classes\.txt is empty"):
        load_segmentation_source(f"segfolder:{root}")
    (root / "classes.txt").unlink()
    with pytest.raises(UserError, match=r"has no classes\.txt"):
        load_segmentation_source(f"segfolder:{root}")


def test_colour_masks_and_unknown_specs(tmp_path):
    root = _segfolder(tmp_path / "set")
    _jpeg(root / "images" / "a.jpg", 4, 4)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(UserError, match=r"mask .*a\.png is a RGB image; expected a single-channel PNG"):
        load_segmentation_source(f"segfolder:{root}")
    with pytest.raises(UserError, match=r"unknown segmentation dataset 'ade2k:x'.*did you mean 'ade20k'"):
        load_segmentation_source("ade2k:x")
    with pytest.raises(UserError, match=r"needs a folder"):
        load_segmentation_source("ade20k")
    with pytest.raises(UserError, match=r"splits 'train' and 'test', not 'val'"):
        load_segmentation_source("digit-scenes:val")


def test_the_classification_registry_points_segmentation_names_elsewhere():
    from robustbench_rpc.data.registry import SEGMENTATION_DATASET_NAMES, build_dataset

    assert SEGMENTATION_DATASET_NAMES == ("digit-scenes", "ade20k", "segfolder")
    with pytest.raises(UserError, match=r"'ade20k' is a segmentation dataset .*segmentation task"):
        build_dataset("ade20k", "/nowhere")
