"""Spatter: water drops (severities 1-3, an embossed Canny-edge distance map) or mud (severities 4-5)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from robustbench_rpc.corruptions._common import filter2d, gaussian_filter, randn

_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # OpenCV's fixed-point tan(22.5 deg)
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
_BOX3 = torch.full((3, 3), 1.0 / 9.0)
_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)  # pale turquoise, added to R, G, B
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)  # mud brown


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Canny edges (bool [B, 1, H, W]) of 8-bit-valued images [B, 1, H, W], following OpenCV's ``Canny``.

    3 x 3 Sobel gradients (replicated border), L1 magnitude, non-maximum suppression in four directions (zero
    magnitude outside the image), double threshold and 8-connected hysteresis.
    """
    b, _, h, w = img.shape
    # whole numbers times small integer taps: the float32 sums are exact
    gx = filter2d(img.float(), _SOBEL_X, "replicate").long()
    gy = filter2d(img.float(), _SOBEL_X.t(), "replicate").long()
    mag = gx.abs() + gy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside the image

    def at(dy: int, dx: int) -> torch.Tensor:
        return mp[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = gx.abs(), gy.abs() << 15
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << 16)
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg67x)
    diagonal = ~horizontal & ~vertical
    same_sign = (gx < 0) == (gy < 0)  # OpenCV: s = +1 when the signs agree, else -1
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(
        same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1))
    )
    maximum = (horizontal & keep_h) | (vertical & keep_v) | (diagonal & keep_d)
    candidate = maximum & (mag > low)
    edges = candidate & (mag > high)
    while True:
        grown = candidate & _dilate3(edges)
        if bool((grown == edges).all()):
            return edges
        edges = grown


def _dilate3(mask: torch.Tensor) -> torch.Tensor:
    """3 x 3 dilation of a bool mask [B, 1, H, W] (outside the image counts as False), as two separable ORs."""
    h, w = mask.shape[-2:]
    p = F.pad(mask.to(torch.uint8), (1, 1, 1, 1))
    rows = p[..., :, 0:w] | p[..., :, 1 : w + 1] | p[..., :, 2 : w + 2]
    return (rows[..., 0:h, :] | rows[..., 1 : h + 1, :] | rows[..., 2 : h + 2, :]).bool()


def truncated_distance(edges: torch.Tensor, limit: int = 20) -> torch.Tensor:
    """Euclidean distance [B, 1, H, W] of every pixel to the nearest edge pixel, capped at ``limit``.

    Exact within the cap: the distance to the nearest edge of the same column comes from running maxima of
    edge row indices (up and down), then a pass over the ``2 * limit + 1`` column offsets takes the lower
    envelope of ``vertical ** 2 + offset ** 2``.
    """
    big = float(limit + 1)
    h, w = edges.shape[-2:]
    rows = torch.arange(h, device=edges.device).view(1, 1, h, 1).expand_as(edges)
    far = torch.full_like(rows, -(10 * h))
    above = torch.where(edges, rows, far).cummax(2).values  # last edge row at or above
    # same on the flipped rows gives the next edge at or below
    below = torch.where(edges, h - 1 - rows, far).flip(2).cummax(2).values.flip(2)
    vert = torch.minimum(rows - above, (h - 1 - below) - rows).float().clamp(max=big)
    rowp = F.pad(vert**2, (limit, limit, 0, 0), value=big**2)
    dist2 = torch.full_like(vert, big**2)
    for d in range(-limit, limit + 1):
        dist2 = torch.minimum(dist2, rowp[..., :, limit + d : limit + d + w] + d * d)
    return dist2.sqrt().clamp(max=float(limit))


def equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of 8-bit-valued images [B, 1, H, W], per image, as OpenCV's ``equalizeHist``."""
    b = img.shape[0]
    vals = img.reshape(b, -1).long()
    hist = torch.zeros((b, 256), dtype=torch.long, device=img.device).scatter_add_(
        1, vals, torch.ones_like(vals)
    )
    total = vals.shape[1]
    levels = torch.arange(256, device=img.device)
    first = torch.where(hist > 0, levels, torch.full_like(levels, 256)).amin(1, keepdim=True)
    cum = hist.cumsum(1)
    cum_first = cum.gather(1, first.clamp(max=255))
    denom = (total - hist.gather(1, first.clamp(max=255))).clamp_min(1).double()
    lut = torch.round((cum - cum_first).double() * (255.0 / denom)).clamp(0, 255)
    lut = torch.where(levels[None] <= first, torch.zeros_like(lut), lut)
    constant = hist.gather(1, first.clamp(max=255)) == total
    lut = torch.where(constant, first.double().expand_as(lut), lut)
    return lut.gather(1, vals).reshape(img.shape).to(img.dtype)


def spatter(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Blobs of a smoothed, thresholded Gaussian field drawn as water drops or mud splashes."""
    b, _, h, w = x.shape
    liquid = p["mean"] + p["std"] * randn((b, 1, h, w), generator, x.device)
    liquid = gaussian_filter(liquid, float(p["sigma"]))
    liquid = torch.where(liquid < p["threshold"], torch.zeros_like(liquid), liquid)
    if p["mud"]:
        m = gaussian_filter((liquid > p["threshold"]).float(), float(p["intensity"]))
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        color = torch.tensor(_MUD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return x * (1 - m) + color * m
    liquid8 = torch.floor(liquid * 255).clamp(0, 255)
    edges = canny(liquid8, 50, 150)
    dist = truncated_distance(edges)
    dist = torch.floor(filter2d(dist, _BOX3, "reflect101"))
    dist = equalize_hist(dist)
    dist = torch.round(filter2d(dist, _EMBOSS, "reflect101")).clamp(0, 255)
    dist = torch.round(filter2d(dist, _BOX3, "reflect101"))
    m = liquid8 * dist
    m = m / m.amax((2, 3), keepdim=True).clamp_min(1e-12) * p["intensity"]
    color = torch.tensor(_WATER, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x + m * color
