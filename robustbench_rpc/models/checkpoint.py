"""Reading checkpoints safely, in the layouts that the official code and timm write, and reporting key mismatches."""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_rpc.errors import UserError

#: Keys under which training scripts store weights (DeiT / KPCA: ``model``; timm's saver: ``state_dict``).
WEIGHT_KEYS = ("model", "state_dict", "module", "net", "weights")
#: Keys under which EMA weights are stored.
EMA_KEYS = ("model_ema", "state_dict_ema", "ema")
#: Prefixes that wrappers add to parameter names (DataParallel / DDP, torch.compile).
STRIP_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """The weights found in a checkpoint file plus what else it told us."""

    path: Path
    sha256: str
    state_dict: dict[str, Tensor]
    ema_state_dict: dict[str, Tensor] | None = None
    layout: str = "flat state dict"
    meta: dict[str, Any] = field(default_factory=dict)

    def weights(self, use_ema: bool = False) -> dict[str, Tensor]:
        """Return the main weights, or the EMA weights when ``use_ema`` (an error if there are none)."""
        if not use_ema:
            return self.state_dict
        if self.ema_state_dict is None:
            raise UserError(f"Checkpoint {self.path} has no EMA weights (looked for {', '.join(EMA_KEYS)}).")
        return self.ema_state_dict


#: A global that safe unpickling refused, in torch's older ("Unsupported global: GLOBAL x.y") and current
#: ("Trying to load unsupported GLOBAL x.y whose module x is blocked") wordings.
_BLOCKED_GLOBAL = re.compile(r"unsupported (?:global:\s+)?GLOBAL\s+([\w.]+)", re.IGNORECASE)

