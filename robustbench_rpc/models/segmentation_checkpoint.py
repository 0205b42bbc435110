"""Reading segmentation checkpoints: Segmenter's ``checkpoint.pth`` + ``variant.yml``, or this package's safetensors.

A Segmenter checkpoint holds ``{"model": state_dict, "optimizer": ..., "epoch": ...}`` (read safely, with
``weights_only``; ``--trust-checkpoint`` for files that need more); its ``variant.yml`` (written by Segmenter's
``train.py``) gives ``net_kwargs`` (``backbone``, ``d_model``, ``n_heads``, ``n_layers``, ``patch_size``,
``image_size``, ``n_cls``, ``decoder``) and ``dataset_kwargs`` (``normalization``, ``crop_size``, ``image_size``).
Width, depth, patch, MLP ratio, window, classes and the decoder are read off the weights and must agree with the
variant; the heads, the normalization and the evaluation's window / stride come from the variant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from robustbench_rpc.errors import UserError
from robustbench_rpc.models.segmentation import (
    CONFIG_KEY,
    NORMALIZATIONS,
    SEGMENTATION_MODELS,
    SegmentationEntry,
)


@dataclass
class LoadedSegmenter:
    """A segmentation checkpoint's weights (Segmenter names), its build config and recorded PAP options."""

    path: Path
    sha256: str
    state_dict: dict[str, Tensor]
    config: dict[str, Any]
    rpc: dict[str, Any] = field(default_factory=dict)


