"""The convolutional stem of FAN-Hybrid: the first stages of a ConvNeXt, then a strided conv to tokens.

Names follow NVlabs/FAN ``models/convnext_utils.py`` (``patch_embed.backbone.stem``, ``...stages.{i}.downsample``,
``...stages.{i}.blocks.{j}.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``, ``patch_embed.proj``) so the released hybrid
checkpoints load unchanged. Stage depths and widths are constructor options, read from a checkpoint by
:func:`robustbench_rpc.models.fan.infer_fan_config`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from robustbench_rpc.errors import UserError

__all__ = ["ConvNeXtBlock", "ConvNeXtStage", "ConvNeXtStem", "HybridEmbed", "LayerNorm2d"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, H, W]`` tensor (eps 1e-6), as the official hybrid stem computes it.

    Quirk kept from the official code: a contiguous input is normalized with the biased variance (``layer_norm``),
    any other input (e.g. the channels-last output of a depthwise conv on CPU) with the *unbiased* variance of
    ``torch.var_mean``. The two differ by a factor ``sqrt(C / (C - 1))`` and the checkpoints were trained with it.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_contiguous():
            x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)
        var, mean = torch.var_mean(x, dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvMlp(nn.Module):
    """Two 1x1 convolutions with GELU between them."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm2d, 1x1-conv MLP (ratio 4), layer scale, residual."""

    def __init__(
        self, dim: int, drop_path: float = 0.0, ls_init_value: float = 1e-6, mlp_ratio: int = 4
    ) -> None:
        super().__init__()
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim))
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm(self.conv_dw(x)))
        y = y.mul(self.gamma.reshape(1, -1, 1, 1))
        return self.drop_path(y) + x


class ConvNeXtStage(nn.Module):
    """A ConvNeXt stage: optional LayerNorm2d + strided conv downsample, then ``depth`` blocks."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, depth: int, drop_path: Sequence[float]
    ) -> None:
        super().__init__()
        if in_chs != out_chs or stride > 1:
            self.downsample: nn.Module = nn.Sequential(
                LayerNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, kernel_size=stride, stride=stride)
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(out_chs, drop_path=drop_path[j]) for j in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtStem(nn.Module):
    """The truncated ConvNeXt of FAN-Hybrid: a 4x4/4 patchify stem and ``len(depths)`` stages, no head."""

    def __init__(
        self,
        in_chans: int = 3,
        depths: Sequence[int] = (3, 3),
        dims: Sequence[int] = (128, 256),
        stem_size: int = 4,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(dims) < len(depths):
            raise UserError(
                f"Hybrid backbone needs one width per stage: depths {list(depths)}, widths {list(dims)}."
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=stem_size, stride=stem_size), LayerNorm2d(dims[0])
        )
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # as torch.linspace
        stages = []
        prev, start = dims[0], 0
        for i, depth in enumerate(depths):
            stages.append(
                ConvNeXtStage(prev, dims[i], 2 if i > 0 else 1, depth, rates[start : start + depth])
            )
            prev, start = dims[i], start + depth
        self.stages = nn.Sequential(*stages)
        self.num_features = prev

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the last stage's feature map ``[B, C, H/8, W/8]`` (for two stages)."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


class HybridEmbed(nn.Module):
    """Tokens from a CNN feature map: backbone, then a ``patch_size`` x ``patch_size`` strided conv."""

    def __init__(self, backbone: ConvNeXtStem, patch_size: int = 2, embed_dim: int = 384) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(backbone.num_features, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Return tokens ``[B, H*W, D]`` and the grid size ``(H, W)``."""
        x = self.backbone.forward_features(x)
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid
