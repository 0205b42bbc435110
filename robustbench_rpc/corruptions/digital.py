"""Digital corruptions: brightness, contrast, saturate, elastic transform, pixelate and JPEG compression."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from robustbench_rpc.corruptions._common import (
    gaussian_filter,
    hsv_to_rgb,
    rand,
    rgb_to_hsv,
)


def brightness(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add ``delta`` to the HSV value channel (clipped to 1)."""
    hsv = rgb_to_hsv(x)
    hsv = torch.stack((hsv[:, 0], hsv[:, 1], (hsv[:, 2] + p["delta"]).clamp(0, 1)), 1)
    return hsv_to_rgb(hsv)


def saturate(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Scale and shift the HSV saturation channel: s * scale + shift (clipped to [0, 1])."""
    hsv = rgb_to_hsv(x)
    hsv = torch.stack((hsv[:, 0], (hsv[:, 1] * p["scale"] + p["shift"]).clamp(0, 1), hsv[:, 2]), 1)
    return hsv_to_rgb(hsv)


def contrast(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Pull every channel towards its own mean by ``factor``."""
    means = x.mean((2, 3), keepdim=True)
    return (x - means) * p["factor"] + means


def elastic_transform(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Warp by a smoothed random displacement field (sigma 1% of each side, amplitude 0.5% of the height)."""
    b, c, h, w = x.shape
    sigma = (h * 0.01, w * 0.01)
    max_d = h * 0.005
    alpha = float(p["alpha"])
    fields = rand((b, 2, h, w), generator, x.device) * (2 * max_d) - max_d
    fields = gaussian_filter(fields, sigma, mode="symmetric", truncate=3.0) * alpha
    dx, dy = fields[:, 0], fields[:, 1]
    yy = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + dy
    xx = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + dx
    return bilinear_symmetric(x, yy, xx)


def _reflect(idx: torch.Tensor, n: int) -> torch.Tensor:
    period = 2 * n
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - 1 - idx, idx)


def bilinear_symmetric(x: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` [B, C, H, W] at per-image coordinates ``yy``, ``xx`` [B, H, W] (symmetric border)."""
    b, c, h, w = x.shape
    y0f, x0f = yy.floor(), xx.floor()
    wy, wx = (yy - y0f)[:, None], (xx - x0f)[:, None]
    y0, x0 = y0f.long(), x0f.long()
    ya, yb = _reflect(y0, h), _reflect(y0 + 1, h)
    xa, xb = _reflect(x0, w), _reflect(x0 + 1, w)
    flat = x.reshape(b, c, h * w)

    def take(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        idx = (yi * w + xi).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    top = take(ya, xa) * (1 - wx) + take(ya, xb) * wx
    bottom = take(yb, xa) * (1 - wx) + take(yb, xb) * wx
    return top * (1 - wy) + bottom * wy


@lru_cache(maxsize=64)
def box_resample_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] weights of Pillow's BOX resampling along one axis (pixel centres inside each box)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros((n_out, n_in), dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filterscale
            if -0.5 < t <= 0.5:
                m[o, i] = 1.0
        m[o] /= m[o].sum()
    return m.float()


def nearest_indices(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Source index of each output pixel of Pillow's NEAREST resize: floor((o + 0.5) * n_in / n_out)."""
    idx = torch.floor((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)).long()
    return idx.clamp(0, n_in - 1).to(device)


def pixelate(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Box-downsample to ``scale`` of the size, then nearest-upsample back."""
    _, _, h, w = x.shape
    sh, sw = int(h * p["scale"]), int(w * p["scale"])
    mh = box_resample_matrix(h, sh).to(x.device, x.dtype)
    mw = box_resample_matrix(w, sw).to(x.device, x.dtype)
    small = torch.einsum("ph,bchw,qw->bcpq", mh, x, mw)
    small = small.index_select(2, nearest_indices(sh, h, x.device))
    return small.index_select(3, nearest_indices(sw, w, x.device))


def jpeg_roundtrip(images: torch.Tensor, quality: int = 85) -> torch.Tensor:
    """Encode and decode every image of a batch as JPEG at ``quality`` with Pillow (libjpeg, 4:2:0 chroma).

    Accepts uint8 or float [0, 1] batches [B, 3, H, W] and returns the same dtype and device; floats are
    rounded to 8 bits first, as saving them to a file would. This is also how ImageNet-C's files were written
    (quality 85), so ``jpeg_roundtrip(corrupt(...))`` simulates the released dataset.
    """
    import io

    import numpy as np
    from PIL import Image

    is_float = images.is_floating_point()
    u8 = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8) if is_float else images
    arrays = u8.permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for arr in arrays:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(np.asarray(im.convert("RGB")))
    decoded = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(images.device)
    return decoded.to(images.dtype) / 255.0 if is_float else decoded.contiguous()


def jpeg_compression(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """JPEG-compress at ``quality`` (the image is quantised to 8 bits first)."""
    return jpeg_roundtrip(x.clamp(0, 1), int(p["quality"]))


__all__ = [
    "brightness",
    "contrast",
    "elastic_transform",
    "jpeg_compression",
    "jpeg_roundtrip",
    "pixelate",
    "saturate",
]
