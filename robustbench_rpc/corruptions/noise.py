"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper) and speckle noise."""

from __future__ import annotations

from typing import Any

import torch

from robustbench_rpc.corruptions._common import rand, randn


def gaussian_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``std`` to every pixel and channel."""
    return x + p["std"] * randn(tuple(x.shape), generator, x.device)


def shot_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Replace each value by Poisson(value * photons) / photons."""
    c = float(p["photons"])
    rate = (x * c).to(torch.float32)
    dev = generator.device if generator is not None else x.device
    counts = torch.poisson(rate.to(dev), generator=generator).to(x.device)
    return counts / c


def impulse_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Set a fraction ``amount`` of the values (each channel independently) to 0 or 1 with equal odds."""
    shape = tuple(x.shape)
    flipped = rand(shape, generator, x.device) <= p["amount"]
    salted = rand(shape, generator, x.device) <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)


def speckle_noise(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add multiplicative Gaussian noise: x + x * N(0, std)."""
    return x + x * p["std"] * randn(tuple(x.shape), generator, x.device)
