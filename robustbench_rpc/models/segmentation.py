"""Segmentation models that take pixels in [0, 1]: Segmenters with SymViT, RPC-SymViT or timm ViT encoders.

:func:`load_segmentation_model` builds one by name (``segmenter_{symvit,rpc_symvit,vit}_{tiny,small,base}_{mask,
linear}`` and the demo's shipped ``segmenter_symvit_digits`` / ``segmenter_rpc_symvit_digits``) and loads

- a Segmenter-format checkpoint (the public code's ``checkpoint.pth`` holding ``{"model": state_dict, ...}``
  with its ``variant.yml`` in the same folder): the architecture (``net_kwargs``), the normalization
  (``dataset_kwargs.normalization``: ``vit`` is mean = std = 0.5, ``deit`` ImageNet's) and the evaluation's
  window (``crop_size``) and stride (``crop_size - 32``, the defaults of Segmenter's ``eval/miou.py``) come from
  the variant; a standard ViT encoder (``qkv`` of ``[3D, D]``) loads into a timm ViT, a symmetric one
  (``[2D, D]``, keys then values) into SymViT;
- or this package's ``.safetensors`` (the build config in the metadata under :data:`CONFIG_KEY`).

Without a checkpoint a name builds its size's defaults (tiny / small / base: patch 16, 512-pixel window, stride
480, 150 classes; SymViT encoders normalize as DeiT, timm ViTs as ViT; the digit-scenes size: 64 wide, 4 blocks,
4 heads, patch 8, one 64-pixel window, 11 classes, ViT normalization). Segmenter's encoder LayerNorms use
``nn.LayerNorm``'s default eps 1e-5 (not DeiT's 1e-6): every encoder built here does the same.

Inference follows Segmenter's evaluation: an image whose shorter side is below the window is upsampled
(bilinear) so that it equals the window, windows of ``window`` pixels at ``stride`` go through the
network, the logits of overlapping windows are averaged and resized back to the input. The forward returns those
logits (their softmax is Segmenter's prediction; the argmax is the same).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.models.segmenter import LinearDecoder, MaskTransformerDecoder, Segmenter, window_anchors
from robustbench_rpc.models.shipped import ASSET_DIR

#: Segmenter's normalizations (``dataset_kwargs.normalization``).
NORMALIZATIONS = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "deit": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: The safetensors metadata key holding a segmentation checkpoint's build config (JSON).
CONFIG_KEY = "robustbench_rpc_segmenter"
#: Segmenter's encoder LayerNorm eps (``nn.LayerNorm``'s default).
SEGMENTER_LN_EPS = 1e-5
RPC_OPTIONS = ("rpc_iters", "rpc_lambda", "rpc_layers", "rpc_threshold")
#: Encoder sizes: width, depth, heads, patch, MLP ratio, window (the training crop) and default class count.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 192, "n_layers": 12, "n_heads": 3, "patch_size": 16, "mlp_ratio": 4.0, "window": 512,
             "n_cls": 150},
    "small": {"d_model": 384, "n_layers": 12, "n_heads": 6, "patch_size": 16, "mlp_ratio": 4.0, "window": 512,
              "n_cls": 150},
    "base": {"d_model": 768, "n_layers": 12, "n_heads": 12, "patch_size": 16, "mlp_ratio": 4.0, "window": 512,
             "n_cls": 150},
    # the digit-scenes demo: 64 x 64 scenes (one window), 11 classes (background and the ten digits)
    "digits": {"d_model": 64, "n_layers": 4, "n_heads": 4, "patch_size": 8, "mlp_ratio": 2.0, "window": 64,
               "n_cls": 11},
}
ENCODER_LABELS = {"symvit": "SymViT", "rpc_symvit": "RPC-SymViT", "vit": "timm ViT"}


@dataclass(frozen=True)
class SegmentationEntry:
    """One registered segmentation model name: encoder kind, size, decoder, and its shipped weights (if any)."""

    name: str
    encoder: str
    size: str
    decoder: str
    shipped: str | None = None

    @property
    def description(self) -> str:
        """One line for ``models list``."""
        dec = "mask-transformer" if self.decoder == "mask" else "linear"
        text = f"Segmenter: {ENCODER_LABELS[self.encoder]}-{self.size} encoder, {dec} decoder"
        return text + (" (shipped, trained on digit-scenes)" if self.shipped else "")


def _entries() -> dict[str, SegmentationEntry]:
    out: dict[str, SegmentationEntry] = {}
    for enc in ("symvit", "rpc_symvit", "vit"):
        for size in ("tiny", "small", "base"):
            for dec in ("mask", "linear"):
                name = f"segmenter_{enc}_{size}_{dec}"
                out[name] = SegmentationEntry(name, enc, size, dec)
    for enc in ("symvit", "rpc_symvit"):
        name = f"segmenter_{enc}_digits"
        out[name] = SegmentationEntry(name, enc, "digits", "mask", f"{name}.safetensors")
    return out


#: Every registered segmentation model name -> its entry.
SEGMENTATION_MODELS: dict[str, SegmentationEntry] = _entries()


def is_segmentation_model(name: str) -> bool:
    """True when ``name`` is a segmentation model (a registered Segmenter name)."""
    return str(name) in SEGMENTATION_MODELS


def shipped_segmentation_checkpoint(name: str) -> Path | None:
    """Return the shipped checkpoint of segmentation model ``name``, or None when none is shipped."""
    entry = SEGMENTATION_MODELS.get(name)
    if entry is None or entry.shipped is None:
        return None
    path = ASSET_DIR / entry.shipped
    return path if path.is_file() else None


def _encoder(config: dict[str, Any], rpc_options: dict[str, Any]) -> nn.Module:
    """Build the encoder of ``config`` (no classification head, LayerNorm eps from the config)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    common = {"img_size": config["window"], "patch_size": config["patch_size"], "embed_dim": config["d_model"],
              "depth": config["n_layers"], "num_heads": config["n_heads"], "mlp_ratio": config["mlp_ratio"],
              "num_classes": 0}
    kind = config["encoder"]
    if kind == "vit":
        if rpc_options:
            raise UserError(f"The timm ViT encoder takes no {', '.join(sorted(rpc_options))}; use a "
                            "segmenter_rpc_symvit_* model for RPC attention.")
        encoder = VisionTransformer(**common, norm_layer=partial(nn.LayerNorm, eps=config["ln_eps"]))
    else:
        size = config["size"] if config["size"] in ("tiny", "small", "base", "digits") else "tiny"
        builder = f"{'rpc_' if kind == 'rpc_symvit' else ''}symvit_{size}_" + (
            "patch8_32" if size == "digits" else "patch16_224")
        encoder = timm.create_model(builder, **common, **rpc_options)
        for module in encoder.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = config["ln_eps"]
    return encoder


