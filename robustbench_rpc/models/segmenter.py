"""Segmenter (Strudel et al., 2021): a ViT encoder and a linear or mask-transformer decoder, for semantic segmentation.

The encoder is any ViT with ``forward_features`` returning normalized tokens (prefix tokens first) and a
``patch_embed.patch_size``: our SymViT / RPC-SymViT (every PAP option) or a timm ViT. The decoders follow the
Segmenter paper and its public code's parameter names, so Segmenter-format checkpoints (``encoder.*``,
``decoder.*``) load by name:

- linear: ``head`` maps each patch token to class logits;
- mask transformer: patch tokens projected to the decoder width (``proj_dec``) and the learned class embeddings
  (``cls_emb``) go through ``blocks`` together; after ``decoder_norm`` the patches and the class embeddings are
  projected (``proj_patch``, ``proj_classes``), L2-normalized, and their dot products (one mask per class) are
  normalized over the classes (``mask_norm``).

Masks on the patch grid are upsampled bilinearly to the (padded) input and cropped back. :func:`sliding_window`
evaluates an image larger than the encoder's window as Segmenter's evaluation does: windows of ``window`` pixels at
``stride``, the last one flush with the border, logits averaged where windows overlap, then a softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn


class LinearDecoder(nn.Module):
    """Per-patch linear classifier: ``[B, N, d_encoder]`` tokens to ``[B, n_cls, gh, gw]`` logits."""

    def __init__(self, n_cls: int, d_encoder: int) -> None:
        super().__init__()
        self.n_cls = n_cls
        self.head = nn.Linear(d_encoder, n_cls)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        x = self.head(tokens)
        return x.transpose(1, 2).reshape(x.shape[0], self.n_cls, *grid)


class MaskTransformerDecoder(nn.Module):
    """Segmenter's mask transformer: class embeddings attend with the patches; masks are their cosine products."""

    def __init__(self, n_cls: int, d_encoder: int, n_layers: int = 2, n_heads: int = 3, d_model: int = 192,
                 d_ff: int | None = None, drop_path_rate: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_cls = n_cls
        d_ff = d_ff if d_ff is not None else 4 * d_model
        rates = [drop_path_rate * i / max(n_layers - 1, 1) for i in range(n_layers)]
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, mlp_ratio=d_ff / d_model, qkv_bias=True, proj_drop=dropout, attn_drop=dropout,
                  drop_path=rate, norm_layer=nn.LayerNorm)
            for rate in rates
        )
        scale = d_model ** -0.5
        self.cls_emb = nn.Parameter(torch.randn(1, n_cls, d_model) * 0.02)
        self.proj_dec = nn.Linear(d_encoder, d_model)
        self.proj_patch = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(scale * torch.randn(d_model, d_model))
        self.decoder_norm = nn.LayerNorm(d_model)
        self.mask_norm = nn.LayerNorm(n_cls)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        x = self.proj_dec(tokens)
        x = torch.cat((x, self.cls_emb.expand(x.shape[0], -1, -1)), dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_norm(x)
        patches = x[:, : -self.n_cls] @ self.proj_patch
        classes = x[:, -self.n_cls:] @ self.proj_classes
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # [B, N, n_cls]
        return masks.transpose(1, 2).reshape(masks.shape[0], self.n_cls, *grid)


def _patch_size(encoder: nn.Module) -> int:
    size = encoder.patch_embed.patch_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


class Segmenter(nn.Module):
    """ViT encoder + decoder; ``forward`` maps normalized images ``[B, 3, H, W]`` to logits ``[B, n_cls, H, W]``."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, n_cls: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.n_cls = n_cls
        self.patch_size = _patch_size(encoder)
        self.num_prefix_tokens = int(getattr(encoder, "num_prefix_tokens", 1))

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        p = self.patch_size
        padded = F.pad(images, (0, (-width) % p, 0, (-height) % p))
        grid = (padded.shape[-2] // p, padded.shape[-1] // p)
        tokens = self.encoder.forward_features(padded)[:, self.num_prefix_tokens:]
        masks = self.decoder(tokens, grid)
        masks = F.interpolate(masks, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return masks[..., :height, :width]


def window_anchors(size: int, window: int, stride: int) -> list[int]:
    """Top (or left) offsets of the windows along one side: every ``stride``, the last flush with the border."""
    if size <= window:
        return [0]
    return [a for a in range(0, size, stride) if a < size - window] + [size - window]


def sliding_window(model: nn.Module, images: Tensor, window: int, stride: int, n_cls: int,
                   batch_size: int = 8) -> Tensor:
    """Class probabilities ``[B, n_cls, H, W]`` of images at least ``window`` on their shorter side.

    Windows of ``window`` x ``window`` at ``stride`` (:func:`window_anchors`) go through ``model`` in batches of
    ``batch_size``; the logits of overlapping windows are averaged per pixel before the softmax over classes.
    """
    b, _, height, width = images.shape
    if min(height, width) < window:
        raise ValueError(f"images of {height}x{width} are smaller than the {window}-pixel window; resize them first")
    tops, lefts = window_anchors(height, window, stride), window_anchors(width, window, stride)
    anchors = [(t, left) for t in tops for left in lefts]
    logits = images.new_zeros((b, n_cls, height, width))
    count = images.new_zeros((1, 1, height, width))
    crops = [(t, left, images[:, :, t:t + window, left:left + window]) for t, left in anchors]
    for start in range(0, len(crops), max(1, batch_size // b)):
        chunk = crops[start:start + max(1, batch_size // b)]
        out = model(torch.cat([c for _, _, c in chunk]))
        for i, (t, left, _) in enumerate(chunk):
            logits[:, :, t:t + window, left:left + window] += out[i * b:(i + 1) * b]
            count[:, :, t:t + window, left:left + window] += 1
    return (logits / count).softmax(dim=1)
