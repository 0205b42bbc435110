"""Segmentation as a task of the engine: clean, generated-corruption and attack cells whose records are per image.

A record holds an image's per-class pixel counts (intersection, union, prediction, label: the histograms of
:func:`robustbench_rpc.metrics.segmentation.class_areas`), so aAcc / mIoU / mAcc over a dataset are pure functions of
the records. Every cell carries ``task="segmentation"`` in its params, so its key never equals a classification
cell's. One :class:`SegmentationJob` runs all its cells in one pass over the images, through the engine's
journaled, shardable pass (:meth:`robustbench_rpc.engine.runner.Engine._pass`): a killed run resumes batch by batch.

Generated corruptions are seeded exactly as classification's (:func:`robustbench_rpc.engine.runner.cell_seed` of
the run seed, the corruption, the severity and the batch's first index) and change the image only, never the mask.
The first ``keep`` clean predictions can be saved as palette PNGs beside their truth (:func:`save_predictions`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from robustbench_rpc.engine.guards import BadMaskError, check_finite
from robustbench_rpc.errors import UserError
from robustbench_rpc.results.schema import SEGMENTATION_TASK, CellSpec
from robustbench_rpc.results.segmentation import PREDICTIONS_DIR

if TYPE_CHECKING:  # pragma: no cover
    from robustbench_rpc.data.base import Batch
    from robustbench_rpc.engine.runner import BatchPart, Engine

#: Steps of the iterative attacks when ``--option steps=N`` is not given (FGSM takes one step of size eps).
DEFAULT_STEPS = {"pgd": 10, "segpgd": 10}


@dataclass(frozen=True)
class SegmentationCell:
    """One cell of a segmentation job: its spec and how its images are made (clean, corrupted, attacked)."""

    spec: CellSpec
    kind: str  # clean | corruption | attack
    name: str | None = None  # corruption or attack name
    severity: int | None = None
    eps: float | None = None
    steps: int | None = None
    step_size: float | None = None


@dataclass
class SegmentationJob:
    """Segmentation cells that share one pass over a segmentation source (``SegmentationSource`` or alike)."""

    cells: list[SegmentationCell]
    source: Any
    predictions: Path | None = None  # results directory where the first ``keep`` clean predictions are saved
    keep: int = 4

    @property
    def specs(self) -> list[CellSpec]:
        """The cells this job produces."""
        return [cell.spec for cell in self.cells]

    def only(self, keys: set[str]) -> SegmentationJob | None:
        """The job restricted to the cells whose keys are in ``keys`` (None when none is)."""
        cells = [c for c in self.cells if c.spec.key() in keys]
        return replace(self, cells=cells) if cells else None


def segmentation_records(pred: Tensor, masks: Tensor, sample_ids: Sequence[str], indices: Sequence[int] | Tensor,
                         num_classes: int, ignore_index: int = 255) -> list[dict[str, Any]]:
    """Turn a batch of predicted label maps ``[B, H, W]`` and true masks into per-image class-area records."""
    from robustbench_rpc.metrics.segmentation import class_areas

    idx = indices.tolist() if isinstance(indices, Tensor) else list(indices)
    pred_np = pred.detach().cpu().numpy()
    mask_np = masks.detach().cpu().numpy()
    rows = []
    for i in range(len(sample_ids)):
        areas = class_areas(pred_np[i], mask_np[i], num_classes, ignore_index)
        rows.append({"sample_id": str(sample_ids[i]), "index": int(idx[i]),
                     "area_intersect": areas.intersect.tolist(), "area_union": areas.union.tolist(),
                     "area_pred": areas.pred.tolist(), "area_label": areas.label.tolist()})
    return rows


def check_masks(batch: Batch, spec: CellSpec, number: int, num_classes: int, ignore_index: int) -> Tensor:
    """Return the batch's masks; masks missing, of another size than the images, or with labels outside the
    classes raise :class:`BadMaskError` naming the image."""
    masks = batch.masks
    if masks is None:
        raise BadMaskError(f"Batch {number} of {spec.dataset} has no masks; segmentation needs a source whose "
                           "batches carry masks (digit-scenes, ade20k:PATH or segfolder:PATH).")
    if masks.ndim != 3 or tuple(masks.shape) != (batch.images.shape[0], *batch.images.shape[-2:]):
        raise BadMaskError(f"The masks of batch {number} of {spec.dataset} have shape {list(masks.shape)} but "
                           f"the images {list(batch.images.shape)}; each mask must have its image's height and "
                           "width.")
    bad = (masks != ignore_index) & ((masks < 0) | (masks >= num_classes))
    if bool(bad.any()):
        i = int(bad.flatten(1).any(dim=1).nonzero()[0])
        value = int(masks[i][bad[i]][0])
        raise BadMaskError(f"The mask of {batch.sample_ids[i]} in {spec.dataset} has label {value}, outside its "
                           f"{num_classes} classes (0..{num_classes - 1}, {ignore_index} = ignored); check the "
                           "masks and the class list.")
    return masks


def image_of(batch: Batch, i: int) -> Batch:
    """Image ``i`` of a (padded) segmentation batch as a batch of one, cropped to its own size."""
    from robustbench_rpc.data.base import Batch

    height, width = batch.sizes[i] if batch.sizes else tuple(batch.images.shape[-2:])
    assert batch.masks is not None
    return Batch(images=batch.images[i:i + 1, :, :height, :width], labels=batch.labels[i:i + 1],
                 sample_ids=batch.sample_ids[i:i + 1], indices=batch.indices[i:i + 1], is_ood=batch.is_ood[i:i + 1],
                 masks=batch.masks[i:i + 1, :height, :width], sizes=[(height, width)])


def _attack_images(engine: Engine, cell: SegmentationCell, clean: Tensor, masks: Tensor, start: int,
                   ignore_index: int) -> Tensor:
    from robustbench_rpc.attacks.segmentation import segmentation_attack

    seed = cell.spec.params.get("seed", engine.options.seed)
    # the random start draws on the CPU (the same start on every device), seeded per cell and batch
    gen = torch.Generator().manual_seed(_cell_seed(seed, cell.spec.condition_key(), start))
    assert cell.name is not None and cell.eps is not None
    return segmentation_attack(engine.model, clean, masks.to(clean.device), cell.name, cell.eps, steps=cell.steps,
                               step_size=cell.step_size, random_start=True, ignore_index=ignore_index,
                               generator=gen)


def _cell_seed(seed: int, *parts: Any) -> int:
    from robustbench_rpc.engine.runner import cell_seed

    return cell_seed(seed, *parts)


def _corrupted(engine: Engine, cell: SegmentationCell, clean: Tensor, start: int) -> Tensor:
    """The corrupted images of a batch, drawn as classification's generated corruptions draw them."""
    from robustbench_rpc.corruptions import corrupt

    assert cell.name is not None and cell.severity is not None
    draws_on = engine.options.device if "rng" in cell.spec.params else torch.device("cpu")
    gen = torch.Generator(draws_on).manual_seed(_cell_seed(engine.options.seed, cell.name, cell.severity, start))
    images = corrupt(clean, cell.name, cell.severity, generator=gen)
    return images.float() / 255.0 if images.dtype == torch.uint8 else images


