"""Decoding image files to uint8 RGB tensors, with every conversion or failure reported, never silent."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

#: File name endings treated as images when scanning folders (compared lower case).
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")


class DecodeError(Exception):
    """An image file that cannot be read or decoded; ``reason`` is a short phrase for the skip report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """A decoded image: ``image`` is uint8 [3, H, W]; ``converted_from`` names the source mode if not RGB."""

    image: Tensor
    converted_from: str | None = None


def is_image_file(path: str | Path) -> bool:
    """Return True when the file name has an image extension."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _decode_pil(data: bytes) -> Decoded:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = img.mode
            img.load()
            rgb = img.convert("RGB") if mode != "RGB" else img
            array = np.array(rgb, dtype=np.uint8, copy=True)
    except UnidentifiedImageError:
        raise DecodeError("not an image file") from None
    except OSError as exc:  # truncated or corrupt data
        raise DecodeError(f"corrupt image data ({exc})") from None
    except (ValueError, SyntaxError) as exc:
        raise DecodeError(f"corrupt image data ({exc})") from None
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return Decoded(tensor, None if mode == "RGB" else mode)


def decode_image_bytes(data: bytes) -> Decoded:
    """Decode image bytes to uint8 RGB [3, H, W]; grayscale, CMYK, RGBA, palette and 16-bit images are converted.

    Fast path: ``torchvision.io.decode_image`` for RGB and grayscale JPEGs (bit-identical to PIL's pixels).
    Everything else goes through PIL's ``convert("RGB")``, the conversion timm's loader applies.
    Raises :class:`DecodeError` for empty, truncated or unreadable data.
    """
    if not data:
        raise DecodeError("empty file")
    if not data.startswith(b"\xff\xd8\xff"):  # not a JPEG: PNG palettes etc. need PIL's colour handling
        return _decode_pil(data)
    from torchvision.io import ImageReadMode, decode_image

    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torchvision only warns on some corrupt JPEGs: treat as failure
            # ... but torchvision 0.29 also emits a DeprecationWarning on every decode, which is no failure
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            tensor = decode_image(buffer, mode=ImageReadMode.UNCHANGED)
    except Exception:  # noqa: BLE001 - any torchvision failure falls back to PIL, which gives the reason
        return _decode_pil(data)
    if tensor.dtype != torch.uint8 or tensor.ndim != 3:
        return _decode_pil(data)
    channels = tensor.shape[0]
    if channels == 3:
        return Decoded(tensor)
    if channels == 1:
        return Decoded(tensor.expand(3, -1, -1).contiguous(), "L")
    # 2 (LA) or 4 (RGBA, CMYK) channels: PIL knows the colour model
    return _decode_pil(data)


def read_file_bytes(path: str | Path) -> bytes:
    """Read one image file's bytes; a missing or unreadable file is a DecodeError saying which."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DecodeError("missing file") from None
    except OSError as exc:
        raise DecodeError(f"unreadable file ({exc.strerror or exc})") from None


def read_image(path: str | Path) -> Decoded:
    """Read and decode one image file (see :func:`decode_image_bytes`); a missing file is a DecodeError."""
    return decode_image_bytes(read_file_bytes(path))
