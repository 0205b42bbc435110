"""Device decoding (``--decode gpu``): JPEG routing, fallbacks and accounting, checked on the CPU against the
loader path (torchvision's batched decode_jpeg runs on the CPU too, with the same libjpeg-turbo, so the two paths
must agree exactly); the nvjpeg pixels themselves are checked against libjpeg when CUDA is present."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from datagen import GOLDFISH, TENCH, encode, image_array, make_imagefolder, write_image
from PIL import Image

from robustbench_rpc.data import build_dataset
from robustbench_rpc.data.device_decode import (
    FileBytesDataset,
    decode_on_device,
    device_decodable,
    jpeg_frame,
    nvjpeg_decode,
)
from robustbench_rpc.engine.distributed import canonical_batches
from robustbench_rpc.engine.sources import FileSource, LoaderOptions

PRE = {"input_size": (3, 32, 32), "crop_pct": 0.875, "interpolation": "bicubic"}
CPU = torch.device("cpu")
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-val-100"


def _jpeg(array: np.ndarray, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def test_frame_header_gives_marker_and_components():
    array = image_array(0)
    assert jpeg_frame(encode(array, "rgb")) == (0xC0, 3)
    assert jpeg_frame(encode(array, "gray")) == (0xC0, 1)
    assert jpeg_frame(encode(array, "cmyk")) == (0xC0, 4)
    assert jpeg_frame(_jpeg(array, progressive=True)) == (0xC2, 3)
    assert jpeg_frame(encode(array, "rgba")) is None  # PNG
    assert jpeg_frame(b"\xff\xd8\xff") is None


def test_only_complete_huffman_jpegs_with_one_or_three_components_go_to_the_device():
    array = image_array(1)
    assert device_decodable(encode(array, "rgb")) and device_decodable(encode(array, "gray"))
    assert device_decodable(_jpeg(array, progressive=True))
    assert not device_decodable(encode(array, "cmyk"))
    assert not device_decodable(encode(array, "corrupt"))  # truncated: no end marker
    assert not device_decodable(encode(array, "rgb") + b"trailing")
    assert not device_decodable(encode(array, "palette"))
    assert not device_decodable(b"")


def _mixed_folder(root: Path) -> None:
    kinds = {f"{TENCH}/img_0.JPEG": "corrupt", f"{TENCH}/img_1.JPEG": "gray", f"{GOLDFISH}/img_0.JPEG": "cmyk",
             f"{GOLDFISH}/img_2.JPEG": "text", f"{GOLDFISH}/img_3.JPEG": "empty"}
    make_imagefolder(root, {TENCH: 4, GOLDFISH: 4}, kinds, size=(53, 41))
    write_image(root / GOLDFISH / "alpha.png", 9, "rgba")
    write_image(root / TENCH / "palette.png", 10, "palette")
    (root / TENCH / "img_3.JPEG").write_bytes(_jpeg(image_array(11, (37, 60)), progressive=True))


def _all_batches(source: FileSource, batch_size: int, loading: LoaderOptions) -> list:
    return [batch for _, batch in source.shard_batches(batch_size, loading=loading)]


@pytest.mark.parametrize("workers", [0, 1])
def test_device_path_equals_the_loader_path_pixel_for_pixel_with_the_same_accounting(tmp_path, workers):
    _mixed_folder(tmp_path)
    dataset = build_dataset("imagenet", tmp_path, PRE)
    source = FileSource(dataset)
    expected = _all_batches(source, 4, LoaderOptions())
    found = _all_batches(source, 4, LoaderOptions(workers=workers, decode_device=CPU))
    assert len(found) == len(expected) == 3
    for got, want in zip(found, expected, strict=True):
        assert got.sample_ids == want.sample_ids
        assert torch.equal(got.labels, want.labels) and torch.equal(got.indices, want.indices)
        assert torch.equal(got.images, want.images)
        assert got.skipped == want.skipped and got.converted == want.converted
    skipped = {sid: reason for b in found for sid, reason in b.skipped}
    assert set(skipped) == {f"{TENCH}/img_0.JPEG", f"{GOLDFISH}/img_2.JPEG", f"{GOLDFISH}/img_3.JPEG"}
    assert skipped[f"{GOLDFISH}/img_3.JPEG"] == "empty file"
    converted = dict(c for b in found for c in b.converted)
    assert converted == {f"{TENCH}/img_1.JPEG": "L", f"{GOLDFISH}/img_0.JPEG": "CMYK",
                         f"{GOLDFISH}/alpha.png": "RGBA", f"{TENCH}/palette.png": "P"}


def _byte_samples(root: Path) -> tuple[list, object]:
    dataset = build_dataset("imagenet", root, PRE)
    raw = FileBytesDataset(dataset)
    return [raw[i] for i in range(len(raw))], dataset


def test_a_failing_batch_call_is_retried_file_by_file_and_rejected_files_take_the_cpu_path(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 3, GOLDFISH: 2}, size=(40, 33))
    samples, dataset = _byte_samples(tmp_path)
    reference = decode_on_device(samples, dataset.transform, CPU)
    calls: list[int] = []
    rejected = samples[2].image

    def picky(buffers, device):
        calls.append(len(buffers))
        if any(b is rejected for b in buffers):
            raise RuntimeError("nvjpeg: unsupported")
        return nvjpeg_decode(buffers, device)

    batch = decode_on_device(samples, dataset.transform, CPU, decoder=picky)
    assert calls == [5, 1, 1, 1, 1, 1]  # the batch, then each file once
    assert torch.equal(batch.images, reference.images)
    assert batch.sample_ids == reference.sample_ids and not batch.skipped and not batch.converted


def test_missing_files_are_skipped_with_the_loader_reason(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 2}, size=(40, 33))
    samples, dataset = _byte_samples(tmp_path)
    dataset.samples[0].path.unlink()
    samples = [FileBytesDataset(dataset)[i] for i in range(2)]
    batch = decode_on_device(samples, dataset.transform, CPU)
    assert batch.skipped == [(f"{TENCH}/img_0.JPEG", "missing file")]
    assert batch.sample_ids == [f"{TENCH}/img_1.JPEG"] and batch.images.shape == (1, 3, 32, 32)


def test_an_all_unreadable_batch_is_empty_not_an_error(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 2}, {f"{TENCH}/img_0.JPEG": "text", f"{TENCH}/img_1.JPEG": "corrupt"})
    samples, dataset = _byte_samples(tmp_path)
    batch = decode_on_device(samples, dataset.transform, CPU)
    assert len(batch) == 0 and batch.images.shape[0] == 0 and len(batch.skipped) == 2


def test_canonical_batches_of_a_rank_are_decoded_in_plan_order(tmp_path):
    make_imagefolder(tmp_path, {TENCH: 5, GOLDFISH: 4}, size=(40, 33))
    source = FileSource(build_dataset("imagenet", tmp_path, PRE))
    loading = LoaderOptions(decode_device=CPU)
    got = [(n, b.indices.tolist()) for n, b in source.shard_batches(2, rank=1, world_size=2, loading=loading)]
    plan = [(n, list(r)) for n, r in canonical_batches(9, 2, 1, 2)]
    assert got == plan


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("kind", ["gray", "rgb-444", "rgb-420"])
def test_nvjpeg_pixels_agree_with_libjpeg(tmp_path, kind):
    """Without chroma subsampling the decoders agree (an IDCT could differ by a level); 4:2:0 adds the chroma
    upsampling, where libjpeg's 'fancy' (triangle) filter and nvjpeg's differ most on noisy colour detail."""
    for i in range(8):
        array = image_array(i, (96, 80))
        data = _jpeg(array if kind != "gray" else array[..., 0], quality=90,
                     **({"subsampling": 0} if kind == "rgb-444" else {}))
        (tmp_path / f"{i}.jpg").write_bytes(data)
    buffers = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in sorted(tmp_path.iterdir())]
    on_gpu = torch.stack(nvjpeg_decode(buffers, torch.device("cuda"))).cpu()
    on_cpu = torch.stack(nvjpeg_decode(buffers, CPU))
    diff = (on_gpu.int() - on_cpu.int()).abs().float()
    print(f"{kind}: mean |diff| {float(diff.mean()):.3f}, max {float(diff.max()):.0f} levels")
    if kind == "rgb-420":  # measured on an H200: mean 4.3, max 94 levels on these noisy images
        assert float(diff.mean()) < 8
    else:  # measured on an H200: identical
        assert float(diff.max()) <= 2


@needs_cuda
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/imagenet-val-100")
def test_nvjpeg_on_real_validation_images_after_the_eval_transform():
    dataset = build_dataset("imagenet", SHARED, {"input_size": (3, 224, 224), "crop_pct": 0.875,
                                                 "interpolation": "bicubic"})
    source = FileSource(dataset)
    cuda = torch.device("cuda")
    cpu_batches = _all_batches(source, 50, LoaderOptions())
    gpu_batches = _all_batches(source, 50, LoaderOptions(decode_device=cuda))
    diffs = []
    for got, want in zip(gpu_batches, cpu_batches, strict=True):
        assert got.sample_ids == want.sample_ids and got.skipped == want.skipped
        assert got.converted == want.converted
        diffs.append((got.images.cpu() - want.images).abs().flatten())
    diff = torch.cat(diffs) * 255
    print(f"nvjpeg + GPU resize vs libjpeg + CPU resize on {len(dataset)} images: mean |diff| "
          f"{float(diff.mean()):.3f}/255, 99.9th percentile {float(diff.quantile(0.999)):.1f}/255, "
          f"max {float(diff.max()):.1f}/255")
    assert float(diff.mean()) < 1.0
