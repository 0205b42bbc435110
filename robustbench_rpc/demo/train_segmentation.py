"""Deterministic training of the demo's tiny Segmenters (SymViT and RPC-SymViT encoders, mask-transformer decoder).

As Segmenter fine-tunes an ImageNet classifier, the encoder starts from the demo's shipped digits classifier
(``symvit_digits_patch8_32`` / ``rpc_symvit_digits_patch8_32``: same width, depth, heads and patches; its position
embeddings resampled from the 4 x 4 grid of 32-pixel digits to the 8 x 8 grid of 64-pixel scenes, its head
dropped); the decoder starts at random. They learn ``train_scenes`` scenes of the ``digit-scenes`` training split
(64 x 64, 11 classes; their digits are the classifier's training digits) on the CPU with one thread, so a rerun
of ``robustbench-rpc demo train --task segmentation`` rebuilds the shipped files in
``robustbench_rpc/assets/checkpoints`` bit for bit (the metadata holds the config and the test metrics, no
timings). Augmentation: a random translation of up to ``max_shift`` pixels, the image padded by replication and
the mask by the ignore index; the digits' pixels weigh ``foreground_weight`` times the background's in the loss.
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

from robustbench_rpc.metrics.segmentation import IGNORE_INDEX, class_areas, segmentation_metrics
from robustbench_rpc.models.segmentation import (
    SEGMENTATION_MODELS,
    SegmentationModel,
    config_metadata,
    load_segmentation_model,
)
from robustbench_rpc.models.shipped import ASSET_DIR

#: The shipped segmentation models: kind -> registered name (the file is ``NAME.safetensors``).
SHIPPED_SEGMENTERS = {"symvit": "segmenter_symvit_digits", "rpc_symvit": "segmenter_rpc_symvit_digits"}
#: The shipped digits classifiers whose weights the encoders start from.
CLASSIFIERS = {"symvit": "symvit_digits_patch8_32", "rpc_symvit": "rpc_symvit_digits_patch8_32"}


@dataclass(frozen=True)
class SegTrainConfig:
    """Hyper-parameters of the demo's segmentation training run."""

    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    max_shift: int = 4
    seed: int = 0
    foreground_weight: float = 3.0  # the digits' share of the loss against the background's (9 in 10 pixels)
    train_scenes: int = 800  # digit-scenes training scenes (scene i is the same whatever the number)
    pretrained_encoder: bool = True  # start the encoder from the shipped digits classifier
    threads: int = 1  # one thread: the same bits on every machine with the same torch build