def build_segmenter(config: dict[str, Any], rpc_options: dict[str, Any] | None = None) -> Segmenter:
    """Build a randomly initialised :class:`~robustbench_rpc.models.segmenter.Segmenter` from a build config."""
    encoder = _encoder(config, dict(rpc_options or {}))
    d = config["d_model"]
    if config["decoder"] == "linear":
        decoder: nn.Module = LinearDecoder(config["n_cls"], d)
    else:  # Segmenter's factory: the mask transformer is as wide as the encoder, 64-wide heads, 4x MLP
        decoder = MaskTransformerDecoder(config["n_cls"], d, n_layers=config["decoder_layers"],
                                         n_heads=config.get("decoder_heads") or max(d // 64, 1), d_model=d,
                                         d_ff=4 * d)
    return Segmenter(encoder, decoder, config["n_cls"])


def _windowed_logits(net: nn.Module, x: Tensor, window: int, stride: int, batch_size: int) -> Tensor:
    """Average the logits of ``window``-pixel windows at ``stride`` (the last flush with the border)."""
    b, _, height, width = x.shape
    anchors = [(t, left) for t in window_anchors(height, window, stride)
               for left in window_anchors(width, window, stride)]
    if len(anchors) == 1:
        return net(x)
    logits: Tensor | None = None
    count = x.new_zeros((1, 1, height, width))
    per_call = max(1, batch_size // b)
    for start in range(0, len(anchors), per_call):
        chunk = anchors[start:start + per_call]
        out = net(torch.cat([x[:, :, t:t + window, left:left + window] for t, left in chunk]))
        if logits is None:
            logits = x.new_zeros((b, out.shape[1], height, width))
        for i, (t, left) in enumerate(chunk):
            pad = (left, width - left - window, t, height - t - window)
            logits = logits + F.pad(out[i * b:(i + 1) * b], pad)  # out of place: gradients flow to every window
            count[:, :, t:t + window, left:left + window] += 1
    assert logits is not None
    return logits / count


class SegmentationModel(nn.Module):
    """A Segmenter that takes pixels in [0, 1] and returns per-pixel logits ``[B, num_classes, H, W]``."""

    def __init__(self, segmenter: Segmenter, config: dict[str, Any], *, name: str,
                 options: dict[str, Any] | None = None, checkpoint: str | None = None,
                 checkpoint_sha256: str | None = None, window_batch: int = 8) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.config = dict(config)
        self.name = name
        self.options = dict(options or {})
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = checkpoint_sha256
        self.num_classes = int(config["n_cls"])
        self.window = int(config["window"])
        self.stride = int(config["stride"])
        self.window_batch = int(window_batch)
        #: The shorter side Segmenter's evaluation resizes images to before inference (None: as they come).
        self.image_size: int | None = config.get("image_size")
        mean, std = NORMALIZATIONS[config["normalization"]]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, x: Tensor) -> Tensor:
        """Map pixels in [0, 1] to the encoder's normalized input."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise UserError(f"{self.name} takes images of shape [B, 3, H, W], got {list(images.shape)}.")
        x = self.normalize(images)
        height, width = x.shape[-2:]
        if min(height, width) < self.window:  # Segmenter's resize: the shorter side up to the window
            scale = self.window / min(height, width)
            size = (max(self.window, int(height * scale)), max(self.window, int(width * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        logits = _windowed_logits(self.segmenter, x, self.window, self.stride, self.window_batch)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits

    def rpc_description(self) -> str:
        """Where PAP runs in the encoder, or 'off'."""
        return getattr(self.segmenter.encoder, "rpc_description", lambda: "off")()

    def identity(self) -> dict[str, Any]:
        """Return the model's provenance: name, options, checkpoint SHA-256, normalization, window, architecture."""
        mean, std = NORMALIZATIONS[self.config["normalization"]]
        return {
            "model": self.name,
            "task": "segmentation",
            "options": dict(self.options),
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "normalization": {"name": self.config["normalization"], "mean": list(mean), "std": list(std)},
            "window": self.window,
            "stride": self.stride,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "encoder": self.config["encoder"],
            "decoder": self.config["decoder"],
            "rpc": self.rpc_description(),
            "architecture": {k: self.config[k] for k in ("d_model", "n_layers", "n_heads", "patch_size",
                                                          "mlp_ratio", "decoder_layers", "ln_eps")},
            "num_params": sum(p.numel() for p in self.segmenter.parameters()),
        }


def default_config(entry: SegmentationEntry) -> dict[str, Any]:
    """Return the build config of a registered name without a checkpoint (the size's defaults)."""
    size = dict(SIZES[entry.size])
    return {"encoder": entry.encoder, "size": entry.size, "decoder": entry.decoder, "d_model": size["d_model"],
            "n_layers": size["n_layers"], "n_heads": size["n_heads"], "patch_size": size["patch_size"],
            "mlp_ratio": size["mlp_ratio"], "window": size["window"], "stride": _eval_stride(size["window"]),
            "n_cls": size["n_cls"], "decoder_layers": 2, "decoder_heads": None, "ln_eps": SEGMENTER_LN_EPS,
            "normalization": "vit" if entry.encoder == "vit" or entry.size == "digits" else "deit",
            "image_size": None}


def _eval_stride(window: int) -> int:
    """Segmenter's evaluation stride: ``crop_size - 32`` (the window itself for windows of 32 pixels or less)."""
    return window - 32 if window > 32 else window


def load_segmentation_model(name: str, checkpoint: str | None = None, *, num_classes: int | None = None,
                            trust_checkpoint: bool = False, shipped_weights: bool = True,
                            device: str | torch.device | None = None, **options: Any) -> SegmentationModel:
    """Build segmentation model ``name``, load ``checkpoint`` (Segmenter format or ours), wrap it for [0, 1] pixels.

    ``options`` are the encoder's (``rpc_iters``, ``rpc_lambda``, ``rpc_layers``, ``rpc_threshold`` as the
    classification models take them) and the inference's ``window`` / ``stride``; a shipped model (the digit-scenes
    Segmenters) loads its weights unless a checkpoint is given, ``num_classes`` is set, or ``shipped_weights`` is
    False (random initialisation, as for training).
    """
    from robustbench_rpc.models.segmentation_checkpoint import read_segmentation_checkpoint

    entry = SEGMENTATION_MODELS.get(name)
    if entry is None:
        raise UserError(f"Unknown segmentation model {name!r}{did_you_mean(name, list(SEGMENTATION_MODELS))}; "
                        "see `robustbench-rpc models list`.")
    options = dict(options)
    window = options.pop("window", None)
    stride = options.pop("stride", None)
    unknown = sorted(set(options) - set(RPC_OPTIONS))
    if unknown:
        raise UserError(f"{name} takes no option {', '.join(unknown)}; its options are "
                        f"{', '.join(RPC_OPTIONS + ('window', 'stride'))}.")
    rpc_options = {k: v for k, v in options.items() if v is not None}
    if entry.encoder == "symvit" and rpc_options:
        raise UserError(f"{name} uses plain symmetric attention and takes no {', '.join(sorted(rpc_options))}; use "
                        f"{name.replace('segmenter_symvit', 'segmenter_rpc_symvit')} for RPC attention (it loads "
                        "the same checkpoints).")
    if checkpoint is None and shipped_weights and num_classes is None:
        shipped = shipped_segmentation_checkpoint(name)
        checkpoint = str(shipped) if shipped is not None else None
    config = default_config(entry)
    state_dict = None
    sha = None
    if checkpoint is not None:
        loaded = read_segmentation_checkpoint(checkpoint, entry, trust=trust_checkpoint)
        config.update(loaded.config)
        state_dict, sha, checkpoint = loaded.state_dict, loaded.sha256, str(loaded.path)
        if entry.encoder == "rpc_symvit":  # PAP settings recorded by our checkpoints fill in those not given
            rpc_options = {**loaded.rpc, **rpc_options}
        if num_classes is not None and num_classes != config["n_cls"]:
            raise UserError(f"Checkpoint {checkpoint} segments {config['n_cls']} classes but {num_classes} were "
                            "asked for (--num-classes); drop the option to follow the checkpoint.")
    elif num_classes is not None:
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}.")
        config["n_cls"] = int(num_classes)
    if window is not None:
        config["window"] = int(window)
        if state_dict is not None and int(window) != int(loaded.config.get("window", window)):
            raise UserError(f"{name} was trained on {loaded.config['window']}-pixel crops; its window cannot be "
                            f"changed to {window} (the position embeddings are fixed).")
        config["stride"] = _eval_stride(int(window)) if stride is None else int(stride)
    if stride is not None:
        config["stride"] = int(stride)
    if not 0 < config["stride"] <= config["window"]:
        raise UserError(f"The inference stride must be in 1..{config['window']} (the window), got {config['stride']}.")
    if config["window"] % config["patch_size"]:
        raise UserError(f"The window {config['window']} is not a multiple of the patch size {config['patch_size']}.")
    segmenter = build_segmenter(config, rpc_options)
    if state_dict is not None:
        from robustbench_rpc.models.checkpoint import load_weights

        load_weights(segmenter, state_dict, name, str(checkpoint))
    model = SegmentationModel(segmenter, config, name=name, options={**rpc_options, **(
        {"window": window} if window is not None else {}), **({"stride": stride} if stride is not None else {})},
        checkpoint=checkpoint, checkpoint_sha256=sha)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def config_metadata(model: SegmentationModel, summary: dict[str, Any] | None = None) -> dict[str, str]:
    """Return the safetensors metadata this package writes with a segmentation checkpoint (config, PAP, summary).

    One key only: safetensors writes a metadata mapping in no fixed order, so one key keeps the file's bytes a
    function of its contents.
    """
    rpc = getattr(model.segmenter.encoder, "rpc", None)
    options = None
    if rpc is not None:
        layers = rpc.layers if isinstance(rpc.layers, str) else list(rpc.layers)
        options = {"rpc_iters": rpc.iters, "rpc_lambda": rpc.lam, "rpc_layers": layers, "rpc_threshold": rpc.threshold}
    record = {"name": model.name, "config": model.config, "rpc": options, "summary": summary}
    return {CONFIG_KEY: json.dumps(record, sort_keys=True)}


def segmentation_params(name: str) -> int:
    """Return the parameter count of segmentation model ``name`` with its default config (built on the meta device)."""
    entry = SEGMENTATION_MODELS[name]
    with torch.device("meta"):
        segmenter = build_segmenter(default_config(entry))
    return sum(p.numel() for p in segmenter.parameters())