def run_segmentation(engine: Engine, job: SegmentationJob, todo: set[str]) -> None:
    """Run the cells of ``job`` in ``todo`` in one journaled pass and write each finished cell."""
    cells = [c for c in job.cells if c.spec.key() in todo]
    started = time.perf_counter()
    source = job.source
    num_classes, ignore = int(source.num_classes), int(getattr(source, "ignore_index", 255))
    device = engine.options.device

    def score(number: int, batch: Batch) -> dict[str, list[dict[str, Any]]]:
        """Records of every cell for ``batch`` (images of one size, no padding)."""
        rows: dict[str, list[dict[str, Any]]] = {c.spec.key(): [] for c in cells}
        masks = check_masks(batch, cells[0].spec, number, num_classes, ignore)
        start = int(batch.indices[0])
        clean = batch.images.to(device, non_blocking=True)
        for cell in cells:
            key = cell.spec.key()
            if cell.kind == "corruption":
                images = _corrupted(engine, cell, clean, start)
            elif cell.kind == "attack":
                images = _attack_images(engine, cell, clean, masks, start, ignore)
            else:
                images = clean
            logits = engine._forward(images)  # checked and reduced on the device: [B, C, H, W] is large
            check_finite(logits.flatten(1), cell.spec, number, batch.sample_ids)
            pred = logits.argmax(dim=1).cpu()
            del logits
            rows[key] = segmentation_records(pred, masks, batch.sample_ids, batch.indices, num_classes, ignore)
            if cell.kind == "attack":
                linf = (images.detach().cpu() - batch.images.cpu()).abs().flatten(1).amax(dim=1)
                for row, value in zip(rows[key], linf.tolist(), strict=True):
                    row["norm_linf"] = float(value)
            if cell.kind == "clean" and job.predictions is not None and start < job.keep:
                save_predictions(Path(job.predictions), cell.spec, batch, pred, num_classes, ignore, job.keep)
        return rows

    def compute(number: int, batch: Batch) -> BatchPart:
        rows: dict[str, list[dict[str, Any]]] = {c.spec.key(): [] for c in cells}
        if len(batch) and (getattr(source, "per_image", False) or len(set(batch.sizes or [None])) > 1):
            # images of their own sizes: each scored alone at its size (its draws seeded by its own index), so
            # that padding never reaches the model, the corruption or the attack
            for i in range(len(batch)):
                for key, found in score(number, image_of(batch, i)).items():
                    rows[key].extend(found)
        elif len(batch):
            rows = score(number, batch)
        return engine._part(number, batch, rows)

    specs = [c.spec for c in cells]
    label = f"segmentation on {source.name}"
    parts, journal = engine._pass(specs, source, compute, label, units=len(cells), journal_cells=job.specs)
    # what each position of the records' per-class lists means
    extra = {"task": SEGMENTATION_TASK, "num_classes": num_classes, "ignore_index": ignore,
             "class_names": [str(n) for n in getattr(source, "class_names", [])] or None}
    engine._finish(specs, parts, source, started, extra, journal)


