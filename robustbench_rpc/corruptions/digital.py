"""Digital corruptions: brightness, contrast, saturate, elastic transform, pixelate and JPEG compression."""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from robustbench_rpc.corruptions._common import gaussian_filter, rand

# Both HSV corruptions are done in RGB: with hue and saturation fixed every channel is proportional to the
# value V, and with hue and value fixed every channel is V - S * V * w (w in [0, 1] set by the hue). This
# equals the round trip through scikit-image's rgb2hsv / hsv2rgb, including its grey pixels (S = 0, hue 0).


def brightness(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add ``delta`` to the HSV value channel (clipped to 1)."""
    v = x.amax(1, keepdim=True)
    v_new = (v + p["delta"]).clamp_(0, 1)
    scaled = x * (v_new / v.clamp_min(1e-12))
    # Black pixels (v = 0, so scaled = 0) become grey at v_new; adding a masked term is cheaper than where().
    return scaled.add_((v <= 0) * v_new)


def saturate(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Scale and shift the HSV saturation channel: s * scale + shift (clipped to [0, 1])."""
    v = x.amax(1, keepdim=True)
    delta = v - x.amin(1, keepdim=True)
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * p["scale"] + p["shift"]).clamp_(0, 1)
    # w = (V - channel) / (S V) for coloured pixels; grey ones have hue 0, that is w = (0, 1, 1).
    grey_w = torch.tensor([0.0, 1.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    w = torch.where(delta > 0, (v - x) / delta.clamp_min(1e-12), grey_w)
    return v - s_new * v * w


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


def bilinear_symmetric(x: torch.Tensor, yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` [B, C, H, W] bilinearly at per-image pixel coordinates ``yy``, ``xx`` [B, H, W], with
    the image mirrored about its outer edges beyond the border (scipy ``map_coordinates``, order 1, mode
    ``reflect``). That is ``grid_sample`` with reflection padding and ``align_corners=False``."""
    h, w = x.shape[-2:]
    grid = torch.stack(((2.0 * xx + 1.0) / w - 1.0, (2.0 * yy + 1.0) / h - 1.0), -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


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


@lru_cache(maxsize=64)
def _box_ranges(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each output pixel's box of Pillow's BOX resampling: first input index, one past the last, 1 / size."""
    inside = box_resample_matrix(n_in, n_out) > 0  # every box is a run of equal weights
    first = inside.to(torch.int8).argmax(1)
    size = inside.sum(1)
    return first, first + size, 1.0 / size.double()


def box_downsample(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    """Pillow's BOX resampling of ``x`` along ``dim`` to ``n_out`` pixels: the mean of each box, taken as the
    difference of two running sums (as :func:`box_resample_matrix` weights it, in linear time)."""
    first, stop, inv = (t.to(x.device) for t in _box_ranges(x.shape[dim], n_out))
    sums = torch.cat((x.new_zeros(x.shape[:dim] + (1,) + x.shape[dim + 1 :]), x.cumsum(dim)), dim)
    shape = [1] * x.ndim
    shape[dim] = n_out
    box = sums.index_select(dim, stop).sub_(sums.index_select(dim, first))
    return box.mul_(inv.to(x.dtype).view(shape))


def nearest_indices(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Source index of each output pixel of Pillow's NEAREST resize: floor((o + 0.5) * n_in / n_out)."""
    idx = torch.floor((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out)).long()
    return idx.clamp(0, n_in - 1).to(device)


@lru_cache(maxsize=256)
def nearest_exact_is_pillow(n_in: int, n_out: int) -> bool:
    """Whether torch's CPU ``nearest-exact`` resize of float32 images picks Pillow's NEAREST source pixels for this
    size pair (its float32 scale factor makes it differ by one pixel for some pairs)."""
    row = torch.arange(n_in, dtype=torch.float32).view(1, 1, 1, n_in)
    picked = F.interpolate(row, size=(1, n_out), mode="nearest-exact").view(-1).long()
    return torch.equal(picked, nearest_indices(n_in, n_out, torch.device("cpu")))


def nearest_upsample(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pillow's NEAREST resize of ``x`` [B, C, h0, w0] to h x w: one native kernel for float32 on CPU where it
    picks the same pixels (the kernel's index arithmetic follows the dtype), else two index selections."""
    sh, sw = x.shape[-2:]
    native = x.device.type == "cpu" and x.dtype == torch.float32
    if native and nearest_exact_is_pillow(sh, h) and nearest_exact_is_pillow(sw, w):
        return F.interpolate(x, size=(h, w), mode="nearest-exact")
    return x.index_select(2, nearest_indices(sh, h, x.device)).index_select(3, nearest_indices(sw, w, x.device))


def pixelate(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Box-downsample to ``scale`` of the size, then nearest-upsample back."""
    _, _, h, w = x.shape
    sh, sw = int(h * p["scale"]), int(w * p["scale"])
    return nearest_upsample(box_downsample(box_downsample(x, 2, sh), 3, sw), h, w)


def jpeg_roundtrip(images: torch.Tensor, quality: int = 85) -> torch.Tensor:
    """Encode and decode every image of a batch as JPEG at ``quality`` (libjpeg-turbo, 4:2:0 chroma).

    Accepts uint8 or float [0, 1] batches [B, 3, H, W] and returns the same dtype and device; floats are
    rounded to 8 bits first, as saving them to a file would. This is also how ImageNet-C's files were written
    (quality 85), so ``jpeg_roundtrip(corrupt(...))`` simulates the released dataset. The codec runs on the
    CPU through torchvision.io, whose output is byte-identical to Pillow's save and load at the same quality.
    """
    is_float = images.is_floating_point()
    u8 = (images.detach() * 255).round().clamp(0, 255).to(torch.uint8) if is_float else images
    u8 = u8.cpu().contiguous()
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:  # torchvision has deprecated its codecs: Pillow gives the same bytes, slower
        decoded = _jpeg_roundtrip_pillow(u8, quality)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            decoded = torch.stack(decode_jpeg(encode_jpeg(list(u8), quality=int(quality))))
    decoded = decoded.to(images.device)
    return decoded.to(images.dtype) / 255.0 if is_float else decoded


def _jpeg_roundtrip_pillow(u8: torch.Tensor, quality: int) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    out = []
    for arr in u8.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(np.asarray(im.convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def jpeg_compression(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """JPEG-compress at ``quality`` (the image is quantised to 8 bits first)."""
    return jpeg_roundtrip(x.clamp(0, 1), int(p["quality"]))


def jpeg_compression_8bit(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """:func:`jpeg_compression` of a uint8 batch, as uint8 (the codec's own bytes, no float round trip)."""
    return jpeg_roundtrip(x, int(p["quality"]))


__all__ = [
    "brightness",
    "contrast",
    "elastic_transform",
    "jpeg_compression",
    "jpeg_compression_8bit",
    "jpeg_roundtrip",
    "pixelate",
    "saturate",
]
