"""SymViT and RPC-SymViT: DeiT-style vision transformers with symmetric (key-as-query) attention.

The state-dict layout is that of the official KPCA code (rachtsy/KPCA_code ``Robust/softmax.py``): one ``qkv``
Linear of shape ``[2D, D]`` holding keys then values, DeiT names everywhere else. RPC-SymViT adds no parameters, so
the two share checkpoints; PAP settings are model options (``rpc_iters``, ``rpc_lambda``, ``rpc_layers``,
``rpc_threshold``), as in the official evaluation scripts.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.attention import RPCConfig, SymmetricAttention
from robustbench_rpc.models.registry import Family, register, register_family

__all__ = ["SymViT", "SymViTBlock", "infer_symvit_config"]


class SymViTBlock(nn.Module):
    """Pre-norm transformer block with symmetric (optionally RPC) attention and an MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Any = nn.LayerNorm,
        rpc: RPCConfig | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = SymmetricAttention(dim, num_heads, qkv_bias, attn_drop, drop, rpc=rpc)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SymViT(nn.Module):
    """DeiT-style ViT with symmetric attention; PAP (RPC attention) in the blocks that ``rpc`` selects."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        rpc: RPCConfig | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise UserError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}.")
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.depth = depth
        self.rpc = rpc.validate(depth) if rpc is not None else None
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(p=drop_rate)
        rpc_blocks = set(self.rpc.block_indices(depth)) if self.rpc is not None else set()
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *[
                SymViTBlock(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    dpr[i],
                    norm_layer,
                    rpc=self.rpc if i in rpc_blocks else None,
                )
                for i in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Return the parameter names that training should not decay."""
        return {"pos_embed", "cls_token"}

    def get_classifier(self) -> nn.Module:
        """Return the classifier head."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def rpc_description(self) -> str:
        """Return a one-line description of where PAP runs, or 'off'."""
        return "off" if self.rpc is None else self.rpc.describe(self.depth)

    def forward_features(self, x: Tensor) -> Tensor:
        """Return the normalized token sequence (class token first)."""
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Classify from the class token (or return it with ``pre_logits``)."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def infer_symvit_config(state_dict: dict[str, Tensor]) -> dict[str, Any]:
    """Read width, depth, patch size, MLP ratio, class count and image size off a SymViT state dict."""
    cfg: dict[str, Any] = {}
    proj = state_dict.get("patch_embed.proj.weight")
    if proj is not None:
        cfg["embed_dim"] = int(proj.shape[0])
        cfg["in_chans"] = int(proj.shape[1])
        cfg["patch_size"] = int(proj.shape[-1])
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
    if blocks:
        cfg["depth"] = max(blocks) + 1
    fc1 = state_dict.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and "embed_dim" in cfg:
        cfg["mlp_ratio"] = fc1.shape[0] / cfg["embed_dim"]
    cfg["qkv_bias"] = "blocks.0.attn.qkv.bias" in state_dict
    head = state_dict.get("head.weight")
    cfg["num_classes"] = int(head.shape[0]) if head is not None else 0
    pos = state_dict.get("pos_embed")
    if pos is not None and "patch_size" in cfg:
        side = math.isqrt(pos.shape[1] - 1)
        if side * side == pos.shape[1] - 1:
            cfg["img_size"] = side * cfg["patch_size"]
    return cfg


def adapt_symvit_state_dict(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Resample the position embedding when the model was built for another image size than the checkpoint."""
    pos = state_dict.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pos is None or own is None or pos.shape == own.shape:
        return state_dict
    grid = model.patch_embed.grid_size
    out = dict(state_dict)
    out["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=1)
    return out


register_family(
    Family(
        name="symvit",
        infer_config=infer_symvit_config,
        accepts=("symvit",),
        label="SymViT",
        adapt_state_dict=adapt_symvit_state_dict,
    )
)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


_SIZES = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    # the embedded demo's model: 32x32 digits, patches of 4, 10 classes
    "digits": {"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, "patch_size": 8, "img_size": 32,
               "num_classes": 10},
}

