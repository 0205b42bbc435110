"""Batch sources: where a cell's images come from (files on disk, or tensors in memory such as the digits)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from robustbench_rpc.data.base import Batch, ImageListDataset, LoadReport


class BatchSource(Protocol):
    """Anything the engine can evaluate: a name, a fingerprint, a class mask and an iterator of batches."""

    name: str
    class_indices: Tensor | None

    def __len__(self) -> int: ...

    def fingerprint(self) -> dict[str, Any]: ...

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]: ...


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
                            {**self.info, "limit": n}, self.class_indices)

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
