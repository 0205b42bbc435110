from __future__ import annotations

import pytest
import torch
from datagen import GOLDFISH, TENCH, make_imagenet_c

from robustbench_rpc.data import CORRUPTIONS, EXTRA_CORRUPTIONS, ImageNetC, build_dataset
from robustbench_rpc.data.imagenet_c import parse_corruptions, parse_severities
from robustbench_rpc.errors import UserError
from robustbench_rpc.metrics import STANDARD_CORRUPTIONS

PRE = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic"}
CLASSES = {TENCH: ["ILSVRC2012_val_00000010.JPEG"], GOLDFISH: ["ILSVRC2012_val_00000020.JPEG"]}


def test_corruption_names_match_the_metrics_and_parse():
    assert CORRUPTIONS == STANDARD_CORRUPTIONS and len(CORRUPTIONS) == 15
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert parse_corruptions(None) == CORRUPTIONS
    assert len(parse_corruptions("all")) == 19
    assert parse_corruptions("fog, snow,fog") == ("fog", "snow")
    with pytest.raises(UserError, match="did you mean 'gaussian_noise'"):
        parse_corruptions("gausian_noise")
    assert parse_severities("1-3,5") == (1, 2, 3, 5)
    with pytest.raises(UserError, match="expected integers 1-5"):
        parse_severities("0,6")


def test_released_layout_gives_cells_with_canonical_labels_and_center_crop_only(tmp_path):
    make_imagenet_c(tmp_path, ["fog", "snow"], [1, 2], CLASSES, size=(224, 224))
    data = build_dataset("imagenet-c", tmp_path, PRE, corruptions="fog,snow", severities="1,2")
    assert data.cells() == [("fog", 1), ("fog", 2), ("snow", 1), ("snow", 2)]
    cell = data.dataset("snow", 2)
    assert cell.info["corruption"] == "snow" and cell.info["severity"] == 2
    assert sorted(s.label for s in cell.samples) == [0, 1]
    image = cell[0].image
    raw = cell.with_transform(None)[0].image
    assert torch.equal(image, raw.float() / 255)  # 224 x 224 already: no resize, no crop
    assert cell.fingerprint()["num_files"] == 2


def test_missing_corruptions_and_severities_are_named_unless_allowed(tmp_path):
    make_imagenet_c(tmp_path, ["fog"], [1, 2, 3, 4, 5], CLASSES)
    make_imagenet_c(tmp_path, ["snow"], [1, 2], CLASSES)
    with pytest.raises(UserError) as info:
        ImageNetC(tmp_path, corruptions="fog,snow,frost")
    message = str(info.value)
    assert "frost (all selected severities)" in message and "snow severities 3, 4, 5" in message
    assert "--allow-missing" in message and "\n" not in message
    data = ImageNetC(tmp_path, corruptions="fog,snow,frost", allow_missing=True)
    assert len(data.cells()) == 7 and ("frost", 1) in data.missing_cells and len(data.missing_cells) == 8
    with pytest.raises(UserError, match="not available"):
        data.dataset("frost", 1)


def test_wrong_root_is_reported_with_expected_layout(tmp_path):
    (tmp_path / "n01440764").mkdir()
    with pytest.raises(
        UserError, match=r"holds none of the selected corruptions \(found: n01440764\).*<corruption>"
    ):
        ImageNetC(tmp_path)


def test_grouped_tar_layout_is_accepted(tmp_path):
    make_imagenet_c(tmp_path / "weather", ["fog"], [3], CLASSES)
    data = ImageNetC(tmp_path, corruptions="fog", severities=[3])
    assert data.cells() == [("fog", 3)] and len(data.dataset("fog", 3)) == 2


def test_subset_and_limit(tmp_path):
    wnid, name = "n02823750", "ILSVRC2012_val_00020685.JPEG"  # an entry of the RobustBench 5k list
    make_imagenet_c(tmp_path, ["fog"], [1], {wnid: [name, "ILSVRC2012_val_99999999.JPEG"], **CLASSES})
    data = ImageNetC(tmp_path, corruptions="fog", severities="1", subset="robustbench-5k")
    cell = data.dataset("fog", 1)
    assert [s.sample_id for s in cell.samples] == [f"{wnid}/{name}"]
    assert len(cell.missing) == 4999 and cell.missing[0][1] == "missing file"
    limited = ImageNetC(tmp_path, corruptions="fog", severities="1", limit=3).dataset("fog", 1)
    assert len(limited) == 3 and not limited.missing
    with pytest.raises(UserError, match="none of the 5000 images"):
        ImageNetC(tmp_path, corruptions="fog", severities="1", subset="robustbench-5k", limit=2).dataset(
            "fog", 1
        )
