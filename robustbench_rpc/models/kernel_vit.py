"""ViTs with the paper's other attention variants: Scaled Attention *S*, alpha x Asym, the KPCA (Reconstruction) ViT.

The state-dict layout is the official code's (rachtsy/KPCA_code ``Scaled_Attention/softmax.py`` and
``Reconstruction/softmax.py``): DeiT names, one ``qkv`` Linear ``[3D, D]``, and for Scaled Attention a parameter
``attn.s`` per block (``H x N x N`` for *S*, one scalar for alpha x Asym). Official training checkpoints
(``model``, ``model_ema``, ``args``) load strictly through :mod:`robustbench_rpc.models.checkpoint`.

Heads follow the size (tiny 3, small 6, base 12) except ``kpca_vit_tiny``, which has 6 heads as the official
Reconstruction ``deit_tiny_patch16_224`` does; pass ``num_heads`` to override.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import DropPath, Mlp
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import Tensor, nn

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.kernel_attention import KPCAAttention, ScaledAttention
from robustbench_rpc.models.registry import Family, register, register_family
from robustbench_rpc.models.symvit import (
    _SIZES,
    SymViT,
    _cfg,
    _pick_heads,
    adapt_symvit_state_dict,
    infer_symvit_config,
)

__all__ = ["KernelBlock", "KernelViT"]

#: attention kind -> (family name, label)
KINDS = {
    "scaled_s": ("scaled_s", "Scaled Attention S"),
    "scaled_alpha": ("scaled_alpha", "Scaled Attention alpha x Asym"),
    "kpca": ("kpca", "KPCA (Reconstruction) ViT"),
}


class KernelBlock(nn.Module):
    """Pre-norm transformer block around a given attention module."""

    def __init__(
        self, dim: int, attn: nn.Module, mlp_ratio: float, drop: float, drop_path: float, norm_layer: Any
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class KernelViT(SymViT):
    """DeiT-style ViT whose blocks use Scaled Attention (``scaled_s`` / ``scaled_alpha``) or KPCA attention."""

    def __init__(self, attention: str = "kpca", **kwargs: Any) -> None:
        if attention not in KINDS:
            raise UserError(f"Unknown attention kind {attention!r}; expected one of {', '.join(KINDS)}.")
        kwargs.pop("rpc", None)
        super().__init__(rpc=None, **kwargs)
        self.attention = attention
        dim, heads = self.embed_dim, kwargs.get("num_heads", 3)
        depth = self.depth
        qkv_bias = kwargs.get("qkv_bias", True)
        drop, attn_drop = kwargs.get("drop_rate", 0.0), kwargs.get("attn_drop_rate", 0.0)
        drop_path_rate = kwargs.get("drop_path_rate", 0.0)
        tokens = self.pos_embed.shape[1]
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        def make_attn() -> nn.Module:
            if attention == "kpca":
                return KPCAAttention(dim, heads, qkv_bias, attn_drop, drop)
            return ScaledAttention(dim, heads, tokens, attention == "scaled_alpha", qkv_bias, attn_drop, drop)

        self.blocks = nn.Sequential(
            *[KernelBlock(dim, make_attn(), kwargs.get("mlp_ratio", 4.0), drop, dpr[i], norm_layer)
              for i in range(depth)]
        )
        self._init_weights()
        if attention == "scaled_s":
            side = self.patch_embed.img_size
            self.resize_hint = (
                f"its Scaled Attention S is a learned {tokens}x{tokens} matrix per head, so it only takes "
                f"{side[0]}x{side[1]} inputs"
            )

    def rpc_description(self) -> str:
        """Return 'off': these models run no PAP."""
        return "off"


def _adapt_scaled_s(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Refuse another token count (S is N x N); otherwise nothing to adapt."""
    s = state_dict.get("blocks.0.attn.s")
    own = model.pos_embed.shape[1]
    if s is not None and s.ndim == 3 and s.shape[-1] != own:
        raise UserError(
            f"This Scaled Attention S checkpoint was trained on {s.shape[-1]} tokens but the model was built for "
            f"{own}; S is a learned {s.shape[-1]}x{s.shape[-1]} matrix, so drop img_size to use the checkpoint's size."
        )
    return state_dict


for _kind, (_family, _label) in KINDS.items():
    register_family(
        Family(
            name=_family,
            infer_config=infer_symvit_config,  # the qkv width is not read, so [3D, D] is fine
            accepts=("vit",) if _kind == "kpca" else (_family,),
            label=_label,
            adapt_state_dict=_adapt_scaled_s if _kind == "scaled_s" else adapt_symvit_state_dict,
        )
    )

_PREFIX = {"scaled_s": "scaled_vit", "scaled_alpha": "scaled_alpha_vit", "kpca": "kpca_vit"}
_OFFICIAL_HEADS = {("kpca", "tiny"): 6}

default_cfgs = generate_default_cfgs(
    {f"{prefix}_{size}_patch16_224": _cfg() for prefix in _PREFIX.values() for size in ("tiny", "small", "base")}
)


def _create(variant: str, kind: str, size: str, pretrained: bool, **kwargs: Any) -> KernelViT:
    if pretrained:
        raise UserError(f"{variant} has no downloadable weights; pass a checkpoint file instead (--checkpoint PATH).")
    args = dict(_SIZES[size])
    default_heads = _OFFICIAL_HEADS.get((kind, size), _SIZES[size]["num_heads"])
    args.update(kwargs)
    if "num_heads" not in kwargs:
        args["num_heads"] = _pick_heads(args["embed_dim"], default_heads)
    return build_model_with_cfg(KernelViT, variant, pretrained=False, attention=kind, **args)


_DOCS = {
    "scaled_s": "Scaled Attention S: v <- (I - S) v, S a learned heads x N x N matrix (tied to the input size).",
    "scaled_alpha": "Scaled Attention alpha x Asym: v <- (I - s softmax(K K^T / sqrt d)) v, s a learned scalar.",
    "kpca": "KPCA ViT (official Reconstruction model): q and k standardized per head before softmax.",
}


def _builder(kind: str, size: str) -> Any:
    variant = f"{_PREFIX[kind]}_{size}_patch16_224"

    def build(pretrained: bool = False, **kwargs: Any) -> KernelViT:
        return _create(variant, kind, size, pretrained, **kwargs)

    build.__name__ = build.__qualname__ = variant
    build.__doc__ = f"{size.capitalize()} (DeiT-{size} config): {_DOCS[kind]}"
    build.__module__ = __name__
    return build


for _kind in KINDS:
    for _size in ("tiny", "small", "base"):
        _fn = _builder(_kind, _size)
        _attention = "scaled" if _kind.startswith("scaled") else "kpca"
        globals()[_fn.__name__] = register(KINDS[_kind][0], _attention, f"{_size}: {_DOCS[_kind]}")(_fn)
