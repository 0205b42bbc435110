from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import encode, image_array, write_image
from PIL import Image

from robustbench_rpc.data.decode import DecodeError, decode_image_bytes, read_image
from robustbench_rpc.data.transforms import build_eval_transform
from robustbench_rpc.errors import UserError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.mark.parametrize(
    ("kind", "mode"),
    [("rgb", None), ("gray", "L"), ("cmyk", "CMYK"), ("rgba", "RGBA"), ("palette", "P")],
)
def test_decode_converts_every_colour_mode_like_pil_and_says_so(kind, mode):
    data = encode(image_array(3, (30, 20)), kind)
    decoded = decode_image_bytes(data)
    reference = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    assert decoded.image.dtype == torch.uint8 and decoded.image.shape == (3, 20, 30)
    assert np.array_equal(decoded.image.permute(1, 2, 0).numpy(), reference)
    assert decoded.converted_from == mode


@pytest.mark.parametrize(
    ("kind", "reason"), [("corrupt", "corrupt image data"), ("empty", "empty file"), ("text", "not an image")]
)
def test_unreadable_files_raise_decode_error_with_reason(kind, reason):
    with pytest.raises(DecodeError) as info:
        decode_image_bytes(encode(image_array(0), kind))
    assert info.value.reason.startswith(reason)


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match="missing file"):
        read_image(tmp_path / "nope.JPEG")


def _timm_reference(pil: Image.Image, pre: dict) -> torch.Tensor:
    from timm.data import create_transform

    tf = create_transform(
        input_size=pre["input_size"],
        crop_pct=pre["crop_pct"],
        interpolation=pre["interpolation"],
        is_training=False,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    return tf(pil)


@pytest.mark.parametrize(
    "pre",
    [
        {
            "input_size": (3, 224, 224),
            "crop_pct": 0.875,
            "interpolation": "bicubic",
        },  # DeiT: 256 bicubic, 224
        {"input_size": (3, 64, 64), "crop_pct": 0.9, "interpolation": "bilinear"},
        {"input_size": (3, 48, 48), "crop_pct": 1.0, "interpolation": "bicubic"},
    ],
)
def test_eval_transform_matches_timm_eval_transform_without_normalization(tmp_path, pre):
    transform = build_eval_transform(pre)
    for seed, size in [(0, (300, 200)), (1, (180, 260)), (2, (97, 97))]:
        path = write_image(tmp_path / f"{seed}.JPEG", seed, "rgb", size)
        ours = transform(read_image(path).image)
        reference = _timm_reference(Image.open(path).convert("RGB"), pre)
        assert ours.dtype == torch.float32 and ours.shape == reference.shape
        assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
        diff = (ours - reference).abs()
        assert (
            float(diff.max()) <= 3 / 255
        )  # torchvision uint8 antialias kernels vs PIL: off by <= a few levels
        assert float(diff.mean()) < 0.2 / 255


@pytest.mark.skipif(
    not (SHARED / "imagenet-val-100").is_dir(), reason="../shared/data/imagenet-val-100 absent"
)
def test_eval_transform_matches_timm_on_real_imagenet_images():
    pre = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic"}
    transform = build_eval_transform(pre)
    files = sorted((SHARED / "imagenet-val-100").glob("*/*.JPEG"))[:6]
    for path in files:
        ours = transform(read_image(path).image)
        reference = _timm_reference(Image.open(path).convert("RGB"), pre)
        assert float((ours - reference).abs().max()) <= 3 / 255


def test_center_crop_only_transform_for_imagenet_c():
    transform = build_eval_transform({"input_size": (3, 224, 224), "crop_pct": 0.875}, resize=False)
    image = torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8)
    out = transform(image)
    assert torch.equal(out, image.float() / 255)  # already 224 x 224: untouched
    bigger = torch.randint(0, 256, (3, 230, 240), dtype=torch.uint8)
    assert torch.equal(transform(bigger), bigger[:, 3:227, 8:232].float() / 255)


def test_transform_rejects_bad_preprocessing():
    with pytest.raises(UserError, match="crop_pct"):
        build_eval_transform({"crop_pct": 1.5})
    with pytest.raises(UserError, match="interpolation"):
        build_eval_transform({"interpolation": "cubic-spline"})
    assert build_eval_transform({"input_size": (3, 384, 384), "crop_pct": 1.0}).scale_size == (384, 384)
