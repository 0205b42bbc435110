"""The building blocks of FAN (Fully Attentional Networks) and of its symmetric / RPC variant.

Module and parameter names follow the official code (NVlabs/FAN ``models/fan.py``, rachtsy/FAN
``models/fan_sym.py``) so that released checkpoints load unchanged. The numerics follow it too, quirks included:

* the value path of channel processing (``mlp_v``) has no activation between ``fc1`` and ``fc2``; its depthwise
  branch is conv -> GELU -> BatchNorm -> conv, added back with a learned per-channel ``gamma``;
* the value norm ``norm_v`` is a LayerNorm with PyTorch's default eps 1e-5 (every other LayerNorm uses 1e-6);
* the class-attention blocks add the *normalized* patch tokens back onto the patch tokens, normalize every token
  (``tokens_norm``), then add the patch tokens to themselves again (they double);
* the Fourier position encoding is computed in the dtype of its projection weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.attention import BackwardMode, RPCConfig, principal_attention_pursuit

__all__ = [
    "ChannelProcessing",
    "ClassAttention",
    "ClassAttentionBlock",
    "ConvPatchEmbed",
    "DepthwiseConvBranch",
    "FANBlock",
    "PositionalEncodingFourier",
    "TokenMixing",
    "ValueMlp",
]


class PositionalEncodingFourier(nn.Module):
    """Sine/cosine encoding of the (row, column) grid position, projected to the width by a 1x1 conv.

    It depends on the grid size only, so FAN runs at any input resolution. The grid and the frequencies are
    computed in the dtype of ``token_projection.weight`` (float64 models get a float64 encoding).
    """

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.scale = 2 * math.pi
        self.temperature = temperature
        self.hidden_dim = hidden_dim
        self.dim = dim
        self.eps = 1e-6

    def forward(self, batch: int, height: int, width: int) -> Tensor:
        """Return the encoding for a ``height x width`` grid, shape ``[batch, dim, height, width]``."""
        weight = self.token_projection.weight
        kw: dict[str, Any] = {"dtype": weight.dtype, "device": weight.device}
        rows = torch.arange(1, height + 1, **kw).unsqueeze(1).repeat(1, 1, width)
        cols = torch.arange(1, width + 1, **kw).repeat(1, height, 1)
        rows = rows / (rows[:, -1:, :] + self.eps) * self.scale
        cols = cols / (cols[:, :, -1:] + self.eps) * self.scale
        freq = torch.arange(self.hidden_dim, **kw)
        freq = self.temperature ** (2 * torch.div(freq, 2, rounding_mode="floor") / self.hidden_dim)
        pos_x = cols[:, :, :, None] / freq
        pos_y = rows[:, :, :, None] / freq
        pos_x = torch.stack([pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()], dim=4).flatten(3)
        pos_y = torch.stack([pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()], dim=4).flatten(3)
        pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
        return self.token_projection(pos).expand(batch, -1, -1, -1)


def _conv3x3_bn(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
    )


class ConvPatchEmbed(nn.Module):
    """Patch embedding by stride-2 conv3x3 + BatchNorm stages with GELU between them (4 stages for patch 16)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        if patch_size == 16:
            widths = [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        elif patch_size == 8:
            widths = [embed_dim // 4, embed_dim // 2, embed_dim]
        elif patch_size == 4:
            widths = [embed_dim // 4, embed_dim]
        else:
            raise UserError(
                f"FAN's convolutional patch embedding needs patch_size 4, 8 or 16, got {patch_size}."
            )
        self.patch_size = patch_size
        layers: list[nn.Module] = []
        prev = in_chans
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(_conv3x3_bn(prev, width, 2))
            prev = width
        self.proj = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Return tokens ``[B, H*W, D]`` and the grid size ``(H, W)``."""
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid


class DepthwiseConvBranch(nn.Module):
    """Depthwise conv3x3 -> GELU -> BatchNorm -> depthwise conv3x3 over the token grid (FAN's ``DWConv``)."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Map tokens ``[B, N, C]`` (``N = height * width``) to tokens of the same shape."""
        B, N, C = x.shape
        x = x.permute(0, 2, 1).reshape(B, C, height, width)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.reshape(B, C, N).permute(0, 2, 1)


class ValueMlp(nn.Module):
    """FAN's value MLP: ``fc2(h + gamma * dwconv(h))`` with ``h = fc1(x)`` and no activation after ``fc1``."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DepthwiseConvBranch(hidden_features)
        self.gamma = nn.Parameter(torch.ones(hidden_features))
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Transform tokens ``[B, N, C]`` on a ``height x width`` grid."""
        x = self.fc1(x)
        x = self.drop(self.gamma * self.dwconv(x, height, width)) + x
        return self.drop(self.fc2(x))


class ChannelProcessing(nn.Module):
    """FAN's channel attention: a sigmoid gate per head and channel, times ``temperature``, on the MLP'd values."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        mlp_hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UserError(f"FAN width {dim} is not divisible by num_heads={num_heads}.")
        self.dim = dim
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.mlp_v = ValueMlp(dim, mlp_hidden_dim or dim, drop=drop)
        self.norm_v = nn.LayerNorm(dim)  # eps 1e-5, as in the official code
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)

    def channel_gate(self, x: Tensor) -> Tensor:
        """Return the gate ``[B, heads, head_dim, 1]`` computed from the input tokens ``[B, N, C]``."""
        B, N, C = x.shape
        heads, head_dim = self.num_heads, C // self.num_heads
        q = self.q(x).reshape(B, N, heads, head_dim).permute(0, 2, 1, 3)
        k = x.reshape(B, N, heads, head_dim).permute(0, 2, 1, 3)
        q = q.softmax(-2).transpose(-1, -2)  # [B, h, d, N]
        k = k.softmax(-2).mean(-1, keepdim=True)  # [B, h, N, 1]
        return torch.sigmoid(q @ k) * self.temperature

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Return the channel-processed tokens ``[B, N, C]``."""
        B, N, C = x.shape
        gate = self.attn_drop(self.channel_gate(x))  # [B, h, d, 1]
        v = self.norm_v(self.mlp_v(x, height, width)).reshape(B, N, self.num_heads, C // self.num_heads)
        return (v * gate.squeeze(-1).unsqueeze(1)).reshape(B, N, C)


class TokenMixing(nn.Module):
    """Multi-head self-attention over the patch tokens.

    ``symmetric=False`` is FAN's attention (a ``q`` Linear and a ``kv`` Linear); ``symmetric=True`` uses the keys as
    queries (no ``q`` Linear), as in RPC-FAN, and with ``rpc`` set the keys go through Principal Attention Pursuit.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        symmetric: bool = False,
        rpc: RPCConfig | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise UserError(f"FAN width {dim} is not divisible by num_heads={num_heads}.")
        if rpc is not None and not symmetric:
            raise UserError("PAP (RPC attention) needs symmetric token mixing; build an rpc_fan_* model.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.symmetric = symmetric
        self.rpc = rpc
        self.pap_backward: BackwardMode = "exact"  # "bpda": PAP's value, plain attention's gradient (adaptive attacks)
        if not symmetric:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        """Return the attended and projected tokens ``[B, N, C]``."""
        B, N, C = x.shape
        kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        if self.rpc is not None:
            x = principal_attention_pursuit(
                k,
                v,
                iters=self.rpc.iters,
                lam=self.rpc.lam,
                scale=self.scale,
                embed_dim=C,
                threshold=self.rpc.threshold,
                dropout_p=dropout_p,
                backward=self.pap_backward,
            )
        else:
            q = (
                k
                if self.symmetric
                else self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
            )
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        mode = "symmetric" if self.symmetric else "query-key"
        rpc = (
            "off"
            if self.rpc is None
            else f"n={self.rpc.iters}, lambda={self.rpc.lam:g}, {self.rpc.threshold}"
        )
        if self.rpc is not None and self.pap_backward != "exact":
            rpc += f", backward={self.pap_backward}"
        return f"heads={self.num_heads}, head_dim={self.head_dim}, {mode}, rpc={rpc}"


class ClassAttention(nn.Module):
    """CaiT class attention: the class token attends to all tokens.

    With ``symmetric=True`` (RPC-FAN) its query is the *key* projection of the class token (no ``q`` Linear).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.symmetric = symmetric
        if not symmetric:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        """Return the updated class token ``[B, 1, C]`` for tokens ``[B, N, C]`` (class token first)."""
        B, N, C = x.shape
        k = self.k(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        if self.symmetric:
            q = k[:, :, :1]
        else:
            q = self.q(x[:, :1]).reshape(B, 1, self.num_heads, self.head_dim).transpose(1, 2)
        dropout_p = self.attn_drop if self.training else 0.0
        x_cls = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=self.scale)
        x_cls = x_cls.transpose(1, 2).reshape(B, 1, C)
        return self.proj_drop(self.proj(x_cls))


class ClassAttentionBlock(nn.Module):
    """FAN's class-attention block (CaiT style, with FAN's handling of the patch tokens).

    The patch tokens receive their own normalized copy (``x + gamma1 * norm1(x)``), are normalized with the class
    token when ``tokens_norm``, and are then added to themselves: the official code does exactly this.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Any = nn.LayerNorm,
        eta: float | None = 1.0,
        tokens_norm: bool = False,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        if eta is not None:
            self.gamma1 = nn.Parameter(eta * torch.ones(dim))
            self.gamma2 = nn.Parameter(eta * torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None
        self.norm1 = norm_layer(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop, drop, symmetric=symmetric)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.tokens_norm = tokens_norm

    def forward(self, x: Tensor) -> Tensor:
        """Update tokens ``[B, 1 + N, C]`` (class token first)."""
        x_norm1 = self.norm1(x)
        x_attn = torch.cat([self.attn(x_norm1), x_norm1[:, 1:]], dim=1)
        if self.gamma1 is not None:
            x_attn = self.gamma1 * x_attn
        x = x + self.drop_path(x_attn)
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        cls_token = self.mlp(x[:, :1])
        if self.gamma2 is not None:
            cls_token = self.gamma2 * cls_token
        return x + self.drop_path(torch.cat([cls_token, x[:, 1:]], dim=1))


class FANBlock(nn.Module):
    """One FAN block: token mixing then channel processing, each pre-normed with a layer-scale residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Any = nn.LayerNorm,
        eta: float = 1.0,
        channel_heads: int | None = None,
        symmetric: bool = False,
        rpc: RPCConfig | None = None,
    ) -> None:
        super().__init__()
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))
        self.norm1 = norm_layer(dim)
        self.attn = TokenMixing(dim, num_heads, qkv_bias, attn_drop, drop, symmetric=symmetric, rpc=rpc)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = ChannelProcessing(
            dim,
            num_heads=channel_heads or num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            drop=drop,
            mlp_hidden_dim=int(dim * mlp_ratio),
        )

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Update tokens ``[B, N, C]`` on a ``height x width`` grid."""
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x), height, width))
