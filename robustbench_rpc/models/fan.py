"""FAN (Fully Attentional Networks), its hybrid variant, and the symmetric FAN / RPC-FAN of the RPC paper.

* ``fan_*_p16_224`` and ``fan_*_p4_hybrid`` are the official NVlabs/FAN models: same names, same state-dict layout,
  same numbers (see :mod:`robustbench_rpc.models.fan_layers` for the quirks reproduced).
* ``symfan_*`` are the symmetric FAN of rachtsy/FAN ``fan_sym.py``: token mixing and class attention use the key as
  the query, so their checkpoints have no ``q`` Linear in those modules. No PAP.
* ``rpc_fan_*`` are the same models with Principal Attention Pursuit in chosen blocks (``rpc_iters``,
  ``rpc_lambda``, ``rpc_layers``, ``rpc_threshold``); the defaults are the paper's RPC-FAN-tiny: first block,
  4 attention evaluations, lambda 4. ``symfan_*`` and ``rpc_fan_*`` load the same checkpoints.

Every builder takes the config fields as keyword overrides (``embed_dim``, ``depth``, ``num_heads``,
``num_classes``, ``mlp_ratio``, ``cls_attn_layers``, ``backbone_depths``, ...), as timm's builders do.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.models.attention import RPCConfig
from robustbench_rpc.models.fan_hybrid import ConvNeXtStem, HybridEmbed
from robustbench_rpc.models.fan_layers import (
    ClassAttentionBlock,
    ConvPatchEmbed,
    FANBlock,
    PositionalEncodingFourier,
)
from robustbench_rpc.models.registry import Family, register, register_family

__all__ = ["FAN", "adapt_fan_state_dict", "infer_fan_config"]


class FAN(nn.Module):
    """Fully Attentional Network: conv (or ConvNeXt-stem) patch embedding, Fourier position encoding, FAN blocks,
    class-attention blocks, final norm and a linear head on the class token.

    ``symmetric`` selects key-as-query attention (RPC-FAN checkpoints); ``rpc`` adds PAP in the blocks it selects.
    ``backbone_depths`` / ``backbone_dims`` make it a FAN-Hybrid (ConvNeXt stages before the tokens).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        cls_attn_layers: int = 2,
        use_pos_embed: bool = True,
        pos_hidden_dim: int = 32,
        eta: float = 1.0,
        tokens_norm: bool = True,
        channel_heads: int | None = None,
        backbone_depths: Sequence[int] | None = None,
        backbone_dims: Sequence[int] = (128, 256),
        hybrid_patch_size: int = 2,
        head_init_scale: float = 1.0,
        symmetric: bool = False,
        rpc: RPCConfig | None = None,
    ) -> None:
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if backbone_depths is None and (size[0] % patch_size or size[1] % patch_size):
            raise UserError(f"FAN image size {size} is not divisible by patch_size={patch_size}.")
        if embed_dim % num_heads != 0:
            raise UserError(f"FAN embed_dim={embed_dim} is not divisible by num_heads={num_heads}.")
        if rpc is not None and not symmetric:
            raise UserError("PAP (RPC attention) needs symmetric attention; use an rpc_fan_* model.")
        self.img_size = size
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.depth = depth
        self.symmetric = symmetric
        self.rpc = rpc.validate(depth) if rpc is not None else None
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        if backbone_depths is None:
            self.patch_embed: nn.Module = ConvPatchEmbed(patch_size, in_chans, embed_dim)
        else:
            backbone = ConvNeXtStem(in_chans, list(backbone_depths), list(backbone_dims))
            self.patch_embed = HybridEmbed(backbone, patch_size=hybrid_patch_size, embed_dim=embed_dim)
        self.use_pos_embed = use_pos_embed
        if use_pos_embed:
            self.pos_embed = PositionalEncodingFourier(hidden_dim=pos_hidden_dim, dim=embed_dim)
        self.pos_drop = nn.Dropout(p=drop_rate)

        rpc_blocks = set(self.rpc.block_indices(depth)) if self.rpc is not None else set()
        self.blocks = nn.ModuleList(
            [
                FANBlock(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=drop_path_rate,
                    norm_layer=norm_layer,
                    eta=eta,
                    channel_heads=channel_heads,
                    symmetric=symmetric,
                    rpc=self.rpc if i in rpc_blocks else None,
                )
                for i in range(depth)
            ]
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_attn_blocks = nn.ModuleList(
            [
                ClassAttentionBlock(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    norm_layer=norm_layer,
                    eta=eta,
                    tokens_norm=tokens_norm,
                    symmetric=symmetric,
                )
                for _ in range(cls_attn_layers)
            ]
        )
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(head_init_scale)

    def _init_weights(self, head_init_scale: float) -> None:
        trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if isinstance(self.head, nn.Linear) and head_init_scale != 1.0:
            with torch.no_grad():
                self.head.weight.mul_(head_init_scale)
                self.head.bias.mul_(head_init_scale)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Return the parameter names that training should not decay."""
        return {"cls_token"}

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
        """Return the normalized token sequence ``[B, 1 + N, D]`` (class token first)."""
        B = x.shape[0]
        x, (height, width) = self.patch_embed(x)
        if self.use_pos_embed:
            pos = self.pos_embed(B, height, width).reshape(B, -1, x.shape[1]).permute(0, 2, 1)
            x = x + pos
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x, height, width)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        for block in self.cls_attn_blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Classify from the class token (or return it with ``pre_logits``)."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------------------------
# Reading the architecture off a checkpoint


def _indices(state_dict: dict[str, Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state_dict if (m := regex.match(k))})


def infer_fan_config(state_dict: dict[str, Tensor]) -> dict[str, Any]:
    """Read width, depth, heads, MLP ratio, class count, patch embedding and hybrid stem off a FAN state dict.

    ``num_heads`` comes from the shape of ``blocks.0.mlp.temperature`` (``[heads, 1, 1]``). The image size is not
    inferred: FAN's position encoding works at any resolution, so the model config's size stays.
    """
    sd = state_dict
    cfg: dict[str, Any] = {}
    cls = sd.get("cls_token")
    proj = sd.get("pos_embed.token_projection.weight", sd.get("pos_embeder.token_projection.weight"))
    if cls is not None and cls.ndim == 3:
        cfg["embed_dim"] = int(cls.shape[-1])
    elif proj is not None:
        cfg["embed_dim"] = int(proj.shape[0])
    blocks = _indices(sd, r"^blocks\.(\d+)\.")
    if blocks:
        cfg["depth"] = blocks[-1] + 1
    cls_blocks = _indices(sd, r"^cls_attn_blocks\.(\d+)\.")
    if cls_blocks:
        cfg["cls_attn_layers"] = cls_blocks[-1] + 1
    temperature = sd.get("blocks.0.mlp.temperature")
    if temperature is not None and temperature.ndim == 3:
        cfg["num_heads"] = int(temperature.shape[0])
    fc1 = sd.get("blocks.0.mlp.mlp_v.fc1.weight")
    if fc1 is not None and "embed_dim" in cfg:
        cfg["mlp_ratio"] = fc1.shape[0] / cfg["embed_dim"]
    if "blocks.0.attn.kv.weight" in sd:
        cfg["qkv_bias"] = "blocks.0.attn.kv.bias" in sd
    head = sd.get("head.weight")
    cfg["num_classes"] = int(head.shape[0]) if head is not None and head.ndim == 2 else 0
    cfg["use_pos_embed"] = proj is not None
    if proj is not None:
        cfg["pos_hidden_dim"] = int(proj.shape[1]) // 2
    convs = _indices(sd, r"^patch_embed\.proj\.(\d+)\.0\.weight$")
    if convs:
        cfg["patch_size"] = 2 ** len(convs)
        cfg["in_chans"] = int(sd[f"patch_embed.proj.{convs[0]}.0.weight"].shape[1])
    stem = sd.get("patch_embed.backbone.stem.0.weight")
    if stem is not None:
        cfg["in_chans"] = int(stem.shape[1])
        stages = _indices(sd, r"^patch_embed\.backbone\.stages\.(\d+)\.")
        depths, dims = [], []
        for i in stages:
            depths.append(len(_indices(sd, rf"^patch_embed\.backbone\.stages\.{i}\.blocks\.(\d+)\.")))
            gamma = sd.get(f"patch_embed.backbone.stages.{i}.blocks.0.gamma")
            down = sd.get(f"patch_embed.backbone.stages.{i}.downsample.1.weight")
            dims.append(
                int(gamma.shape[0]) if gamma is not None else int(down.shape[0]) if down is not None else 0
            )
        if dims and dims[0] == 0:
            dims[0] = int(stem.shape[0])
        cfg["backbone_depths"] = depths
        cfg["backbone_dims"] = dims
        hybrid_proj = sd.get("patch_embed.proj.weight")
        if hybrid_proj is not None and hybrid_proj.ndim == 4:
            cfg["hybrid_patch_size"] = int(hybrid_proj.shape[-1])
    return cfg


def adapt_fan_state_dict(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map older official layouts onto ours: ``pos_embeder.*`` -> ``pos_embed.*``; fused class-attention ``qkv``
    split into ``q``/``k``/``v`` (as the official ``checkpoint_filter_fn`` does)."""
    out = {
        k.replace("pos_embeder.", "pos_embed.", 1) if k.startswith("pos_embeder.") else k: v
        for k, v in state_dict.items()
    }
    own = model.state_dict()
    for key in [k for k in out if re.match(r"^cls_attn_blocks\.\d+\.attn\.qkv\.(weight|bias)$", k)]:
        prefix, kind = key.rsplit(".qkv.", 1)
        if f"{prefix}.q.{kind}" not in own:
            continue
        fused = out.pop(key)
        for name, part in zip("qkv", fused.reshape(3, -1, *fused.shape[1:]).unbind(0), strict=True):
            out[f"{prefix}.{name}.{kind}"] = part
    return out


# ----------------------------------------------------------------------------------------------------------------
# Families, configs and builders

_ACCEPTS = {
    "fan": "FAN",
    "fan_hybrid": "FAN-Hybrid",
    "rpc_fan": "symmetric FAN / RPC-FAN",
    "rpc_fan_hybrid": "symmetric / RPC FAN-Hybrid",
}
for _family, _label in _ACCEPTS.items():
    register_family(
        Family(
            name=_family,
            infer_config=infer_fan_config,
            accepts=(_family,),
            label=_label,
            adapt_state_dict=adapt_fan_state_dict,
        )
    )


def _cfg(hybrid: bool = False, **kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.backbone.stem.0" if hybrid else "patch_embed.proj.0.0",
        "classifier": "head",
        "license": "other",
        "origin_url": "https://github.com/NVlabs/FAN",
        **kwargs,
    }


#: Official architectures: name -> constructor defaults (from NVlabs/FAN's registrations).
ARCHS: dict[str, dict[str, Any]] = {
    "fan_tiny_12_p16_224": {"embed_dim": 192, "depth": 12, "num_heads": 4},
    "fan_small_12_p16_224": {"embed_dim": 384, "depth": 12, "num_heads": 8},
    "fan_base_18_p16_224": {"embed_dim": 448, "depth": 18, "num_heads": 8},
    "fan_large_24_p16_224": {"embed_dim": 480, "depth": 24, "num_heads": 10},
    "fan_tiny_8_p4_hybrid": {"embed_dim": 192, "depth": 8, "num_heads": 8, "backbone_depths": (3, 3)},
    "fan_small_12_p4_hybrid": {"embed_dim": 384, "depth": 10, "num_heads": 8, "backbone_depths": (3, 3)},
    "fan_base_16_p4_hybrid": {"embed_dim": 448, "depth": 16, "num_heads": 8, "backbone_depths": (3, 3)},
    "fan_large_16_p4_hybrid": {
        "embed_dim": 480,
        "depth": 22,
        "num_heads": 10,
        "backbone_depths": (3, 5),
        "head_init_scale": 0.001,
    },
}
for _arch in ARCHS.values():
    _arch.update(patch_size=16, eta=1.0, tokens_norm=True)
    if "backbone_depths" in _arch:
        _arch["backbone_dims"] = (128, 256)

PREFIXES = {"fan": "", "symmetric": "sym", "rpc": "rpc_"}

default_cfgs = generate_default_cfgs(
    {
        f"{PREFIXES[kind]}{arch}": _cfg(
            hybrid="hybrid" in arch,
            **({} if kind == "fan" else {"origin_url": "https://github.com/rachtsy/FAN"}),
        )
        for kind in PREFIXES
        for arch in ARCHS
    }
)

RPC_KWARGS = ("rpc_iters", "rpc_lambda", "rpc_layers", "rpc_threshold")
_TIMM_KWARGS = set(inspect.signature(build_model_with_cfg).parameters) | {
    "pruned",
    "features_only",
    "out_indices",
    "feature_cls",
    "device",
    "dtype",
}
_MODEL_KWARGS = set(inspect.signature(FAN.__init__).parameters) - {"self", "symmetric", "rpc"}


def _create(variant: str, arch: str, kind: str, pretrained: bool, **kwargs: Any) -> FAN:
    if pretrained:
        raise UserError(
            f"{variant} has no downloadable weights here; pass a checkpoint file instead (--checkpoint PATH)."
        )
    rpc_options = {k: kwargs.pop(k) for k in RPC_KWARGS if k in kwargs}
    rpc = None
    if kind == "rpc":
        rpc = RPCConfig(
            iters=rpc_options.get("rpc_iters", 4),
            lam=rpc_options.get("rpc_lambda", 4.0),
            layers=rpc_options.get("rpc_layers", "first"),
            threshold=rpc_options.get("rpc_threshold", "code"),
        )
    elif rpc_options:
        what = "the official FAN (query-key attention)" if kind == "fan" else "symmetric FAN without PAP"
        raise UserError(
            f"{variant} is {what} and takes no {', '.join(sorted(rpc_options))}; "
            f"use rpc_{arch} for RPC attention (it loads symfan_* / RPC-FAN checkpoints)."
        )
    unknown = [k for k in kwargs if k not in _MODEL_KWARGS and k not in _TIMM_KWARGS]
    if unknown:
        hint = did_you_mean(unknown[0], sorted(_MODEL_KWARGS | set(RPC_KWARGS)))
        raise UserError(f"{variant} has no option {unknown[0]!r}{hint}.")
    hybrid = "backbone_depths" in ARCHS[arch]
    if not hybrid and kwargs.get("backbone_depths") is not None:
        raise UserError(
            f"{variant} is a FAN-ViT; use a *_p4_hybrid model for a ConvNeXt stem (backbone_depths)."
        )
    args = {**ARCHS[arch], **kwargs}
    return build_model_with_cfg(FAN, variant, pretrained=False, symmetric=kind != "fan", rpc=rpc, **args)


def _make_builder(arch: str, kind: str) -> None:
    name = f"{PREFIXES[kind]}{arch}"
    hybrid = "hybrid" in arch
    family = {"fan": "fan", "symmetric": "rpc_fan", "rpc": "rpc_fan"}[kind] + ("_hybrid" if hybrid else "")
    size = arch.split("_")[1]
    base = f"FAN-{'Hybrid-' if hybrid else ''}{size}"
    doc = {
        "fan": f"{base} (NVlabs/FAN, query-key token and class attention).",
        "symmetric": f"Symmetric {base} (rachtsy/FAN fan_sym, key-as-query attention, no PAP).",
        "rpc": f"RPC-{base}: symmetric {base} with PAP (default n=4, lambda 4, first block).",
    }[kind]

    def builder(pretrained: bool = False, **kwargs: Any) -> FAN:
        return _create(name, arch, kind, pretrained, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = __name__
    builder.__doc__ = doc
    attention = {"fan": "softmax", "symmetric": "symmetric", "rpc": "rpc"}[kind]
    globals()[name] = register(family, attention, doc)(builder)
    __all__.append(name)


for _kind in PREFIXES:
    for _arch_name in ARCHS:
        _make_builder(_arch_name, _kind)