def digit_scene_tensors(split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the images ``[N, 3, 64, 64]`` and masks ``[N, 64, 64]`` of a digit-scenes split (its default size)."""
    from robustbench_rpc.data.segmentation import digit_scenes_source

    source = digit_scenes_source(split, n=n)
    batches = list(source.batches(len(source)))
    return torch.cat([b.images for b in batches]), torch.cat([b.masks for b in batches]).long()


def _shift(images: torch.Tensor, masks: torch.Tensor, max_shift: int,
           gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate each scene by a random offset (image edge-replicated, mask padded with the ignore index)."""
    if max_shift <= 0:
        return images, masks
    b, _, h, w = images.shape
    pad = (max_shift,) * 4
    big = F.pad(images, pad, mode="replicate")
    big_masks = F.pad(masks, pad, value=IGNORE_INDEX)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    out_i, out_m = torch.empty_like(images), torch.empty_like(masks)
    for i in range(b):
        out_i[i] = big[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out_m[i] = big_masks[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out_i, out_m


@torch.no_grad()
def segmentation_scores(model: SegmentationModel, images: torch.Tensor, masks: torch.Tensor,
                        batch_size: int = 50) -> dict[str, float]:
    """Return aAcc, mIoU and mAcc (%) of ``model`` on images and masks (mmsegmentation's definitions)."""
    model.eval()
    areas = []
    for start in range(0, len(images), batch_size):
        pred = model(images[start:start + batch_size]).argmax(1)
        for p, m in zip(pred.numpy(), masks[start:start + batch_size].numpy(), strict=True):
            areas.append(class_areas(p, m, model.num_classes))
    metrics = segmentation_metrics(areas)
    return {k: round(float(metrics[k]), 4) for k in ("aAcc", "mIoU", "mAcc")}


def init_encoder_from_classifier(model: SegmentationModel, kind: str) -> str:
    """Load the shipped digits classifier of ``kind`` into the encoder (position embeddings resampled, no head)."""
    from timm.layers import resample_abs_pos_embed

    from robustbench_rpc.errors import UserError
    from robustbench_rpc.models.checkpoint import read_checkpoint
    from robustbench_rpc.models.shipped import shipped_checkpoint

    arch = CLASSIFIERS[kind]
    path = shipped_checkpoint(arch)
    if path is None:
        raise UserError(f"The shipped classifier {arch} is missing; run `robustbench-rpc demo train` first.")
    state = {k: v for k, v in read_checkpoint(path).state_dict.items() if not k.startswith("head.")}
    encoder = model.segmenter.encoder
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], new_size=list(encoder.patch_embed.grid_size),
                                                num_prefix_tokens=1)
    encoder.load_state_dict(state, strict=True)
    return str(path)


def train_digit_segmenter(kind: str, config: SegTrainConfig = SegTrainConfig(),
                          log: Callable[[str], None] | None = None) -> tuple[SegmentationModel, dict[str, Any]]:
    """Train the demo Segmenter ``kind`` (``symvit`` or ``rpc_symvit``) from scratch; return it and a summary."""
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        name = SHIPPED_SEGMENTERS[kind]
        torch.manual_seed(config.seed)
        model = load_segmentation_model(name, shipped_weights=False)
        if config.pretrained_encoder:
            init_encoder_from_classifier(model, kind)
        train_x, train_y = digit_scene_tensors("train", config.train_scenes)
        test_x, test_y = digit_scene_tensors("test")
        gen = torch.Generator().manual_seed(config.seed)
        weight = torch.full((model.num_classes,), float(config.foreground_weight))
        weight[0] = 1.0
        named = list(model.segmenter.named_parameters())
        no_decay = {"pos_embed", "cls_token", "cls_emb"}
        decay = [p for n, p in named if p.ndim > 1 and n.split(".")[-1] not in no_decay]
        rest = [p for n, p in named if not (p.ndim > 1 and n.split(".")[-1] not in no_decay)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                       {"params": rest, "weight_decay": 0.0}], lr=config.lr)
        per_epoch = math.ceil(len(train_x) / config.batch_size)
        total, warmup = config.epochs * per_epoch, config.warmup_epochs * per_epoch

        def lr_at(step: int) -> float:
            if step < warmup:
                return config.lr * (step + 1) / warmup
            return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

        step, start = 0, time.perf_counter()
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(len(train_x), generator=gen)
            running = 0.0
            for b in range(per_epoch):
                idx = order[b * config.batch_size:(b + 1) * config.batch_size]
                images, masks = _shift(train_x[idx], train_y[idx], config.max_shift, gen)
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                loss = F.cross_entropy(model(images), masks, weight=weight, ignore_index=IGNORE_INDEX)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += float(loss.detach())
                step += 1
            if log is not None and ((epoch + 1) % 10 == 0 or epoch == 0):
                log(f"{name} epoch {epoch + 1}/{config.epochs}: loss {running / per_epoch:.3f} "
                    f"({time.perf_counter() - start:.0f} s)")
        model.eval()
        summary = {"model": name, "kind": kind, "dataset": "digit-scenes", "train_samples": len(train_x),
                   "test_samples": len(test_x), "test": segmentation_scores(model, test_x, test_y),
                   "train": segmentation_scores(model, train_x, train_y), "config": asdict(config)}
        if log is not None:
            log(f"{name}: test {summary['test']} in {time.perf_counter() - start:.0f} s")
        return model, summary
    finally:
        torch.set_num_threads(previous)


def save_segmenter_checkpoint(model: SegmentationModel, path: Path, summary: dict[str, Any]) -> None:
    """Write the Segmenter's weights as ``.safetensors`` with its build config, PAP options and summary."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.segmenter.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=config_metadata(model, summary))
    tmp.replace(path)


def shipped_segmenter_path(kind: str) -> Path:
    """Return where the shipped demo Segmenter ``kind`` lives."""
    return ASSET_DIR / str(SEGMENTATION_MODELS[SHIPPED_SEGMENTERS[kind]].shipped)

