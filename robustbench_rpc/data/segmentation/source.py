"""The segmentation batch source: (image, mask) samples in canonical batches, with a skip report and a fingerprint.

A :class:`SegmentationSource` implements the engine's ``BatchSource`` protocol. Its batches are
:class:`~robustbench_rpc.data.base.Batch` objects with ``images`` float [B, 3, H, W] in [0, 1], ``masks`` long
[B, H, W] (class ids ``0..num_classes-1``, 255 = ignored) and ``labels`` all -1 (unused). Batch ``b`` holds the
dataset positions of :func:`~robustbench_rpc.data.batches.canonical_batches`, whatever the rank or worker count.

Equal size per batch: samples of one batch whose sizes differ are padded at the bottom and right to the largest
height and width of the batch, images with 0 and masks with the ignore index, so padded pixels never count in a
metric. A source built with a fixed ``image_size`` (or the digit scenes, all 64 x 64) never pads; batch size 1
evaluates every image at its own size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from robustbench_rpc.data.base import Batch, LoadReport
from robustbench_rpc.data.batches import canonical_batches
from robustbench_rpc.metrics.segmentation import IGNORE_INDEX


class SegSample(NamedTuple):
    """One loaded sample; ``image``/``mask`` are None when unreadable (``status`` "skipped:<reason>" says why)."""

    image: Tensor | None
    mask: Tensor | None
    sample_id: str
    index: int
    status: str


class SegmentationItems(Protocol):
    """What a :class:`SegmentationSource` reads from: indexable samples, their ids, a fingerprint, a limit."""

    sample_ids: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SegSample: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def limit(self, n: int | None) -> SegmentationItems: ...


@dataclass(frozen=True)
class ResizeRule:
    """How images (bilinear) and masks (nearest) are resized: ``none``, ``short`` side (mmseg's rule) or ``square``.

    ``short``: scale by ``min(size / short side, long_max / long side)`` and round each side to the nearest
    integer, as mmsegmentation's ``Resize(img_scale=(long_max, size), keep_ratio=True)`` does;
    ``square``: resize to ``size`` x ``size`` whatever the aspect ratio.
    """

    kind: str = "none"
    size: int = 0
    long_max: int = 2048

    def target(self, height: int, width: int) -> tuple[int, int]:
        """Return the (height, width) an image of this size is resized to."""
        if self.kind == "square":
            return self.size, self.size
        if self.kind == "short":
            scale = min(self.size / min(height, width), self.long_max / max(height, width))
            return int(height * scale + 0.5), int(width * scale + 0.5)
        return height, width

    def describe(self) -> str:
        """Return the rule as a short text for fingerprints and provenance."""
        if self.kind == "square":
            return f"square {self.size}"
        if self.kind == "short":
            return f"short side {self.size} (long side <= {self.long_max})"
        return "original"


def resize_pair(image: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Resize float ``image`` [3, H, W] bilinearly and long ``mask`` [H, W] by nearest neighbour to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)
    mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, mask


def collate_segmentation(samples: Sequence[SegSample], ignore_index: int = IGNORE_INDEX) -> Batch:
    """Stack the readable samples (padding to the batch's largest size); list the unreadable and converted ones."""
    kept = [s for s in samples if s.image is not None and s.mask is not None]
    skipped = [(s.sample_id, s.status.removeprefix("skipped:")) for s in samples if s.image is None or s.mask is None]
    converted = [(s.sample_id, s.status.removeprefix("converted:")) for s in kept if s.status != "ok"]
    sizes = {tuple(s.mask.shape) for s in kept}  # type: ignore[union-attr]
    if len(sizes) == 1:
        images = torch.stack([s.image for s in kept])  # type: ignore[misc]
        masks = torch.stack([s.mask for s in kept])  # type: ignore[misc]
    elif kept:
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        images = torch.zeros(len(kept), 3, height, width)
        masks = torch.full((len(kept), height, width), ignore_index, dtype=torch.long)
        for row, s in enumerate(kept):
            h, w = s.mask.shape  # type: ignore[union-attr]
            images[row, :, :h, :w] = s.image
            masks[row, :h, :w] = s.mask
    else:
        images = torch.empty(0, 3, 0, 0)
        masks = torch.empty(0, 0, 0, dtype=torch.long)
    return Batch(
        images=images,
        labels=torch.full((len(kept),), -1, dtype=torch.long),
        sample_ids=[s.sample_id for s in kept],
        indices=torch.tensor([s.index for s in kept], dtype=torch.long),
        is_ood=torch.zeros(len(kept), dtype=torch.bool),
        skipped=skipped,
        converted=converted,
        masks=masks,
        sizes=[tuple(s.mask.shape) for s in kept],  # type: ignore[union-attr]
    )


class _Collate:
    """A picklable collate function bound to an ignore index (for DataLoader workers)."""

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, samples: Sequence[SegSample]) -> Batch:
        return collate_segmentation(samples, self.ignore_index)


class SegmentationSource:
    """A segmentation dataset the engine can evaluate: named, fingerprinted, in canonical (image, mask) batches."""

    def __init__(self, name: str, items: SegmentationItems, class_names: Sequence[str], *,
                 ignore_index: int = IGNORE_INDEX, missing: Sequence[tuple[str, str]] = (),
                 per_image: bool = False) -> None:
        self.name = name
        # images of their own sizes (ADE20K, a folder): the engine scores each at its size, never on a padded
        # canvas, so that no number depends on which images share a batch
        self.per_image = per_image
        self.items = items
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.ignore_index = int(ignore_index)
        self.class_indices: Tensor | None = None
        self.report = LoadReport()
        self._missing = list(missing)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def sample_ids(self) -> list[str]:
        """Return the stable ids of the samples, in dataset order."""
        return list(self.items.sample_ids)

    def fingerprint(self) -> dict[str, Any]:
        """Return name, number of samples, content hash, image size and classes (for resuming and comparing)."""
        return {**self.items.fingerprint(), "num_classes": self.num_classes, "ignore_index": self.ignore_index}

    def limit(self, n: int | None) -> SegmentationSource:
        """Return a source of the first ``n`` samples (all when None)."""
        if n is None:
            return self
        return SegmentationSource(self.name, self.items.limit(n), self.class_names, ignore_index=self.ignore_index,
                                  missing=self._missing, per_image=self.per_image)

    def missing(self) -> list[tuple[str, str]]:
        """Return (sample_id, reason) of samples listed but not found (none: listing problems are errors)."""
        return list(self._missing)

    def _load(self, plan: Sequence[tuple[int, range]], workers: int, pin_memory: bool,
              prefetch_factor: int | None = None) -> Iterator[tuple[int, Batch]]:
        if not plan:
            return
        extra: dict[str, Any] = {}
        if workers > 0:
            extra["prefetch_factor"] = prefetch_factor or 2
        loader = DataLoader(self.items, batch_sampler=[list(r) for _, r in plan], num_workers=workers,  # type: ignore[arg-type]
                            collate_fn=_Collate(self.ignore_index), pin_memory=pin_memory, **extra)
        for (number, _), batch in zip(plan, loader, strict=True):
            yield number, batch

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
        """Yield the batches in dataset order; unreadable samples are counted in :attr:`report`, not fatal."""
        self.report = LoadReport()
        self.report.add_missing(self._missing)
        for _, batch in self._load(canonical_batches(len(self), batch_size), workers, pin_memory):
            self.report.add(batch)
            if len(batch):
                yield batch

    def shard_batches(self, batch_size: int, rank: int = 0, world_size: int = 1, loading: Any = None,
                      skip: frozenset[int] = frozenset()) -> Iterator[tuple[int, Batch]]:
        """Yield ``(number, batch)`` for the canonical batches of this rank, but those numbered in ``skip``.

        ``loading`` is the engine's ``LoaderOptions`` (workers, pin_memory, prefetch_factor; a decode device is not
        used: masks are decoded on the CPU). Skipped batches are not read. A batch may be empty when every sample in
        it was unreadable (its ``skipped`` list says why).
        """
        workers = int(getattr(loading, "workers", 0) or 0)
        pin = bool(getattr(loading, "pin_memory", False))
        prefetch = getattr(loading, "prefetch_factor", None)
        plan = [(n, r) for n, r in canonical_batches(len(self), batch_size, rank, world_size) if n not in skip]
        yield from self._load(plan, workers, pin, prefetch)

    def __repr__(self) -> str:
        return f"SegmentationSource(name={self.name!r}, samples={len(self)}, classes={self.num_classes})"
