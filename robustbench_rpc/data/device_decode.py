"""Decoding a batch's JPEGs on the model's device (nvjpeg, through ``torchvision.io.decode_jpeg``).

The loader workers only read file bytes; the main process decodes the batch on the GPU, applies the eval
transform there and stacks. Only plain baseline or progressive JPEGs with 1 or 3 colour components and an end
marker go to the device decoder; everything else (PNG, CMYK, arithmetic coding, truncated or trailing data, a
batch or file the device decoder rejects) takes the CPU path of :mod:`robustbench_rpc.data.decode`, so skipped
files, their reasons and the colour-mode conversions are accounted exactly as without device decoding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from robustbench_rpc.data.base import Batch, ImageListDataset, LoadedSample
from robustbench_rpc.data.decode import DecodeError, decode_image_bytes, read_file_bytes

#: Frame markers (SOFn) whose data nvjpeg decodes: baseline, extended sequential and progressive Huffman.
_DEVICE_FRAMES = (0xC0, 0xC1, 0xC2)
#: Every SOFn marker (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not frames).
_ALL_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

BatchDecoder = Callable[[list[Tensor], torch.device], list[Tensor]]


def jpeg_frame(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """Return ``(SOF marker, colour components)`` from a JPEG's frame header, or None if it has none."""
    view = memoryview(data)
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        return None
    pos = 2
    while pos + 4 <= len(view):
        if view[pos] != 0xFF:
            return None
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = (view[pos + 2] << 8) | view[pos + 3]
        if marker in _ALL_FRAMES:
            if pos + 10 > len(view):
                return None
            return marker, int(view[pos + 9])
        if marker == 0xDA or length < 2:  # scan data before any frame header: malformed
            return None
        pos += 2 + length
    return None


def device_decodable(data: bytes | bytearray | memoryview) -> bool:
    """True for a JPEG the device decoder handles like libjpeg: Huffman frame, 1 or 3 components, ends at EOI."""
    view = memoryview(data)
    if len(view) < 4 or view[-2] != 0xFF or view[-1] != 0xD9:
        return False
    frame = jpeg_frame(view)
    return frame is not None and frame[0] in _DEVICE_FRAMES and frame[1] in (1, 3)


class FileBytesDataset(Dataset):
    """The files of an :class:`ImageListDataset` as raw bytes (uint8 1-D tensors): what device decoding reads."""

    def __init__(self, dataset: ImageListDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> LoadedSample:
        ref = self.dataset.samples[index]
        try:
            data = read_file_bytes(ref.path)
        except DecodeError as exc:  # the CPU path's reasons, word for word
            return LoadedSample(None, ref.label, ref.sample_id, index, ref.is_ood, f"skipped:{exc.reason}")
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        return LoadedSample(raw, ref.label, ref.sample_id, index, ref.is_ood, "ok")


def keep_samples(samples: Sequence[LoadedSample]) -> list[LoadedSample]:
    """Collate function of :class:`FileBytesDataset` loaders: the samples as a list (files differ in size)."""
    return list(samples)


def nvjpeg_decode(buffers: list[Tensor], device: torch.device) -> list[Tensor]:
    """Decode JPEG byte tensors to uint8 RGB [3, H, W] on ``device`` in one batched call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision 0.29 warns on every call
        return list(decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device))


def _decode_each(buffers: list[Tensor], device: torch.device, decoder: BatchDecoder) -> list[Tensor | None]:
    """Decode one buffer at a time after a batch failed; None marks the ones the device decoder rejects."""
    out: list[Tensor | None] = []
    for buffer in buffers:
        try:
            out.append(decoder([buffer], device)[0])
        except Exception:  # noqa: BLE001 - the CPU path decodes it or says why it cannot
            out.append(None)
    return out


def decode_on_device(samples: Sequence[LoadedSample], transform: Callable[[Tensor], Tensor] | None,
                     device: torch.device, decoder: BatchDecoder | None = None) -> Batch:
    """Decode and transform a list of byte samples on ``device``; return the collated :class:`Batch`.

    Unreadable files are left out and listed in ``skipped``; grayscale and other converted files in ``converted``.
    """
    decoder = decoder or nvjpeg_decode
    images: list[Tensor | None] = [None] * len(samples)
    status = [s.status for s in samples]
    routed = [i for i, s in enumerate(samples) if s.image is not None and device_decodable(s.image.numpy())]
    if routed:
        buffers = [samples[i].image for i in routed]
        try:
            decoded: list[Tensor | None] = list(decoder(buffers, device))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - one bad file fails the batch call: retry file by file
            decoded = _decode_each(buffers, device, decoder)  # type: ignore[arg-type]
        for i, image in zip(routed, decoded, strict=True):
            if image is not None:
                images[i] = image
                if jpeg_frame(samples[i].image.numpy())[1] == 1:  # type: ignore[union-attr,index]
                    status[i] = "converted:L"
    for i, sample in enumerate(samples):
        if sample.image is None or images[i] is not None:
            continue
        try:
            found = decode_image_bytes(sample.image.numpy().tobytes())
        except DecodeError as exc:
            status[i] = f"skipped:{exc.reason}"
            continue
        images[i] = found.image.to(device, non_blocking=True)
        if found.converted_from is not None:
            status[i] = f"converted:{found.converted_from}"
    kept = [i for i, image in enumerate(images) if image is not None]
    out = [images[i] if transform is None else transform(images[i]) for i in kept]  # type: ignore[arg-type]
    batch_images = torch.stack(out) if out else torch.empty(0, 3, 0, 0, device=device)
    return Batch(
        images=batch_images,
        labels=torch.tensor([samples[i].label for i in kept], dtype=torch.long),
        sample_ids=[samples[i].sample_id for i in kept],
        indices=torch.tensor([samples[i].index for i in kept], dtype=torch.long),
        is_ood=torch.tensor([samples[i].is_ood for i in kept], dtype=torch.bool),
        skipped=[(s.sample_id, status[i].removeprefix("skipped:")) for i, s in enumerate(samples)
                 if images[i] is None],
        converted=[(samples[i].sample_id, status[i].removeprefix("converted:")) for i in kept
                   if status[i] != "ok"],
    )