def _yaml_load(path: Path) -> dict[str, Any]:
    """Read a ``variant.yml`` safely (Segmenter's ``yaml.dump`` writes tuples as ``!!python/tuple``)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a readable variant.yml ({type(exc).__name__}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("net_kwargs"), dict):
        raise UserError(f"{path} has no net_kwargs mapping; expected the variant.yml that Segmenter's train.py writes.")
    return data


def _count(state_dict: dict[str, Tensor], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def weights_config(state_dict: dict[str, Tensor], source: str) -> dict[str, Any]:
    """Read the encoder kind, width, depth, patch, MLP ratio, window, decoder and classes off Segmenter weights."""
    proj = state_dict.get("encoder.patch_embed.proj.weight")
    qkv = state_dict.get("encoder.blocks.0.attn.qkv.weight")
    pos = state_dict.get("encoder.pos_embed")
    if proj is None or qkv is None or pos is None:
        raise UserError(f"Checkpoint {source} has no encoder.patch_embed.proj / encoder.blocks.0.attn.qkv / "
                        "encoder.pos_embed weights; expected a Segmenter checkpoint with a ViT encoder.")
    if "encoder.dist_token" in state_dict:
        raise UserError(f"Checkpoint {source} has a distilled DeiT encoder (encoder.dist_token), which this package's "
                        "Segmenters do not build; use a checkpoint with a ViT, SymViT or RPC-SymViT encoder.")
    d = int(proj.shape[0])
    patch = int(proj.shape[-1])
    side = math.isqrt(int(pos.shape[1]) - 1)
    if side * side != int(pos.shape[1]) - 1:
        raise UserError(f"Checkpoint {source} has {int(pos.shape[1]) - 1} position embeddings, not a square grid.")
    kind = {2 * d: "symmetric", 3 * d: "standard"}.get(int(qkv.shape[0]))
    if kind is None:
        raise UserError(f"Checkpoint {source} has a qkv of {list(qkv.shape)}, neither [2D, D] (SymViT) nor [3D, D] "
                        f"(ViT) for width {d}.")
    config: dict[str, Any] = {"attention": kind, "d_model": d, "patch_size": patch, "window": side * patch,
                              "n_layers": _count(state_dict, "encoder.blocks."),
                              "mlp_ratio": state_dict["encoder.blocks.0.mlp.fc1.weight"].shape[0] / d}
    if "decoder.head.weight" in state_dict:
        config.update(decoder="linear", n_cls=int(state_dict["decoder.head.weight"].shape[0]), decoder_layers=2)
    elif "decoder.cls_emb" in state_dict:
        config.update(decoder="mask", n_cls=int(state_dict["decoder.cls_emb"].shape[1]),
                      decoder_layers=_count(state_dict, "decoder.blocks."))
    else:
        raise UserError(f"Checkpoint {source} has neither decoder.head (linear) nor decoder.cls_emb (mask transformer) "
                        "weights; expected a Segmenter checkpoint.")
    return config


def _variant_config(variant: dict[str, Any], source: Path) -> dict[str, Any]:
    """Take the heads, normalization, window, stride and evaluation image size from a Segmenter variant."""
    net = variant["net_kwargs"]
    data = variant.get("dataset_kwargs") if isinstance(variant.get("dataset_kwargs"), dict) else {}
    out: dict[str, Any] = {}
    if net.get("n_heads") is not None:
        out["n_heads"] = int(net["n_heads"])
    norm = data.get("normalization", net.get("normalization"))
    if norm is not None:
        if norm not in NORMALIZATIONS:
            raise UserError(f"{source} names normalization {norm!r}; expected one of {', '.join(NORMALIZATIONS)}.")
        out["normalization"] = norm
    crop = data.get("crop_size")
    if crop is None and net.get("image_size") is not None:
        size = net["image_size"]
        crop = size[0] if isinstance(size, (list, tuple)) else size
    if crop is not None:  # Segmenter's eval/miou.py: window = crop_size, stride = crop_size - 32
        out["window"] = int(crop)
        out["stride"] = int(crop) - 32 if int(crop) > 32 else int(crop)
    if data.get("image_size") is not None:
        out["image_size"] = int(data["image_size"])
    decoder = net.get("decoder") if isinstance(net.get("decoder"), dict) else {}
    if decoder.get("name") is not None:
        out["variant_decoder"] = "mask" if decoder["name"] == "mask_transformer" else "linear"
    for key in ("d_model", "n_layers", "patch_size", "n_cls"):
        if net.get(key) is not None:
            out[f"variant_{key}"] = int(net[key])
    return out


def _suggest(entry: SegmentationEntry, encoder: str | None = None, decoder: str | None = None) -> str:
    name = f"segmenter_{encoder or entry.encoder}_{entry.size}_{decoder or entry.decoder}"
    if name not in SEGMENTATION_MODELS:
        name = f"segmenter_{encoder or entry.encoder}_tiny_{decoder or entry.decoder}"
    return name


def _classification_error(state_dict: dict[str, Tensor], source: Path, entry: SegmentationEntry) -> UserError:
    head = state_dict.get("head.weight")
    what = f"a head.weight of {list(head.shape)}" if head is not None else "no encoder.* weights"
    return UserError(f"Checkpoint {source} is a classification checkpoint ({what} and no decoder.* weights), not a "
                     f"Segmenter checkpoint; {entry.name} needs Segmenter weights (encoder.* and decoder.*, e.g. "
                     "Segmenter's checkpoint.pth with its variant.yml).")


def read_segmentation_checkpoint(path: str | Path, entry: SegmentationEntry, trust: bool = False) -> LoadedSegmenter:
    """Read a segmentation checkpoint (a file, or a Segmenter log folder holding ``checkpoint.pth``) for ``entry``."""
    from robustbench_rpc.models.checkpoint import read_checkpoint

    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "checkpoint.pth").is_file():
            raise UserError(f"Folder {path} has no checkpoint.pth; expected a Segmenter log folder or a checkpoint.")
        path = path / "checkpoint.pth"
    ckpt = read_checkpoint(path, trust=trust)
    state = ckpt.state_dict
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        raise _classification_error(state, ckpt.path, entry)
    found = weights_config(state, str(ckpt.path))
    config: dict[str, Any] = {k: found[k] for k in ("d_model", "patch_size", "window", "n_layers", "mlp_ratio",
                                                    "decoder", "n_cls", "decoder_layers")}
    config["stride"] = found["window"] - 32 if found["window"] > 32 else found["window"]
    rpc: dict[str, Any] = {}
    ours = ckpt.meta.get(CONFIG_KEY)
    if isinstance(ours, str):
        recorded = json.loads(ours)
        saved = dict(recorded.get("config") or {})
        for key in ("n_heads", "normalization", "window", "stride", "image_size", "ln_eps", "decoder_heads"):
            if key in saved:
                config[key] = saved[key]
        rpc = dict(recorded.get("rpc") or {})
        if isinstance(rpc.get("rpc_layers"), list):
            rpc["rpc_layers"] = tuple(rpc["rpc_layers"])
    else:
        variant_path = ckpt.path.parent / "variant.yml"
        if not variant_path.is_file():
            raise UserError(f"Segmenter checkpoint {ckpt.path} has no variant.yml beside it; Segmenter's train.py "
                            "writes one (its net_kwargs give the heads, dataset_kwargs the normalization and crop).")
        variant = _variant_config(_yaml_load(variant_path), variant_path)
        for key in ("d_model", "n_layers", "patch_size", "n_cls"):
            recorded_value = variant.pop(f"variant_{key}", None)
            if recorded_value is not None and recorded_value != config[key]:
                raise UserError(f"{variant_path} says {key}={recorded_value} but the weights of {ckpt.path} have "
                                f"{key}={config[key]}; the two files do not belong together.")
        recorded_decoder = variant.pop("variant_decoder", None)
        if recorded_decoder is not None and recorded_decoder != config["decoder"]:
            raise UserError(f"{variant_path} names a {recorded_decoder} decoder but {ckpt.path} holds "
                            f"{config['decoder']} decoder weights; the two files do not belong together.")
        if variant.get("window") is not None and variant["window"] != config["window"]:
            raise UserError(f"{variant_path} says crop_size={variant['window']} but the position embeddings of "
                            f"{ckpt.path} are for {config['window']}-pixel crops.")
        config.update(variant)
    if "n_heads" in config and config["d_model"] % int(config["n_heads"]):
        raise UserError(f"Checkpoint {ckpt.path} records {config['n_heads']} heads for width {config['d_model']}, "
                        "which they cannot split.")
    symmetric = found["attention"] == "symmetric"
    if symmetric and entry.encoder == "vit":
        raise UserError(f"Checkpoint {ckpt.path} has a symmetric encoder (qkv [2D, D]: keys then values), but "
                        f"{entry.name} has a timm ViT encoder; load it as {_suggest(entry, 'symvit')} or "
                        f"{_suggest(entry, 'rpc_symvit')}.")
    if not symmetric and entry.encoder != "vit":
        raise UserError(f"Checkpoint {ckpt.path} has a standard ViT encoder (qkv [3D, D]), but {entry.name} has a "
                        f"symmetric-attention encoder; load it as {_suggest(entry, 'vit')}.")
    if config["decoder"] != entry.decoder:
        raise UserError(f"Checkpoint {ckpt.path} holds a {config['decoder']} decoder, but {entry.name} has a "
                        f"{entry.decoder} decoder; load it as {_suggest(entry, decoder=config['decoder'])}.")
    weights = {k: v for k, v in state.items() if not k.startswith(("encoder.head.", "encoder.head_dist."))}
    return LoadedSegmenter(ckpt.path, ckpt.sha256, weights, config, rpc)
