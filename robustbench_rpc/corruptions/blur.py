"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustbench_rpc.corruptions._common import (
    clipped_zoom,
    filter2d,
    gaussian_filter,
    line_motion_blur,
    randint,
    separable_filter,
    uniform_list,
)


def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """Anti-aliased disk of ``radius`` (on a grid of at least 17 x 17), as ImageNet-C's defocus kernel."""
    half = 8 if radius <= 8 else radius
    ksize = 3 if radius <= 8 else 5
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    # Supersampling step: a small Gaussian blur of the disk itself, with OpenCV's default reflect-101 border.
    g = torch.exp(-((torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2) ** 2) / (2 * alias_blur**2))
    g = (g / g.sum()).float()
    return separable_filter(disk.float()[None, None], g, g, "reflect101")[0, 0]


def defocus_blur(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Convolve with an anti-aliased disk (border: reflect-101)."""
    return filter2d(x, disk_kernel(p["radius"], p["alias_blur"]), "reflect101")


def gaussian_blur(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` (truncated at 4 sigma, border: nearest)."""
    return gaussian_filter(x, float(p["sigma"]))


def glass_source_indices(
    batch: int, h: int, w: int, max_delta: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Flat source index [B, H*W] of every pixel after one pass of ImageNet-C's local pixel "swaps".

    The reference visits the pixels (h, w) of the interior (max_delta < h <= H - max_delta, same for w) from
    the bottom-right to the top-left, draws an offset (dy, dx) uniform in [-max_delta, max_delta)^2 and
    executes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on H x W x 3 arrays. Both sides of that statement
    are views, so it is not a swap: it copies pixel (h', w') into (h, w) and leaves (h', w') as it was. A
    pixel therefore takes the *current* value of its target: the original value when the target has not been
    visited yet (it comes later in the scan), or the value the target itself already took when it was
    visited earlier (the target lies below, or on the same row to the right, and inside the interior). That
    is a chain of pointers that always moves forward in visiting order, so it ends; we follow all chains at
    once by pointer doubling (log2 of the longest chain steps). The result has exactly the distribution of
    the reference's sequential loop (same offset law, same visiting order semantics); only the random stream
    differs.
    """
    d = max_delta
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    dy = randint(-d, d, (batch, h, w), generator, device)
    dx = randint(-d, d, (batch, h, w), generator, device)
    ty, tx = ys + dy, xs + dx

    def interior(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return (yy > d) & (yy <= h - d) & (xx > d) & (xx <= w - d)

    inside = interior(ys, xs).expand(batch, h, w)
    flat_self = (ys * w + xs).expand(batch, h, w)
    ptr = torch.where(inside, ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1), flat_self).reshape(batch, h * w)
    visited_before = (ty > ys) | ((ty == ys) & (tx > xs))
    link = (inside & interior(ty, tx) & visited_before).reshape(batch, h * w)
    while bool(link.any()):
        next_ptr = ptr.gather(1, ptr)
        next_link = link.gather(1, ptr)
        ptr = torch.where(link, next_ptr, ptr)
        link = link & next_link
    return ptr


def glass_blur(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian blur, quantise to 8 bits, locally scramble pixels ``iterations`` times, blur again."""
    b, c, h, w = x.shape
    sigma = float(p["sigma"])
    y = torch.floor(gaussian_filter(x, sigma) * 255.0).clamp(0, 255) / 255.0
    flat = y.reshape(b, c, h * w)
    for _ in range(int(p["iterations"])):
        src = glass_source_indices(b, h, w, int(p["max_delta"]), generator, x.device)
        flat = flat.gather(2, src[:, None, :].expand(b, c, h * w))
    return gaussian_filter(flat.reshape(b, c, h, w), sigma)


def motion_blur(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Blur along a line at a random angle in [-45, 45) degrees per image (one-sided Gaussian taps)."""
    angles = uniform_list(x.shape[0], -45.0, 45.0, generator)
    return line_motion_blur(x, int(p["radius"]), float(p["sigma"]), angles)


def zoom_factors(stop: float, step: float) -> list[float]:
    """The zoom factors ``numpy.arange(1, stop, step)`` of one zoom-blur severity."""
    return [float(z) for z in np.arange(1, stop, step)]


def zoom_blur(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Average the image with centre zooms of it by each factor of the severity's range."""
    factors = zoom_factors(p["stop"], p["step"])
    out = x.clone()
    for z in factors:
        out += clipped_zoom(x, z)
    return out / (len(factors) + 1)


__all__ = ["defocus_blur", "disk_kernel", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur"]
