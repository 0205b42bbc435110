"""Generators of test data: tiny image trees (ImageFolder, flat ImageNet val, ImageNet-C layouts) and smooth
image batches."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# A few real ImageNet wnids with their canonical indices (0 = tench, 1 = goldfish, 999 = toilet tissue).
TENCH, GOLDFISH, TOILET_TISSUE = "n01440764", "n01443537", "n15075141"
# In the ImageNet-A list but not in ImageNet-R's, and the reverse.
A_ONLY, R_ONLY = "n01498041", "n01443537"


def image_array(seed: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """Return a deterministic RGB uint8 array [H, W, 3] with smooth structure and some noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [xx * 255 / max(width - 1, 1), yy * 255 / max(height - 1, 1), (xx + yy) % 64 * 4], axis=-1
    )
    noisy = base + rng.normal(0, 20, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, kind: str = "rgb") -> bytes:
    """Encode an RGB array as: rgb / gray / cmyk (JPEG), rgba / palette (PNG), corrupt (truncated JPEG),
    empty, text (not an image)."""
    if kind == "empty":
        return b""
    if kind == "text":
        return b"this is not an image\n"
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    if kind == "rgb":
        image.save(buffer, "JPEG", quality=95)
    elif kind == "gray":
        image.convert("L").save(buffer, "JPEG", quality=95)
    elif kind == "cmyk":
        image.convert("CMYK").save(buffer, "JPEG", quality=95)
    elif kind == "rgba":
        image.convert("RGBA").save(buffer, "PNG")
    elif kind == "palette":
        image.convert("P").save(buffer, "PNG")
    elif kind == "corrupt":
        image.save(buffer, "JPEG", quality=95)
        data = buffer.getvalue()
        return data[: len(data) // 2]
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    return buffer.getvalue()


def write_image(path: Path, seed: int = 0, kind: str = "rgb", size: tuple[int, int] = (48, 40)) -> Path:
    """Write one generated image file (creating folders) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image_array(seed, size), kind))
    return path


def make_imagefolder(
    root: Path,
    classes: Mapping[str, int],
    kinds: Mapping[str, str] | None = None,
    ext: str = ".JPEG",
    size: tuple[int, int] = (48, 40),
) -> list[Path]:
    """Write ``<root>/<class>/img_<i><ext>`` with ``classes[name]`` images each; ``kinds`` maps a relative path
    (``"<class>/img_0.JPEG"``) to a special kind (gray, cmyk, corrupt, ...). Returns the written paths."""
    kinds = dict(kinds or {})
    written = []
    seed = 0
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rel = f"{name}/img_{i}{ext}"
            written.append(write_image(root / rel, seed, kinds.get(rel, "rgb"), size))
            seed += 1
    return written


def make_flat_val(root: Path, labels: Mapping[str, str], size: tuple[int, int] = (48, 40)) -> list[Path]:
    """Write a flat ImageNet val folder ``<root>/<file>`` for {file: wnid}; returns the paths."""
    return [write_image(root / name, i, "rgb", size) for i, name in enumerate(labels)]


def make_imagenet_c(
    root: Path,
    corruptions: Iterable[str],
    severities: Iterable[int],
    classes: Mapping[str, Iterable[str]],
    size: tuple[int, int] = (32, 32),
) -> None:
    """Write ``<root>/<corruption>/<severity>/<wnid>/<file>`` for {wnid: file names}."""
    seed = 0
    for corruption in corruptions:
        for severity in severities:
            for wnid, names in classes.items():
                for name in names:
                    write_image(root / corruption / str(severity) / wnid / name, seed, "rgb", size)
                    seed += 1


def smooth_images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    """Natural-looking float test images: upsampled colour noise plus a gradient."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((b, 3, 8, 8), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    ramp = torch.linspace(0, 0.3, size).view(1, 1, 1, size)
    return (0.7 * img + ramp).clamp(0, 1)

