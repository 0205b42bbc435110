"""Batched building blocks shared by the corruptions: random draws, padding, filtering, resampling, HSV."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------- random numbers


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 draws made on the generator's device, returned on ``device``."""
    out = torch.rand(shape, generator=generator, device=_draw_device(generator, device))
    return out.to(device)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal float32 draws made on the generator's device, returned on ``device``."""
    out = torch.randn(shape, generator=generator, device=_draw_device(generator, device))
    return out.to(device)


def randint(
    low: int,
    high: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.int64,
) -> torch.Tensor:
    """Integers in [low, high) drawn on the generator's device, returned on ``device``."""
    draw_on = _draw_device(generator, device)
    return torch.randint(low, high, shape, generator=generator, device=draw_on, dtype=dtype).to(device)


def random_bits(bits: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` integers uniform in [0, 2^bits) (int32), ``bits`` at most 15, several cut from each random word.

    Each draw of the generator gives 31 uniform bits (int32 ``random_``); a word holds ``31 // bits`` values,
    so a few bits per value cost a fraction of one draw each (the serial CPU generator is the bottleneck).
    Value ``i`` is bit field ``i // words`` of word ``i % words``.
    """
    if not 1 <= bits <= 15:
        raise ValueError(f"bits must be in 1..15, got {bits}")
    per_word = 31 // bits
    words = torch.empty(-(-n // per_word), dtype=torch.int32, device=_draw_device(generator, device))
    words = words.random_(generator=generator).to(device)
    shifts = torch.arange(0, bits * per_word, bits, dtype=torch.int32, device=device).view(per_word, 1)
    return (words >> shifts).bitwise_and_((1 << bits) - 1).view(-1)[:n]


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices (int64) of the true entries of a 1-D bool tensor; on CPU through numpy's ``flatnonzero``, which
    is several times faster than torch's ``nonzero`` there."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()).astype(np.int64, copy=False))
    return mask.nonzero().squeeze(1)


def float_to_8bit(y: torch.Tensor, rounded: bool) -> torch.Tensor:
    """The 8-bit values (int32) of float images ``y`` in [0, 1], computed in place: clipped, scaled to 255, then
    rounded (where the reference's 8-bit image comes from Pillow) or truncated (numpy.uint8) after adding 1e-3.
    Converting non-negative floats to integers truncates; int32 (then uint8) is several times faster on CPU than
    torch's direct float-to-uint8 conversion."""
    y = y.clamp_(0, 1).mul_(255.0)
    return (y.round_() if rounded else y.add_(1e-3)).to(torch.int32)


def uniform_list(n: int, low: float, high: float, generator: torch.Generator | None) -> list[float]:
    """``n`` python floats uniform in [low, high) (used for per-image angles, drawn in float64)."""
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((n,), generator=generator, device=dev, dtype=torch.float64).cpu()
    return [low + (high - low) * float(v) for v in u]


# ------------------------------------------------------------------------------- padding / filtering


def pad_indices(n: int, pad: int, mode: str, device: torch.device) -> torch.Tensor:
    """Indices of a 1-D signal of length ``n`` padded by ``pad`` on both sides.

    Modes: ``replicate`` (a a | a b c | c c), ``reflect101`` (c b | a b c | b a, OpenCV's default border),
    ``symmetric`` (b a | a b c | c b, scipy's ``reflect``).
    """
    idx = torch.arange(-pad, n + pad, device=device)
    if mode == "replicate":
        return idx.clamp(0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        idx = idx % period
        return torch.where(idx >= n, period - 1 - idx, idx)
    if mode == "reflect101":
        if n == 1:
            return torch.zeros_like(idx)
        period = 2 * n - 2
        idx = idx % period
        return torch.where(idx >= n, period - idx, idx)
    raise ValueError(f"unknown padding mode {mode!r}")


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two dimensions of ``x`` with one of the modes of :func:`pad_indices`."""
    h, w = x.shape[-2:]
    native = {"replicate": "replicate", "reflect101": "reflect"}.get(mode)
    if native is not None and x.ndim in (3, 4) and (mode == "replicate" or (pad_h < h and pad_w < w)):
        return F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode=native)  # one native kernel, much faster
    if mode == "symmetric" and pad_h <= h and pad_w <= w:  # mirrored edge slices: faster than index_select
        if pad_h:
            x = torch.cat((x[..., :pad_h, :].flip(-2), x, x[..., h - pad_h :, :].flip(-2)), -2)
        if pad_w:
            x = torch.cat((x[..., :pad_w].flip(-1), x, x[..., w - pad_w :].flip(-1)), -1)
        return x
    if pad_h:
        x = x.index_select(-2, pad_indices(h, pad_h, mode, x.device))
    if pad_w:
        x = x.index_select(-1, pad_indices(w, pad_w, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ``int(truncate * sigma + 0.5)`` (scipy's ``gaussian_filter``)."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    return (k / k.sum()).float()


def band_matrix(kernel: torch.Tensor, n: int, mode: str, device: torch.device) -> torch.Tensor:
    """[n, n] matrix M with (M @ x)[i] = sum_t kernel[t] * x_padded[i + t]: a 1-D correlation with the border
    ``mode`` folded in, so that filtering becomes one matrix product (fast on CPU and GPU alike)."""
    return _band_matrix(tuple(kernel.double().tolist()), n, mode, str(device))


@lru_cache(maxsize=64)
def _band_matrix(kernel: tuple[float, ...], n: int, mode: str, device: str) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=torch.float32)
    taps = k.numel()
    src = pad_indices(n, taps // 2, mode, torch.device("cpu"))
    rows = torch.arange(n)
    m = torch.zeros((n, n), dtype=torch.float32)
    for t in range(taps):
        m.index_put_((rows, src[rows + t]), k[t].expand(n), accumulate=True)
    return m.to(device)


SHIFTED_ADD_MAX_TAPS = 31


def correlate1d(x: torch.Tensor, kernel: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """Correlate ``x`` [..., H, W] with a 1-D odd ``kernel`` along ``dim`` (-2 or -1), padding with ``mode``.

    Short kernels are a sum of shifted copies (cheap while a chunk of images sits in the cache); long
    ones are one product with a band matrix.
    """
    n = x.shape[dim]
    taps = kernel.numel()
    if taps > SHIFTED_ADD_MAX_TAPS:
        m = band_matrix(kernel, n, mode, x.device).to(x.dtype)
        return torch.matmul(x, m.t()) if dim == -1 else torch.matmul(m, x)
    weights = kernel.double().tolist()
    half = taps // 2
    xp = pad2d(x, half, 0, mode) if dim == -2 else pad2d(x, 0, half, mode)
    out = xp.narrow(dim, 0, n) * weights[0]
    for t in range(1, taps):
        out.add_(xp.narrow(dim, t, n), alpha=weights[t])
    return out


def separable_filter(x: torch.Tensor, kernel_h: torch.Tensor, kernel_w: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x`` [B, C, H, W] with ``kernel_h`` along H then ``kernel_w`` along W."""
    return correlate1d(correlate1d(x, kernel_w, -1, mode), kernel_h, -2, mode)


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x`` [B, C, H, W] with a 2-D ``kernel`` (odd sides), padding with ``mode``.

    Kernels with both sides of 9 or more go through the FFT (as OpenCV does for big kernels); smaller ones are
    a sum of shifted copies of the padded image, one per non-zero tap.
    """
    if min(kernel.shape) >= 9:
        return _filter2d_fft(x, kernel, mode)
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    xp = pad2d(x, kh // 2, kw // 2, mode)
    taps = kernel.double().tolist()
    out = torch.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            if taps[i][j] != 0.0:
                out.add_(xp[..., i : i + h, j : j + w], alpha=taps[i][j])
    return out


def _filter2d_fft(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Large-kernel correlation through the FFT of the padded image (what OpenCV does for big kernels)."""
    kh, kw = kernel.shape
    xp = pad2d(x.float(), kh // 2, kw // 2, mode)
    ph, pw = xp.shape[-2:]
    k = torch.zeros((ph, pw), device=x.device, dtype=torch.float32)
    k[:kh, :kw] = kernel.to(x.device, torch.float32).flip(0, 1)  # correlation = convolution with the flip
    y = torch.fft.irfft2(torch.fft.rfft2(xp) * torch.fft.rfft2(k), s=(ph, pw))
    h, w = x.shape[-2:]
    return y[..., kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w].to(x.dtype)


def gaussian_filter(
    x: torch.Tensor, sigma: float | tuple[float, float], mode: str = "replicate", truncate: float = 4.0
) -> torch.Tensor:
    """Per-channel Gaussian blur as scikit-image's ``gaussian`` (default border ``nearest`` = replicate)."""
    sh, sw = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    return separable_filter(x, gaussian_kernel1d(sh, truncate), gaussian_kernel1d(sw, truncate), mode)


# --------------------------------------------------------------------------------------------- motion blur


def line_motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: list[float]) -> torch.Tensor:
    """Blur each image of ``x`` [B, C, H, W] along a line at its own angle (degrees), as the reference does.

    The kernel is a one-sided Gaussian over ``2 * radius + 1`` taps; tap ``i`` is the image shifted by
    ``i`` pixels along the angle (rounded half down), with the border pixels repeated. Taps that would leave
    the image stop the sum for that image (the reference breaks out of its loop there).
    """
    b, c, h, w = x.shape
    width = 2 * radius + 1
    steps = torch.arange(width, dtype=torch.float64)
    kernel = torch.exp(-(steps**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    kernel = (kernel / kernel.sum()).tolist()
    taps: list[list[tuple[int, int, float]]] = []  # per image: (dy, dx, weight) of each tap
    for angle in angles:
        py = width * math.sin(math.radians(angle))
        px = width * math.cos(math.radians(angle))
        hyp = math.hypot(py, px)
        image_taps = []
        for i in range(width):
            dy = -math.ceil(((i * py) / hyp) - 0.5)
            dx = -math.ceil(((i * px) / hyp) - 0.5)
            if abs(dy) >= h or abs(dx) >= w:
                break
            image_taps.append((dy, dx, kernel[i]))
        taps.append(image_taps)
    pad = width
    xp = pad2d(x, pad, pad, "replicate")
    out = torch.zeros_like(x)
    for j, image_taps in enumerate(taps):
        for dy, dx, wgt in image_taps:
            # shifted[y, x] = image[clamp(y - dy), clamp(x - dx)]
            y0, x0 = pad - dy, pad - dx
            out[j].add_(xp[j, :, y0 : y0 + h, x0 : x0 + w], alpha=wgt)
    return out


# --------------------------------------------------------------------------------------------- zooming


def clipped_zoom(x: torch.Tensor, factor: float, crop: bool = True) -> torch.Tensor:
    """Zoom into the centre of ``x`` [B, C, H, W] by ``factor`` with linear interpolation (scipy ``zoom``).

    The centre ``ceil(H / factor)`` rows (and columns) are resampled to ``round(rows * factor)`` on scipy's
    corner-aligned grid (``align_corners=True``), and the top-left H x W part is kept (all of it with
    ``crop=False``).
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / float(factor)), math.ceil(w / float(factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = resize_corners(x[..., top : top + ch, left : left + cw], round(ch * factor), round(cw * factor))
    return out[..., :h, :w] if crop else out


def resize_corners(x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """Bilinear resize of [B, C, h, w] to [B, C, oh, ow], corner pixels aligned (scipy ``zoom``, order 1)."""
    if (oh, ow) == tuple(x.shape[-2:]):
        return x.clone()
    return F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------------------------- colour


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma [B, 1, H, W] (OpenCV's RGB2GRAY weights)."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)