def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """Return a 16-hex-digit SHA-256 of a model's state dict (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(data.shape)}|{data.dtype}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")  # 0-dim too
    return digest.hexdigest()[:16]


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` prefixes (repeatedly, in any order) from every key."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    return out


def _torch_load(path: Path, trust: bool) -> Any:
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path, trust: bool = False) -> Checkpoint:
    """Read a checkpoint file (``.pth``/``.pth.tar``/``.pt``/``.bin`` or ``.safetensors``) into a :class:`Checkpoint`.

    Loading is safe by default (``weights_only=True``, ``argparse.Namespace`` allow-listed); a file that needs
    arbitrary unpickling is refused unless ``trust`` is set.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"Checkpoint file {path} does not exist.")
    if path.is_dir():
        raise UserError(f"Checkpoint path {path} is a directory; expected a .pth, .pth.tar, .pt or .safetensors file.")
    digest = sha256_of(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device="cpu")
            with safe_open(str(path), "pt") as handle:
                metadata = dict(handle.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable safetensors file ({exc}).") from None
        return Checkpoint(path, digest, strip_prefixes(tensors), layout="safetensors", meta=metadata)
    try:
        obj = _torch_load(path, trust)
    except pickle.UnpicklingError as exc:
        found = _BLOCKED_GLOBAL.search(str(exc))
        if found:
            raise UserError(
                f"Checkpoint {path} needs arbitrary unpickling to load (it pickles {found.group(1)}); pass "
                "--trust-checkpoint (trust=True) only if you trust its source."
            ) from None
        if re.search(r"unsupported (class|type|global)", str(exc), re.IGNORECASE):
            raise UserError(
                f"Checkpoint {path} holds objects that safe loading refuses; pass --trust-checkpoint "
                "(trust=True) only if you trust its source."
            ) from None
        raise UserError(f"{path} is not a PyTorch checkpoint (it could not be unpickled).") from None
    except Exception as exc:  # torch.load signals a foreign or damaged file with many exception types
        raise UserError(
            f"{path} is not a PyTorch checkpoint that torch.load can read ({type(exc).__name__}: {exc})."
        ) from None
    return unwrap_checkpoint(obj, path, digest)


def unwrap_checkpoint(obj: Any, path: Path, digest: str) -> Checkpoint:
    """Find the weights (and EMA weights, and training metadata) inside a loaded checkpoint object."""
    if _is_tensor_dict(obj):
        return Checkpoint(path, digest, strip_prefixes(obj), layout="flat state dict")
    if not isinstance(obj, Mapping):
        raise UserError(
            f"{path} holds a {type(obj).__name__}, not a state dict or a training checkpoint dict; "
            "save model.state_dict() instead of the model object."
        )
    meta: dict[str, Any] = {}
    for key in ("epoch", "arch", "version", "metric"):
        if key in obj and isinstance(obj[key], (int, float, str)):
            meta[key] = obj[key]
    if isinstance(obj.get("args"), argparse.Namespace):
        meta["args"] = vars(obj["args"])
    elif isinstance(obj.get("args"), Mapping):
        meta["args"] = dict(obj["args"])
    weights_key = next((k for k in WEIGHT_KEYS if _is_tensor_dict(obj.get(k))), None)
    if weights_key is None:
        found = ", ".join(sorted(str(k) for k in obj)[:12])
        raise UserError(
            f"{path} has no weights under any of {', '.join(WEIGHT_KEYS)} (top-level keys: {found})."
        )
    ema_key = next((k for k in EMA_KEYS if _is_tensor_dict(obj.get(k))), None)
    ema = strip_prefixes(obj[ema_key]) if ema_key else None
    layout = f"training checkpoint dict, weights under '{weights_key}'"
    if ema_key:
        layout += f", EMA under '{ema_key}'"
    return Checkpoint(path, digest, strip_prefixes(obj[weights_key]), ema, layout, meta)


@dataclass
class KeyReport:
    """The differences between a model's state dict and a checkpoint's."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        """True when every key matches in name and shape."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 6) -> str:
        """Return a compact multi-part description of the mismatch."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_head(self.missing, limit)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_head(self.unexpected, limit)})")
        if self.mismatched:
            shown = [f"{k}: checkpoint {list(c)} vs model {list(m)}" for k, c, m in self.mismatched[:limit]]
            more = f", +{len(self.mismatched) - limit} more" if len(self.mismatched) > limit else ""
            parts.append(f"{len(self.mismatched)} with other shapes ({'; '.join(shown)}{more})")
        return "; ".join(parts) if parts else "all keys match"


def _head(items: list[str], limit: int) -> str:
    more = f", +{len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def compare_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> KeyReport:
    """Compare names and shapes of ``state_dict`` with ``model.state_dict()``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    return KeyReport(missing, unexpected, mismatched)


def guess_family(state_dict: Mapping[str, Tensor]) -> str | None:
    """Guess which model family wrote ``state_dict`` from its key names and shapes.

    Returns one of ``symvit``, ``vit`` (timm ViT/DeiT, or the KPCA ViT: same keys), ``scaled_s``,
    ``scaled_alpha`` (Scaled Attention, by the shape of ``attn.s``), ``fan``, ``fan_hybrid``, ``rpc_fan``,
    ``rpc_fan_hybrid`` or None.
    """
    keys = set(state_dict)
    scaled = state_dict.get("blocks.0.attn.s")
    if scaled is not None and "blocks.0.attn.qkv.weight" in keys:
        return "scaled_s" if scaled.ndim == 3 else "scaled_alpha"
    if "blocks.0.attn.qkv.weight" in keys:
        w = state_dict["blocks.0.attn.qkv.weight"]
        if w.ndim == 2 and w.shape[0] == 2 * w.shape[1]:
            return "symvit"
        if w.ndim == 2 and w.shape[0] == 3 * w.shape[1]:
            return "vit"
    if any(k.startswith("cls_attn_blocks.") for k in keys):
        hybrid = any(k.startswith("patch_embed.backbone.") for k in keys)
        if "blocks.0.attn.q.weight" in keys:
            return "fan_hybrid" if hybrid else "fan"
        if "blocks.0.attn.kv.weight" in keys:
            return "rpc_fan_hybrid" if hybrid else "rpc_fan"
    return None


#: For each family that ``guess_family`` returns, an example model name to suggest.
FAMILY_EXAMPLES = {
    "symvit": "symvit_tiny_patch16_224 or rpc_symvit_tiny_patch16_224",
    "vit": "a timm ViT/DeiT such as deit_tiny_patch16_224, or kpca_vit_tiny_patch16_224",
    "scaled_s": "scaled_vit_tiny_patch16_224 (or another scaled_vit_*)",
    "scaled_alpha": "scaled_alpha_vit_tiny_patch16_224 (or another scaled_alpha_vit_*)",
    "fan": "fan_tiny_12_p16_224 (or another fan_*_p16_224)",
    "fan_hybrid": "fan_tiny_8_p4_hybrid (or another fan_*_hybrid)",
    "rpc_fan": "rpc_fan_tiny_12_p16_224 or symfan_tiny_12_p16_224",
    "rpc_fan_hybrid": "rpc_fan_tiny_8_p4_hybrid or symfan_tiny_8_p4_hybrid",
}


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], model_name: str, source: str) -> None:
    """Load ``state_dict`` strictly into ``model``; on any mismatch raise one :class:`UserError` with a report."""
    report = compare_keys(model, state_dict)
    if not report.ok:
        family = guess_family(state_dict)
        lead = f"Checkpoint {source} does not fit model {model_name}"
        if family is not None:
            lead += f"; it looks like a {family} checkpoint: try {FAMILY_EXAMPLES[family]}"
        raise UserError(f"{lead}. Key report: {report.summary()}.")
    model.load_state_dict(dict(state_dict), strict=True)
