"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

from robustbench_rpc.corruptions._common import flat_nonzero, float_to_8bit, rand, randn


def gaussian_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``std`` to every pixel and channel."""
    return x + p["std"] * randn(tuple(x.shape), generator, x.device)


def shot_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Replace each value by Poisson(value * photons) / photons."""
    c = float(p["photons"])
    levels = torch.round(x * 255.0)
    # 8-bit images (the reference's input) sample from exact tables. They are recognised within float error, since
    # level / 255 is not bitwise the same everywhere (CUDA divides by a scalar through its reciprocal).
    if bool(((x * 255.0 - levels).abs() <= 1e-3).all()):
        counts = poisson_8bit(levels.to(torch.int32), c, generator)
        return counts.to(x.dtype).div_(c)
    dev = generator.device if generator is not None else x.device
    counts = torch.poisson((x * c).to(dev), generator=generator).to(x.device)
    return counts / c


def shot_noise_8bit(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """:func:`shot_noise` of a uint8 batch, as uint8: the same draws and the same bytes as the float path
    followed by ``corrupt``'s conversion back to 8 bits, without the float round trip."""
    c = float(p["photons"])
    values = _eight_bit_tables(c, str(x.device))
    return poisson_8bit(x.to(torch.int32), c, generator, values).to(torch.uint8)


@lru_cache(maxsize=16)
def _eight_bit_tables(photons: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8-bit value ``corrupt`` makes of each possible count (the float path's operations, in its order),
    and the guide table of :func:`poisson_tables` holding those values instead of the counts."""
    _, guide, kmax = poisson_tables(photons, torch.device(device))
    to_8bit = float_to_8bit(torch.arange(kmax, dtype=torch.float32).div_(photons), rounded=False).to(device)
    known = guide >= 0
    return to_8bit, torch.where(known, to_8bit.index_select(0, guide.clamp_min(0)), guide)


_LEVELS = 256
_BUCKETS = 1024


@lru_cache(maxsize=16)
def poisson_tables(photons: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inverse-CDF tables of Poisson(level / 255 * photons) for the 256 levels of an 8-bit image.

    Returns the CDFs [256, K] (float32, the last entry of each row forced above 1, so a count always stops),
    a guide table [256 * 1024] (int32): for each level and each bucket [m/1024, (m+1)/1024) of the uniform
    draw, the count of every draw in that bucket, or -1 where a step of the CDF falls inside the bucket (a few
    percent of the draws at most), and K.
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
    # The count of a draw u is the number of CDF entries <= u. Over a bucket it runs from the count at its low
    # edge to the number of entries below its high edge (both edges are exact in float32).
    edges = torch.arange(_BUCKETS + 1, dtype=torch.float32) / _BUCKETS
    low = torch.searchsorted(cdf, edges[:-1].expand(_LEVELS, _BUCKETS).contiguous(), right=True)
    high = torch.searchsorted(cdf, edges[1:].expand(_LEVELS, _BUCKETS).contiguous(), right=False)
    guide = torch.where(low == high, low, torch.full_like(low, -1)).to(torch.int32)
    return cdf.to(device), guide.reshape(-1).to(device), kmax


def poisson_8bit(
    levels: torch.Tensor,
    photons: float,
    generator: torch.Generator | None,
    values: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Poisson(levels / 255 * photons) counts (int32, the shape of ``levels``) by inversion of the exact CDF
    of each 8-bit level.

    ``levels`` holds integers 0..255 (int32). One uniform float32 draw u per value; the guide table gives the
    count of all but a few percent of the draws, and those are counted against their CDF row. The law is
    Poisson up to the float32 resolution of the draw (tails below about 1e-7 are cut). With ``values`` (a
    table of one value per count, and the guide table mapped through it), each count's value is returned.
    """
    cdf, guide, _ = poisson_tables(photons, levels.device)
    of_count, guide = values if values is not None else (None, guide)
    u = rand(tuple(levels.shape), generator, levels.device)
    key = (u * _BUCKETS).to(torch.int32).add_(levels, alpha=_BUCKETS)  # u * 1024 is exact: floor is the bucket
    counts = guide.index_select(0, key.view(-1))
    todo = flat_nonzero(counts.view(-1) < 0)
    if todo.numel():  # draws in a bucket holding a step of the CDF: count the entries at or below the draw
        rows = cdf.index_select(0, levels.reshape(-1).index_select(0, todo))
        found = (rows <= u.reshape(-1).index_select(0, todo)[:, None]).sum(1, dtype=torch.int32)
        counts[todo] = found if of_count is None else of_count.index_select(0, found)
    return counts.view(levels.shape)


def impulse_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Set a fraction ``amount`` of the values (each channel independently) to 0 or 1 with equal odds."""
    # One draw per value: u < amount/2 gives salt, amount/2 <= u < amount pepper (the reference's two
    # independent draws, "flipped" with probability amount and then salt with odds 1/2, have this law).
    u = rand(tuple(x.shape), generator, x.device)
    amount = float(p["amount"])
    return x.masked_fill(u < amount, 0.0).masked_fill_(u < amount / 2.0, 1.0)


def impulse_noise_8bit(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """:func:`impulse_noise` of a uint8 batch, as uint8: the same draws and the same bytes as the float path.

    Multiplying by a mask and adding one is several times faster than ``masked_fill`` on uint8 CPU tensors.
    """
    u = rand(tuple(x.shape), generator, x.device)
    amount = float(p["amount"])
    return (x * (u >= amount)).add_(u < amount / 2.0, alpha=255)


def speckle_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add multiplicative Gaussian noise: x + x * N(0, std)."""
    return x + x * p["std"] * randn(tuple(x.shape), generator, x.device)
