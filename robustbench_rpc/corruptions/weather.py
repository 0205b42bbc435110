"""Weather corruptions: snow, frost and fog (spatter lives in ``spatter.py``)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_rpc.corruptions._common import (
    line_motion_blur,
    rand,
    randn,
    resize_corners,
    rgb_to_gray,
    uniform_list,
)

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


# --------------------------------------------------------------------------------------------- snow


def snow(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Zoomed, thresholded Gaussian flakes, motion-blurred at a random angle, over a whitened image."""
    b, _, h, w = x.shape
    z = float(p["zoom"])
    # The reference draws an H x W field and zooms into its centre; only the centre crop is ever used.
    ch, cw = math.ceil(h / z), math.ceil(w / z)
    oh, ow = round(ch * z), round(cw * z)
    field = p["mean"] + p["std"] * randn((b, 1, ch, cw), generator, x.device)
    layer = resize_corners(field, oh, ow)
    layer = torch.where(layer < p["threshold"], torch.zeros_like(layer), layer).clamp(0, 1)
    angles = uniform_list(b, -135.0, -45.0, generator)
    layer = line_motion_blur(layer, int(p["blur_radius"]), float(p["blur_sigma"]), angles)
    layer = torch.round(layer * 255).clamp(0, 255)[..., :h, :w] / 255.0
    blend = float(p["blend"])
    x = blend * x + (1 - blend) * torch.maximum(x, rgb_to_gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


# --------------------------------------------------------------------------------------------- frost


@lru_cache(maxsize=1)
def frost_images() -> tuple[torch.Tensor, ...]:
    """The six frost overlays (package data) as uint8 RGB tensors [3, h, w].

    The reference reads them with ``cv2.imread`` (BGR) and turns the crop back to RGB before blending.
    """
    from importlib import resources

    import numpy as np
    from PIL import Image

    base = resources.files("robustbench_rpc") / "assets" / "frost"
    out = []
    for name in FROST_FILES:
        with resources.as_file(base / name) as path, Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        out.append(torch.from_numpy(arr).permute(2, 0, 1).contiguous())
    return tuple(out)


def frost_scale(frost_hw: tuple[int, int], image_hw: tuple[int, int]) -> float:
    """Resize factor of a frost overlay so that it covers the image, times 1.1 (as the reference)."""
    fh, fw = frost_hw
    h, w = image_hw
    if fh >= h and fw >= w:
        s = 1.0
    elif fh < h and fw >= w:
        s = h / fh
    elif fh >= h and fw < w:
        s = w / fw
    else:
        s = max(h / fh, w / fw)
    return s * 1.1


_FROST_CACHE: dict[tuple[int, int, str], list[torch.Tensor]] = {}


def resized_frost(h: int, w: int, device: torch.device) -> list[torch.Tensor]:
    """Frost overlays rescaled (bicubic, rounded to 8 bits) for H x W images, cached per size and device."""
    key = (h, w, str(device))
    if key not in _FROST_CACHE:
        layers = []
        for img in frost_images():
            s = frost_scale((img.shape[1], img.shape[2]), (h, w))
            size = (math.ceil(img.shape[1] * s), math.ceil(img.shape[2] * s))
            big = F.interpolate(img[None].float(), size=size, mode="bicubic", align_corners=False)
            layers.append(big[0].round().clamp(0, 255).to(device=device, dtype=torch.float32) / 255.0)
        if len(_FROST_CACHE) > 8:
            _FROST_CACHE.clear()
        _FROST_CACHE[key] = layers
    return _FROST_CACHE[key]


def frost(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Blend the image with a random crop of one of six frost photographs."""
    b, _, h, w = x.shape
    layers = resized_frost(h, w, x.device)
    draws = rand((b, 3), generator, torch.device("cpu")).double()
    crops = []
    for i in range(b):
        layer = layers[min(int(draws[i, 0] * len(layers)), len(layers) - 1)]
        top = int(draws[i, 1] * (layer.shape[1] - h))
        left = int(draws[i, 2] * (layer.shape[2] - w))
        crops.append(layer[:, top : top + h, left : left + w])
    return p["image_weight"] * x + p["frost_weight"] * torch.stack(crops)


# --------------------------------------------------------------------------------------------- fog


def plasma_fractal(
    batch: int, mapsize: int, wibble_decay: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Diamond-square height maps [B, mapsize, mapsize] in [0, 1] (``mapsize`` a power of two).

    On CPU the steps run on a numpy view of the map: numpy's small strided operations cost less overhead than
    torch's and give bitwise the same float32 results.
    """
    m = torch.zeros((batch, mapsize, mapsize), device=device, dtype=torch.float32)
    on_cpu = device.type == "cpu"
    arr, roll = (m.numpy(), np.roll) if on_cpu else (m, torch.roll)

    def noise(shape: tuple[int, ...]) -> Any:
        draws = rand(shape, generator, device)
        return draws.numpy() if on_cpu else draws

    step = mapsize
    wibble = 100.0

    def wibbled_mean(total: Any) -> Any:
        return total / 4 + wibble * (noise(tuple(total.shape)) * (2 * wibble) - wibble)

    while step >= 2:
        half = step // 2
        corners = arr[:, 0::step, 0::step]
        squares = corners + roll(corners, -1, 1)
        squares = squares + roll(squares, -1, 2)
        arr[:, half::step, half::step] = wibbled_mean(squares)
        centres = arr[:, half::step, half::step]
        corners = arr[:, 0::step, 0::step]
        lt = centres + roll(centres, 1, 1) + corners + roll(corners, -1, 2)
        tt = centres + roll(centres, 1, 2) + corners + roll(corners, -1, 1)
        arr[:, 0::step, half::step] = wibbled_mean(lt)
        arr[:, half::step, 0::step] = wibbled_mean(tt)
        step = half
        wibble /= wibble_decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def fog(x: torch.Tensor, p: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Add a plasma-fractal haze and rescale so that the brightest value keeps its place."""
    b, _, h, w = x.shape
    mapsize = 1 << (max(h, w, 3) - 1).bit_length()
    a = float(p["strength"])
    haze = plasma_fractal(b, mapsize, float(p["wibble_decay"]), generator, x.device)[:, None, :h, :w]
    max_val = x.amax((1, 2, 3), keepdim=True)
    return (x + a * haze) * max_val / (max_val + a)
