"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from robustbench_rpc.corruptions._common import rand, randn


def gaussian_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``std`` to every pixel and channel."""
    return x + p["std"] * randn(tuple(x.shape), generator, x.device)


def shot_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Replace each value by Poisson(value * photons) / photons."""
    c = float(p["photons"])
    levels = torch.round(x * 255.0)
    if torch.equal(levels / 255.0, x):  # 8-bit images (the reference's input): sample from exact tables
        return poisson_8bit(levels, c, generator).div_(c)
    dev = generator.device if generator is not None else x.device
    counts = torch.poisson((x * c).to(dev), generator=generator).to(x.device)
    return counts / c


_LEVELS = 256
_BUCKETS = 256


@lru_cache(maxsize=16)
def poisson_tables(photons: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inverse-CDF tables of Poisson(level / 255 * photons) for the 256 levels of an 8-bit image.

    Returns the flat CDFs [256 * K] (the last entry of each row forced above 1, so a search always stops),
    a guide table [256 * 256]: for each level and each bucket [m/256, (m+1)/256) of the uniform draw, the
    smallest count whose CDF exceeds m/256 (where the search for a draw in that bucket starts), and K.
    """
    lam = torch.arange(_LEVELS, dtype=torch.float64) / (_LEVELS - 1) * photons
    kmax = int(math.ceil(photons + 12.0 * math.sqrt(photons) + 16))
    k = torch.arange(kmax, dtype=torch.float64)
    log_pmf = k * torch.log(lam[:, None].clamp_min(1e-300)) - lam[:, None] - torch.lgamma(k + 1)
    pmf = torch.exp(log_pmf)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # level 0: always 0 photons
    cdf = pmf.cumsum(1).float()
    cdf[:, -1] = 2.0
    edges = torch.arange(_BUCKETS, dtype=torch.float32) / _BUCKETS
    guide = (cdf[:, None, :] <= edges[None, :, None]).sum(-1).float()
    return cdf.reshape(-1).to(device), guide.reshape(-1).to(device), kmax


def poisson_8bit(levels: torch.Tensor, photons: float, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson(levels / 255 * photons) counts (float32) by inversion of the exact CDF of each 8-bit level.

    ``levels`` holds whole numbers 0..255 as floats. One uniform draw per value; a guide table gives the right
    count for all but a few percent of the draws, which are then counted against their whole CDF row. The law
    is Poisson up to the float32 resolution of the draw (tails below about 1e-7 are cut).
    """
    cdf, guide, kmax = poisson_tables(photons, levels.device)
    u = rand(tuple(levels.shape), generator, levels.device)
    # Index arithmetic in float32 is exact here (integers below 2^24), and cheaper than int64.
    bucket = torch.floor(u * _BUCKETS).add_(levels, alpha=_BUCKETS).long()
    counts = torch.take(guide, bucket).reshape(-1)
    flat_u = u.reshape(-1)
    row = (levels * kmax).reshape(-1)
    todo = (flat_u >= torch.take(cdf, (row + counts).long())).nonzero().squeeze(1)
    if todo.numel():  # the draws whose bucket holds a step of the CDF: count the steps at or below the draw
        rows = cdf.view(_LEVELS, kmax)[levels.reshape(-1)[todo].long()]
        counts[todo] = (rows <= flat_u[todo, None]).sum(1).to(counts.dtype)
    return counts.reshape(levels.shape)


def impulse_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Set a fraction ``amount`` of the values (each channel independently) to 0 or 1 with equal odds."""
    # One draw per value: u < amount/2 gives salt, amount/2 <= u < amount pepper (the reference's two
    # independent draws, "flipped" with probability amount and then salt with odds 1/2, have this law).
    u = rand(tuple(x.shape), generator, x.device)
    half = float(p["amount"]) / 2.0
    out = x.masked_fill(u < half, 1.0)
    return out.masked_fill_((u >= half) & (u < 2.0 * half), 0.0)


def speckle_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add multiplicative Gaussian noise: x + x * N(0, std)."""
    return x + x * p["std"] * randn(tuple(x.shape), generator, x.device)
