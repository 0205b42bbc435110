"""The evaluation transform built from a model's preprocessing dict: resize, center crop, pixels in [0, 1].

It matches timm's eval transform (``transforms_imagenet_eval``, crop mode "center") minus the normalization,
which models do themselves: resize the shorter side to ``floor(size / crop_pct)``, center crop ``size``.
It works on uint8 [3, H, W] tensors (torchvision's antialiased uint8 kernels, within 2/255 of PIL).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from robustbench_rpc.errors import UserError

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")  # the modes torchvision resizes uint8 tensors with


def _input_hw(input_size: Any) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    size = tuple(int(v) for v in input_size)
    if len(size) == 3:
        size = size[1:]
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) <= 0:
        raise UserError(f"preprocessing input_size {input_size!r} is not (C, H, W), (H, W) or an int > 0.")
    return size[0], size[1]


@dataclass(frozen=True)
class EvalTransform:
    """Resize (shorter side) + center crop + scale to float32 [0, 1]; no normalization.

    ``resize=False`` (ImageNet-C, whose released images are already 224 x 224) only center-crops; an image
    smaller than the crop is first resized so that its shorter side equals the crop size.
    """

    height: int = 224
    width: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    resize: bool = True

    @property
    def scale_size(self) -> tuple[int, int]:
        """Return the size the shorter side is resized to before cropping, per output dimension."""
        return math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)

    def _mode(self) -> Any:
        from torchvision.transforms import InterpolationMode

        return InterpolationMode(self.interpolation)

    def _resize_shorter(self, image: Tensor, target_h: int, target_w: int) -> Tensor:
        import torchvision.transforms.v2.functional as F

        h, w = image.shape[-2:]
        if target_h == target_w:
            size: list[int] = [target_h]  # shorter side, keep aspect ratio (torchvision / timm behaviour)
        else:  # timm's ResizeKeepRatio for non-square targets: scale so both target sides fit
            ratio = max(target_h / h, target_w / w)
            size = [round(h * ratio), round(w * ratio)]
        return F.resize(image, size, interpolation=self._mode(), antialias=True)

    def __call__(self, image: Tensor) -> Tensor:
        """Map a uint8 [3, H, W] image to float32 [3, height, width] in [0, 1]."""
        import torchvision.transforms.v2.functional as F

        if self.resize:
            image = self._resize_shorter(image, *self.scale_size)
        elif min(image.shape[-2:]) < min(self.height, self.width):
            image = self._resize_shorter(image, self.height, self.width)
        image = F.center_crop(image, [self.height, self.width])
        if image.dtype == torch.uint8:
            return image.to(torch.float32).div_(255.0)
        return image.to(torch.float32).clamp_(0.0, 1.0)


def build_eval_transform(
    preprocessing: Mapping[str, Any] | None = None, *, resize: bool = True
) -> EvalTransform:
    """Build the eval transform from a preprocessing dict (input_size, crop_pct, interpolation; mean/std unused)."""
    pre = dict(preprocessing or {})
    height, width = _input_hw(pre.get("input_size", (3, 224, 224)))
    crop_pct = float(pre.get("crop_pct") or 0.875)
    if not 0.0 < crop_pct <= 1.0:
        raise UserError(f"preprocessing crop_pct {crop_pct} is not in (0, 1].")
    interpolation = str(pre.get("interpolation") or "bicubic")
    if interpolation == "random":  # timm training-time option; eval uses bilinear then
        interpolation = "bilinear"
    if interpolation not in _INTERPOLATIONS:
        raise UserError(
            f"preprocessing interpolation {interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}."
        )
    return EvalTransform(height, width, crop_pct, interpolation, resize)
