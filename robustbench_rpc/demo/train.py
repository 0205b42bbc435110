"""Deterministic training of the demo's tiny SymViT / RPC-SymViT on the digits training split.

The shipped checkpoints (``robustbench_rpc/assets/checkpoints``) were made by :func:`train_digits_model` with the
defaults below; ``robustbench-rpc demo train`` reruns it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustbench_rpc.data.digits import DigitsSplit, load_digits_split
from robustbench_rpc.models.shipped import ASSET_DIR

#: The two shipped models: name -> (registered architecture, file name).
SHIPPED = {
    "symvit": ("symvit_digits_patch8_32", "symvit_digits.safetensors"),
    "rpc_symvit": ("rpc_symvit_digits_patch8_32", "rpc_symvit_digits.safetensors"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the demo training run."""

    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    max_shift: int = 2  # random translation in pixels (augmentation)
    label_smoothing: float = 0.1
    seed: int = 0
    threads: int = 1  # tiny model: one thread is faster than two (thread overhead dominates)


def embedded_checkpoint(kind: str) -> Path:
    """Return the path of a shipped demo checkpoint (``symvit`` or ``rpc_symvit``)."""
    return ASSET_DIR / SHIPPED[kind][1]


def _shift(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random integer offset (zero padding), deterministic given ``gen``."""
    if max_shift <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    out = torch.empty_like(images)
    for i in range(b):
        out[i] = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


@torch.no_grad()
def accuracy(model: torch.nn.Module, split: DigitsSplit, batch_size: int = 256) -> float:
    """Return top-1 accuracy (%) of a pixel-space model on a digits split."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        logits = model(split.images[start : start + batch_size])
        correct += int((logits.argmax(1) == split.labels[start : start + batch_size]).sum())
    return 100.0 * correct / len(split)


def train_digits_model(
    kind: str,
    config: TrainConfig = TrainConfig(),
    log: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the demo model ``kind`` (``symvit`` or ``rpc_symvit``) from scratch; return the model and a summary."""
    from robustbench_rpc.models.wrapper import load_model

    torch.manual_seed(config.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        arch = SHIPPED[kind][0]
        model = load_model(arch, shipped_weights=False)  # from scratch, not from the shipped weights
        train, test = load_digits_split("train"), load_digits_split("test")
        gen = torch.Generator().manual_seed(config.seed)
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        steps_per_epoch = math.ceil(len(train) / config.batch_size)
        total = config.epochs * steps_per_epoch
        warmup = config.warmup_epochs * steps_per_epoch

        def lr_at(step: int) -> float:
            if step < warmup:
                return config.lr * (step + 1) / warmup
            return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

        step = 0
        start = time.perf_counter()
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(len(train), generator=gen)
            running = 0.0
            for b in range(steps_per_epoch):
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                images = _shift(train.images[idx], config.max_shift, gen)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                loss = F.cross_entropy(model(images), train.labels[idx], label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach())
                step += 1
            if log is not None and (epoch + 1) % 5 == 0:
                log(f"{kind} epoch {epoch + 1}/{config.epochs}: loss {running / steps_per_epoch:.3f}, "
                    f"test top-1 {accuracy(model, test):.2f}%")
        model.eval()
        summary = {
            "model": arch,
            "kind": kind,
            "train_samples": len(train),
            "test_samples": len(test),
            "test_top1": accuracy(model, test),
            "train_top1": accuracy(model, train),
            "seconds": time.perf_counter() - start,
            "config": asdict(config),
        }
        return model, summary
    finally:
        torch.set_num_threads(previous_threads)


def model_config_metadata(model: torch.nn.Module, name: str) -> dict[str, str]:
    """Return the model-config metadata of a (wrapped) SymViT: its name, heads and RPC options."""
    from robustbench_rpc.models.recipe import model_metadata

    inner = getattr(model, "model", model)
    rpc = getattr(inner, "rpc", None)
    options = None
    if rpc is not None:
        layers = rpc.layers if isinstance(rpc.layers, str) else list(rpc.layers)
        options = {"rpc_iters": rpc.iters, "rpc_lambda": rpc.lam, "rpc_layers": layers, "rpc_threshold": rpc.threshold}
    return model_metadata(name, inner.blocks[0].attn.num_heads, options, embed_dim=inner.embed_dim,
                          depth=len(inner.blocks))


def save_demo_checkpoint(model: torch.nn.Module, path: Path, summary: dict[str, Any]) -> None:
    """Write the inner model's weights as ``.safetensors`` with the training summary and the model config
    (name, heads, RPC options: :data:`robustbench_rpc.models.recipe.METADATA_KEY`) as metadata."""
    import json

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    metadata = {"summary": json.dumps(summary), **model_config_metadata(model, summary["model"])}
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)
