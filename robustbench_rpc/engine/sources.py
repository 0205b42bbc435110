"""Batch sources: where a cell's images come from (files on disk, or tensors in memory such as the digits)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from robustbench_rpc.data.base import Batch, ImageListDataset, LoadReport, collate
from robustbench_rpc.engine.distributed import canonical_batches


@dataclass(frozen=True)
class LoaderOptions:
    """How batches are loaded: worker processes, pinned memory, batches prefetched per worker, decode device.

    ``decode_device`` set: the workers only read the files and JPEGs are decoded and transformed on that device
    (:mod:`robustbench_rpc.data.device_decode`); None: workers decode on the CPU.
    """

    workers: int = 0
    pin_memory: bool = False
    prefetch_factor: int | None = None
    decode_device: torch.device | None = None


class BatchSource(Protocol):
    """Anything the engine can evaluate: a name, a fingerprint, a class mask and an iterator of batches."""

    name: str
    class_indices: Tensor | None

    def __len__(self) -> int: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]: ...

    def shard_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                      loading: LoaderOptions | None = None,
                      skip: frozenset[int] = frozenset()) -> Iterator[tuple[int, Batch]]: ...

    def missing(self) -> list[tuple[str, str]]: ...


@dataclass
class FileSource:
    """A dataset of image files (ImageNet val, A, R, O, an ImageNet-C cell, a folder) with its load report."""

    dataset: ImageListDataset
    name: str = ""
    report: LoadReport = field(default_factory=LoadReport)

    def __post_init__(self) -> None:
        self.name = self.name or self.dataset.name
        self.class_indices = self.dataset.class_indices

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> dict[str, Any]:
        """Return the dataset's fingerprint (root, file count, hash of the file list)."""
        return self.dataset.fingerprint()

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
        """Decode and transform the images in dataset order; unreadable files are counted, not fatal."""
        self.report = LoadReport()
        self.report.add_missing(self.dataset.missing)
        for batch in self.dataset.loader(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory):
            self.report.add(batch)
            if len(batch):
                yield batch

    def missing(self) -> list[tuple[str, str]]:
        """Return (sample_id, reason) of files the dataset's list named but that were not found."""
        return list(self.dataset.missing)

    def shard_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                      loading: LoaderOptions | None = None,
                      skip: frozenset[int] = frozenset()) -> Iterator[tuple[int, Batch]]:
        """Yield ``(number, batch)`` for the canonical batches of this rank (all when ``world_size`` is 1).

        Batches numbered in ``skip`` (finished earlier) are neither read nor decoded. Batches may be empty when
        every file in them was unreadable (their ``skipped`` lists say why).
        """
        from torch.utils.data import DataLoader

        loading = loading or LoaderOptions()
        plan = [(n, r) for n, r in canonical_batches(len(self.dataset), batch_size, rank, world_size)
                if n not in skip]
        if not plan:
            return
        device = loading.decode_device
        if device is None:  # the workers decode and transform
            dataset, collate_fn, pin = self.dataset, collate, loading.pin_memory
        else:  # the workers read the files; this process decodes them on the device
            from robustbench_rpc.data.device_decode import FileBytesDataset, decode_on_device, keep_samples

            dataset, collate_fn, pin = FileBytesDataset(self.dataset), keep_samples, False
        extra: dict[str, Any] = {}
        if loading.workers > 0:
            extra["prefetch_factor"] = loading.prefetch_factor or 2
        loader = DataLoader(dataset, batch_sampler=[list(r) for _, r in plan], num_workers=loading.workers,
                            collate_fn=collate_fn, pin_memory=pin, **extra)
        for (number, _), batch in zip(plan, loader, strict=True):
            yield number, batch if device is None else decode_on_device(batch, self.dataset.transform, device)


@dataclass
class TensorSource:
    """Images already in memory (float [0, 1], ``[N, 3, H, W]``) with labels and stable sample ids."""

    name: str
    images: Tensor
    labels: Tensor
    sample_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    class_indices: Tensor | None = None
    report: LoadReport = field(default_factory=LoadReport)
    num_classes: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def fingerprint(self) -> dict[str, Any]:
        """Return the fingerprint given at construction (name, size, content hash)."""
        return dict(self.info) or {"dataset": self.name, "num_samples": len(self)}

    def limit(self, n: int | None) -> TensorSource:
        """Return the first ``n`` samples (all when None)."""
        if n is None:
            return self
        return TensorSource(self.name, self.images[:n], self.labels[:n], self.sample_ids[:n],
                            {**self.info, "limit": n}, self.class_indices, num_classes=self.num_classes)

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
        """Yield the tensors in order, in batches."""
        self.report = LoadReport()
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            batch = Batch(
                images=self.images[start:stop],
                labels=self.labels[start:stop],
                sample_ids=self.sample_ids[start:stop],
                indices=torch.arange(start, stop),
                is_ood=torch.zeros(stop - start, dtype=torch.bool),
            )
            self.report.add(batch)
            yield batch

    def missing(self) -> list[tuple[str, str]]:
        """Tensors in memory have no missing files."""
        return []

    def shard_batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                      loading: LoaderOptions | None = None,
                      skip: frozenset[int] = frozenset()) -> Iterator[tuple[int, Batch]]:
        """Yield ``(number, batch)`` for the canonical batches of this rank but those in ``skip``."""
        pin = loading is not None and loading.pin_memory
        for number, positions in canonical_batches(len(self), batch_size, rank, world_size):
            if number in skip:
                continue
            start, stop = positions.start, positions.stop
            images = self.images[start:stop]
            yield number, Batch(
                images=images.pin_memory() if pin else images,
                labels=self.labels[start:stop],
                sample_ids=self.sample_ids[start:stop],
                indices=torch.arange(start, stop),
                is_ood=torch.zeros(stop - start, dtype=torch.bool),
            )