# ------------------------------------------------------------------------------------------------ saved masks
def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (``[256, 3]`` uint8): distinct hues for the classes, black for ignored pixels."""
    rng = np.random.default_rng(1234)
    colours = rng.integers(40, 256, size=(256, 3), dtype=np.int64).astype(np.uint8)
    base = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]],
                    dtype=np.uint8)
    colours[: min(len(base), num_classes)] = base[: min(len(base), num_classes)]
    colours[255] = 0
    return colours


def mask_png(mask: np.ndarray, num_classes: int) -> bytes:
    """Encode a label map as a palette PNG (pixel value = class index, 255 = ignored)."""
    from PIL import Image

    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(palette(num_classes).flatten().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_png(image: Tensor) -> bytes:
    """Encode a float image ``[3, H, W]`` in [0, 1] as an RGB PNG."""
    from PIL import Image

    array = (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def predictions_folder(root: Path, spec: CellSpec) -> Path:
    """Where the saved predictions of a cell are: ``predictions/<slug>-<key>/`` of the results directory."""
    return Path(root) / PREDICTIONS_DIR / f"{spec.slug()}-{spec.key()}"


def save_predictions(root: Path, spec: CellSpec, batch: Batch, pred: Tensor, num_classes: int, ignore_index: int,
                     keep: int) -> None:
    """Write the image, the true mask and the prediction of the batch's images among the first ``keep`` as PNGs
    (``NNNNN-image.png``, ``NNNNN-truth.png``, ``NNNNN-pred.png``, NNNNN the image's index), atomically."""
    from robustbench_rpc.atomic import atomic_write_bytes

    folder = predictions_folder(root, spec)
    assert batch.masks is not None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(batch.indices.tolist()):
            if index >= keep:
                break
            stem = f"{int(index):05d}"
            atomic_write_bytes(folder / f"{stem}-image.png", image_png(batch.images[i]))
            atomic_write_bytes(folder / f"{stem}-truth.png", mask_png(batch.masks[i].cpu().numpy(), num_classes))
            atomic_write_bytes(folder / f"{stem}-pred.png", mask_png(pred[i].cpu().numpy(), num_classes))
    except OSError as exc:
        raise UserError(f"Cannot save predicted masks in {folder}: {exc.strerror or exc}; free space there or "
                        "choose another --out.") from None
