"""The public entry point ``corrupt`` and the registry of corruption names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from robustbench_rpc.corruptions import blur, digital, noise, spatter, weather
from robustbench_rpc.corruptions._common import float_to_8bit
from robustbench_rpc.corruptions.severity import SEVERITIES, severity_params
from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.names import CORRUPTION_GROUPS as CORRUPTION_GROUPS
from robustbench_rpc.names import EXTRA_CORRUPTIONS as EXTRA_CORRUPTIONS
from robustbench_rpc.names import STANDARD_CORRUPTIONS as STANDARD_CORRUPTIONS

CorruptionFn = Callable[[torch.Tensor, dict[str, Any], "torch.Generator | None"], torch.Tensor]

CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": spatter.spatter,
    "saturate": digital.saturate,
}

# Corruptions with a path of their own for uint8 batches: the same draws and the same bytes as the float path
# followed by the conversion back to 8 bits below (tests check it), in fewer passes over memory.
EIGHT_BIT_PATHS: dict[str, CorruptionFn] = {
    "shot_noise": noise.shot_noise_8bit,
    "impulse_noise": noise.impulse_noise_8bit,
    "jpeg_compression": digital.jpeg_compression_8bit,
}

# Corruptions whose reference returns an 8-bit image rounded by Pillow; the others truncate (numpy.uint8).
_ROUNDED_OUTPUT = frozenset({"pixelate", "jpeg_compression"})
MIN_SIDE = 32
CHUNK_VALUES = 1 << 19
#: Values per chunk when the random draws are made on a GPU (a CUDA generator, or none with CUDA images): large
#: chunks keep the GPU busy, and such draws are specific to the device anyway.
DEVICE_CHUNK_VALUES = 1 << 25


def check_corruption_name(name: object) -> str:
    """Return ``name`` if it names a corruption, else raise a UserError listing them."""
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise UserError(
            f"Unknown corruption {name!r}{did_you_mean(str(name), CORRUPTIONS)}; expected one of: "
            + ", ".join(CORRUPTIONS)
            + "."
        )
    return name


def check_severity(severity: object) -> int:
    """Return ``severity`` if it is an integer from 1 to 5, else raise a UserError."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise UserError(f"Severity {severity!r} is out of range; expected an integer from 1 to 5.")
    return severity


def check_images(images: object) -> torch.Tensor:
    """Validate a batch of images (uint8, or float in [0, 1], shape [B, 3, H, W]) and return it."""
    if not isinstance(images, torch.Tensor):
        raise UserError(f"Images must be a torch.Tensor of shape [B, 3, H, W], got {type(images).__name__}.")
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"Images must have shape [B, 3, H, W], got {list(images.shape)}.")
    if images.shape[2] < MIN_SIDE or images.shape[3] < MIN_SIDE:
        raise UserError(
            f"Images must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {images.shape[2]} x {images.shape[3]}."
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise UserError(f"Images must be uint8 or floating point in [0, 1], got dtype {images.dtype}.")
    if images.is_floating_point() and images.numel():
        lo, hi = torch.aminmax(images.detach())
        if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))) or lo < 0 or hi > 1:
            raise UserError(f"Float images must lie in [0, 1], got values from {float(lo):.4g} to {float(hi):.4g}.")
    return images


def corrupt(images: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ImageNet-C corruption ``name`` at ``severity`` (1-5) to a batch [B, 3, H, W].

    ``images`` are uint8 in [0, 255] or floating point in [0, 1], on any device; the result has the same
    shape, dtype, range and device. Random corruptions draw from ``generator`` (or torch's default generator
    of the images' device when it is None), so a seeded generator reproduces the result; a CPU generator
    gives the same corruption on CPU and GPU. Parameters scale with the image size as in the reference
    implementation.
    """
    name = check_corruption_name(name)
    severity = check_severity(severity)
    images = check_images(images)
    if images.shape[0] == 0:
        return images.clone()
    params = severity_params(name, severity)
    out = torch.empty_like(images)
    draws_on = generator.device if generator is not None else images.device
    step = chunk_size(images.shape, draws_on)
    with torch.no_grad():
        for start in range(0, images.shape[0], step):
            _corrupt_chunk(images[start : start + step], name, params, generator, out[start : start + step])
    return out


def chunk_size(shape: torch.Size, draws_on: torch.device = torch.device("cpu")) -> int:
    """Images per internal chunk.

    With draws on the CPU (a CPU generator, or none with CPU images): about 2^19 values (2 MiB of float32), so
    that every intermediate of a corruption stays in the CPU cache; this chunking does not depend on where the
    images are, so a CPU generator gives the same corruption on CPU and GPU. With draws on a GPU: about 2^25
    values, so that each kernel has enough work.
    """
    values = CHUNK_VALUES if draws_on.type == "cpu" else DEVICE_CHUNK_VALUES
    return max(1, values // (shape[1] * shape[2] * shape[3]))


def _corrupt_chunk(
    images: torch.Tensor,
    name: str,
    params: dict[str, Any],
    generator: torch.Generator | None,
    out: torch.Tensor,
) -> None:
    """Corrupt one chunk into ``out`` (same dtype as ``images``), with as few passes over memory as possible."""
    fn = CORRUPTIONS[name]
    if images.dtype == torch.uint8 and name in EIGHT_BIT_PATHS:
        out.copy_(EIGHT_BIT_PATHS[name](images, params, generator))
        return
    if images.dtype != torch.uint8:
        out.copy_(fn(images.float(), params, generator).clamp(0, 1))  # out of place: never the caller's images
        return
    y = fn(torch.div(images, 255.0), params, generator)  # one pass; may return its fresh input, changed in place
    out.copy_(float_to_8bit(y, rounded=name in _ROUNDED_OUTPUT))
