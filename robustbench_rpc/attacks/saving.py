"""``--save-adv``: keep adversarial examples as safetensors files, and PNGs for the first few samples."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from robustbench_rpc.attacks.runner import AttackBatchResult


def _to_png(image: Tensor, path: Path) -> None:
    """Write a [C, H, W] image in [0, 1] (clamped) as an 8-bit PNG."""
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    Image.fromarray(array).save(path)


def save_adversarial(
    directory: str | os.PathLike[str],
    result: AttackBatchResult,
    images: Tensor,
    labels: Tensor,
    *,
    index_offset: int = 0,
    sample_ids: Sequence[str] | None = None,
    n_png: int = 8,
) -> Path:
    """Save one attacked batch under ``directory`` and return the tensor file's path.

    Writes ``adv-<index_offset>.safetensors`` (float32 ``adv``, ``labels``, ``index``, ``clean_pred``, ``adv_pred``;
    metadata: the spec and sample ids) atomically, and for samples whose dataset index is below ``n_png`` the PNGs
    ``png/<index>_clean.png``, ``png/<index>_adv.png`` and ``png/<index>_delta.png`` (perturbation scaled to fill
    [0, 1] around grey).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    n = len(images)
    index = torch.arange(index_offset, index_offset + n, dtype=torch.long)
    tensors = {
        "adv": result.adv.detach().float().cpu().contiguous(),
        "labels": labels.detach().long().cpu().contiguous(),
        "index": index,
        "clean_pred": result.clean_logits.argmax(1).long().cpu().contiguous(),
        "adv_pred": result.adv_logits.argmax(1).long().cpu().contiguous(),
    }
    ids = [str(s) for s in sample_ids] if sample_ids is not None else [str(int(i)) for i in index]
    metadata = {
        "spec": json.dumps(result.spec.to_params(result.compat or False), sort_keys=True),
        "sample_ids": json.dumps(ids),
    }
    path = directory / f"adv-{index_offset:08d}.safetensors"
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    if n_png > 0 and index_offset < n_png:
        png_dir = directory / "png"
        png_dir.mkdir(exist_ok=True)
        for i in range(min(n, n_png - index_offset)):
            k = index_offset + i
            clean, adv = images[i].detach().cpu(), result.adv[i].detach().cpu()
            delta = adv - clean
            scale = float(delta.abs().max()) or 1.0
            _to_png(clean, png_dir / f"{k:06d}_clean.png")
            _to_png(adv, png_dir / f"{k:06d}_adv.png")
            _to_png(0.5 + delta / (2 * scale), png_dir / f"{k:06d}_delta.png")
    return path


def load_adversarial(directory: str | os.PathLike[str]) -> dict[str, object]:
    """Load every ``adv-*.safetensors`` under ``directory``, concatenated in index order, with the sample ids."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("adv-*.safetensors"))
    parts: dict[str, list[Tensor]] = {}
    ids: list[str] = []
    spec = None
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            meta = handle.metadata() or {}
            ids.extend(json.loads(meta.get("sample_ids", "[]")))
            spec = json.loads(meta["spec"]) if "spec" in meta else spec
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                parts.setdefault(key, []).append(handle.get_tensor(key))
    out: dict[str, object] = {k: torch.cat(v) for k, v in parts.items()}
    out["sample_ids"] = ids
    out["spec"] = spec
    return out
