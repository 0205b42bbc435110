"""Blur corruptions: defocus, glass, motion, zoom and Gaussian blur."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch

from robustbench_rpc.corruptions._common import (
    clipped_zoom,
    filter2d,
    flat_nonzero,
    gaussian_filter,
    line_motion_blur,
    randint,
    random_bits,
    separable_filter,
    uniform_list,
)

#: Glass blur's index buffers are int32 while every flat index and table key stays below this, else int64.
INT32_INDEX_LIMIT = 2**31


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
    batch: int,
    h: int,
    w: int,
    max_delta: int,
    generator: torch.Generator | None,
    device: torch.device,
    passes: int = 1,
) -> torch.Tensor:
    """Flat source index [passes, B, H*W] (int32; int64 for huge batches) of every pixel after each pass of
    ImageNet-C's local pixel "swaps".

    The reference visits the pixels (h, w) of the interior (max_delta < h <= H - max_delta, same for w) from
    the bottom-right to the top-left, draws an offset (dy, dx) uniform in [-max_delta, max_delta)^2 and
    executes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on H x W x 3 arrays. Both sides of that statement
    are views, so it is not a swap: it copies pixel (h', w') into (h, w) and leaves (h', w') as it was. A
    pixel therefore takes the *current* value of its target: the original value when the target has not been
    visited yet (it comes later in the scan), or the value the target itself already took when it was
    visited earlier (the target lies below, or on the same row to the right, and inside the interior). That
    is a chain of pointers that always moves forward in visiting order, so it ends; the chains of all passes
    are followed together, on the linked pixels only. The result has exactly the distribution of the
    reference's sequential loop (same offset law, same visiting order semantics); only the random stream
    differs. Each pass's map is relative to its own input (compose them to chain passes).
    """
    hw = h * w
    offsets = 4 * max_delta**2
    # int32 indices (half the memory traffic of int64) unless a table key or a flat index could overflow them
    index = torch.int32 if max(passes * batch, offsets) * hw < INT32_INDEX_LIMIT else torch.int64
    targets, links = _glass_tables(h, w, max_delta, str(device))
    targets = targets.to(index)
    per_pixel = torch.arange(0, hw * offsets, offsets, device=device, dtype=index)
    # One flat index space over every pass and image, so that one loop follows all the chains. The passes
    # write into one buffer of each kind: on CPU, every large fresh buffer costs page faults.
    ptr = torch.empty(passes * batch * hw, dtype=index, device=device)
    link = torch.empty(passes * batch * hw, dtype=torch.bool, device=device)
    for k in range(passes):
        key = glass_offset_draws(batch, h, w, max_delta, generator, device).to(index).add_(per_pixel).view(-1)
        torch.index_select(targets, 0, key, out=ptr.narrow(0, k * batch * hw, batch * hw))
        torch.index_select(links, 0, key, out=link.narrow(0, k * batch * hw, batch * hw))
    image_start = torch.arange(0, passes * batch * hw, hw, device=device, dtype=index).view(-1, 1)
    ptr.view(passes * batch, hw).add_(image_start)
    # Each hop finds the current answer of the pixels still followed; a pixel's last answer is its source.
    # The answers are written into ``ptr`` after the loop, which reads it.
    answers = []
    idx = flat_nonzero(link)
    node = ptr.index_select(0, idx)  # index_select / index_copy_: several times faster than x[idx] on CPU
    while idx.numel():
        after = ptr.index_select(0, node)
        answers.append((idx, after))
        keep = flat_nonzero(link.index_select(0, node))
        idx, node = idx.index_select(0, keep), after.index_select(0, keep)
    for idx, after in answers:  # in hop order: later answers overwrite earlier ones
        ptr.index_copy_(0, idx, after)
    return ptr.view(passes * batch, hw).sub_(image_start).view(passes, batch, hw)


@lru_cache(maxsize=16)
def _glass_tables(h: int, w: int, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For each pixel and each of the (2d)^2 offsets r (dy = r // 2d - d, dx = r % 2d - d): the flat index of
    the pixel it copies (itself outside the interior) and whether that target was visited before it (so the
    pixel copies the target's new value, not its original one). Both flat [H * W * (2d)^2], pixel-major, so
    that looking up every pixel's drawn offset reads the tables in order."""
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    r = torch.arange(4 * d * d).view(-1, 1, 1)
    dy, dx = r // (2 * d) - d, r % (2 * d) - d
    ty, tx = ys + dy, xs + dx

    def interior(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return (yy > d) & (yy <= h - d) & (xx > d) & (xx <= w - d)

    inside = interior(ys, xs)
    target = torch.where(inside, ty.clamp(0, h - 1) * w + tx.clamp(0, w - 1), ys * w + xs)
    link = inside & interior(ty, tx) & ((dy > 0) | ((dy == 0) & (dx > 0)))
    offsets = 4 * d * d
    target = target.to(torch.int32)  # int32 indices: half the memory traffic of int64
    return (target.reshape(offsets, h * w).t().reshape(-1).to(device),
            link.reshape(offsets, h * w).t().reshape(-1).to(device))


def glass_offset_draws(
    batch: int, h: int, w: int, d: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """One pass's offset draw per pixel [B, H*W] (int32): r uniform in [0, 4 d^2) gives dy = r // 2d - d and
    dx = r % 2d - d, both uniform in [-d, d). When 4 d^2 is a power of two (d = 1, 2, 4: every severity but 4),
    several pixels' draws are cut from one random word."""
    offsets = 4 * d * d
    if offsets & (offsets - 1) == 0:
        return random_bits(offsets.bit_length() - 1, batch * h * w, generator, device).view(batch, h * w)
    return randint(0, offsets, (batch, h * w), generator, device, torch.int32)


def glass_blur(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian blur, quantise to 8 bits, locally scramble pixels ``iterations`` times, blur again."""
    b, c, h, w = x.shape
    sigma = float(p["sigma"])
    y = torch.floor(gaussian_filter(x, sigma) * 255.0).clamp(0, 255) / 255.0
    # Compose the passes' index maps (pass k reads the result of pass k - 1); the pixels then move once.
    maps = glass_source_indices(b, h, w, int(p["max_delta"]), generator, x.device, int(p["iterations"]))
    maps += torch.arange(0, b * h * w, h * w, device=x.device, dtype=maps.dtype).view(b, 1)  # index over the batch
    src = maps[0].view(-1)
    for step in maps[1:]:
        src = src.index_select(0, step.view(-1))
    moved = y.transpose(0, 1).reshape(c, b * h * w).index_select(1, src)
    return gaussian_filter(moved.view(c, b, h, w).transpose(0, 1), sigma)


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