_DIGITS_CFG = {"num_classes": 10, "input_size": (3, 32, 32), "crop_pct": 1.0, "interpolation": "bilinear",
               "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "license": "apache-2.0"}

default_cfgs = generate_default_cfgs(
    {
        **{f"{p}symvit_{size}_patch16_224": _cfg() for p in ("", "rpc_") for size in ("tiny", "small", "base")},
        **{f"{prefix}symvit_digits_patch8_32": _cfg(**_DIGITS_CFG) for prefix in ("", "rpc_")},
    }
)

RPC_KWARGS = ("rpc_iters", "rpc_lambda", "rpc_layers", "rpc_threshold")


def _pick_heads(embed_dim: int, default_heads: int) -> int:
    if embed_dim % default_heads == 0:
        return default_heads
    if embed_dim % 64 == 0:
        return embed_dim // 64
    raise UserError(
        f"Cannot choose num_heads for embed_dim={embed_dim} (not divisible by {default_heads} or 64); pass num_heads."
    )


def _create(variant: str, size: str, pretrained: bool, rpc_default: bool, **kwargs: Any) -> SymViT:
    if pretrained:
        raise UserError(
            f"{variant} has no downloadable weights; pass a checkpoint file instead (--checkpoint PATH)."
        )
    rpc_options = {k: kwargs.pop(k) for k in RPC_KWARGS if k in kwargs}
    rpc = None
    if rpc_default:
        rpc = RPCConfig(
            iters=rpc_options.get("rpc_iters", 4),
            lam=rpc_options.get("rpc_lambda", 4.0),
            layers=rpc_options.get("rpc_layers", "first"),
            threshold=rpc_options.get("rpc_threshold", "code"),
        )
    elif rpc_options:
        raise UserError(
            f"{variant} uses plain symmetric attention and takes no {', '.join(sorted(rpc_options))}; "
            f"use rpc_{variant} for RPC attention (it loads the same checkpoints)."
        )
    args = dict(_SIZES[size])
    args.update(kwargs)
    if "num_heads" not in kwargs:
        args["num_heads"] = _pick_heads(args["embed_dim"], _SIZES[size]["num_heads"])
    return build_model_with_cfg(SymViT, variant, pretrained=False, rpc=rpc, **args)


def _rpc_doc(size: str) -> str:
    return f"RPC-SymViT-{size}: SymViT-{size} with PAP (default n=4 attention evaluations, lambda 4, first block)."


@register("symvit", "symmetric", "SymViT-tiny: DeiT-tiny with symmetric softmax attention.")
def symvit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """SymViT-tiny (DeiT-tiny config, symmetric attention)."""
    return _create("symvit_tiny_patch16_224", "tiny", pretrained, False, **kwargs)


@register("symvit", "symmetric", "SymViT-small: DeiT-small with symmetric softmax attention.")
def symvit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """SymViT-small (DeiT-small config, symmetric attention; width follows the checkpoint, e.g. 348)."""
    return _create("symvit_small_patch16_224", "small", pretrained, False, **kwargs)


@register("symvit", "symmetric", "SymViT-base: DeiT-base with symmetric softmax attention.")
def symvit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """SymViT-base (DeiT-base config, symmetric attention)."""
    return _create("symvit_base_patch16_224", "base", pretrained, False, **kwargs)


@register("symvit", "rpc", _rpc_doc("tiny"))
def rpc_symvit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """RPC-SymViT-tiny (PAP options: rpc_iters, rpc_lambda, rpc_layers, rpc_threshold)."""
    return _create("rpc_symvit_tiny_patch16_224", "tiny", pretrained, True, **kwargs)


@register("symvit", "rpc", _rpc_doc("small"))
def rpc_symvit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """RPC-SymViT-small (PAP options: rpc_iters, rpc_lambda, rpc_layers, rpc_threshold)."""
    return _create("rpc_symvit_small_patch16_224", "small", pretrained, True, **kwargs)


@register("symvit", "rpc", _rpc_doc("base"))
def rpc_symvit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """RPC-SymViT-base (PAP options: rpc_iters, rpc_lambda, rpc_layers, rpc_threshold)."""
    return _create("rpc_symvit_base_patch16_224", "base", pretrained, True, **kwargs)



@register("symvit", "symmetric", "SymViT for the embedded 32x32 digits demo (64 wide, 4 blocks, 4 heads, patch 8).")
def symvit_digits_patch8_32(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """SymViT sized for the embedded digits demo."""
    return _create("symvit_digits_patch8_32", "digits", pretrained, False, **kwargs)


@register("symvit", "rpc", "RPC-SymViT for the embedded 32x32 digits demo (PAP n=4, lambda 4, first block).")
def rpc_symvit_digits_patch8_32(pretrained: bool = False, **kwargs: Any) -> SymViT:
    """RPC-SymViT sized for the embedded digits demo."""
    return _create("rpc_symvit_digits_patch8_32", "digits", pretrained, True, **kwargs)
