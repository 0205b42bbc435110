"""The dataset every loader builds: a list of image files with canonical labels, plus collate and skip report.

A dataset item is a :class:`LoadedSample` ``(image, label, sample_id, index, is_ood, status)``. ``image`` is
float32 [3, H, W] in [0, 1] after the transform, uint8 [3, H, W] without one (``decode`` path), or None when the
file could not be read (``status`` then says why). :func:`collate` drops the unreadable samples of a batch and
lists them in :attr:`Batch.skipped`; :class:`LoadReport` accumulates skips and conversions for the result.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robustbench_rpc.data.decode import DecodeError, read_image


@dataclass(frozen=True)
class SampleRef:
    """One file of a dataset: where it is, its canonical label (-1 for OOD) and its stable id."""

    path: Path
    label: int
    sample_id: str
    is_ood: bool = False


class LoadedSample(NamedTuple):
    """What ``dataset[i]`` returns; ``status`` is "ok", "converted:<mode>" or "skipped:<reason>"."""

    image: Tensor | None
    label: int
    sample_id: str
    index: int
    is_ood: bool
    status: str


@dataclass
class Batch:
    """A collated batch; unreadable samples are not in it but listed in ``skipped`` as (sample_id, reason).

    ``masks`` (segmentation only) is long [B, H, W]: each pixel's class in 0..num_classes-1, 255 = ignored.
    """

    images: Tensor
    labels: Tensor
    sample_ids: list[str]
    indices: Tensor
    is_ood: Tensor
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: list[tuple[str, str]] = field(default_factory=list)
    masks: Tensor | None = None
    sizes: list[tuple[int, int]] | None = None  # segmentation: each image's (height, width) before padding

    def __len__(self) -> int:
        return len(self.sample_ids)


def collate(samples: Sequence[LoadedSample]) -> Batch:
    """Stack the readable samples of a batch; record the unreadable and the converted ones."""
    kept = [s for s in samples if s.image is not None]
    skipped = [(s.sample_id, s.status.removeprefix("skipped:")) for s in samples if s.image is None]
    converted = [(s.sample_id, s.status.removeprefix("converted:")) for s in kept if s.status != "ok"]
    if kept:
        images = torch.stack([s.image for s in kept])  # type: ignore[misc]
    else:
        images = torch.empty(0, 3, 0, 0)
    return Batch(
        images=images,
        labels=torch.tensor([s.label for s in kept], dtype=torch.long),
        sample_ids=[s.sample_id for s in kept],
        indices=torch.tensor([s.index for s in kept], dtype=torch.long),
        is_ood=torch.tensor([s.is_ood for s in kept], dtype=torch.bool),
        skipped=skipped,
        converted=converted,
    )


@dataclass
class LoadReport:
    """Counts of what did not load as-is: skipped files (with reasons) and converted colour modes."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: Counter = field(default_factory=Counter)
    loaded: int = 0

    def add(self, batch: Batch) -> None:
        """Account for one collated batch."""
        self.skipped.extend(batch.skipped)
        self.converted.update(mode for _, mode in batch.converted)
        self.loaded += len(batch)

    def add_missing(self, missing: Sequence[tuple[str, str]]) -> None:
        """Account for files that a list named but that were not found when the dataset was built."""
        self.skipped.extend(missing)

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary for the result's provenance."""
        reasons = Counter(reason.split(" (")[0] for _, reason in self.skipped)
        return {
            "loaded": self.loaded,
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(sorted(reasons.items())),
            "skipped_files": [{"sample_id": s, "reason": r} for s, r in self.skipped],
            "converted": dict(sorted(self.converted.items())),
        }

    def summary(self) -> str:
        """Return a one-line human summary, e.g. ``"98 loaded, 2 skipped (corrupt image data: 1, ...)"``."""
        text = f"{self.loaded} loaded"
        if self.skipped:
            reasons = self.as_dict()["skipped_by_reason"]
            text += (
                f", {len(self.skipped)} skipped (" + ", ".join(f"{k}: {v}" for k, v in reasons.items()) + ")"
            )
        if self.converted:
            text += ", converted to RGB: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.converted.items()))
        return text


def fingerprint_paths(
    name: str, root: Path, rel_paths: Sequence[str], extra: dict[str, Any] | None = None
) -> dict:
    """Return a cheap provenance fingerprint: root, file count and SHA-256 of the sorted relative paths."""
    digest = hashlib.sha256()
    for rel in sorted(rel_paths):
        digest.update(rel.encode("utf-8"))
        digest.update(b"\n")
    out = {
        "dataset": name,
        "root": str(root),
        "num_files": len(rel_paths),
        "paths_sha256": digest.hexdigest(),
    }
    if extra:
        out.update(extra)
    return out


class ImageListDataset(Dataset):
    """A list of image files with canonical labels; the common form of every dataset in this package.

    ``class_indices`` (LongTensor of 1000-index positions, or None for all classes) is the logit mask the model
    is evaluated with; ``missing`` lists (sample_id, reason) of files a list named but that do not exist.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        samples: Sequence[SampleRef],
        transform: Callable[[Tensor], Tensor] | None = None,
        class_indices: Tensor | None = None,
        missing: Sequence[tuple[str, str]] = (),
        info: dict[str, Any] | None = None,
        num_classes: int = 1000,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.samples = list(samples)
        self.transform = transform
        self.class_indices = class_indices
        self.missing = list(missing)
        self.info = dict(info or {})
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> LoadedSample:
        ref = self.samples[index]
        try:
            decoded = read_image(ref.path)
        except DecodeError as exc:
            return LoadedSample(None, ref.label, ref.sample_id, index, ref.is_ood, f"skipped:{exc.reason}")
        image = decoded.image if self.transform is None else self.transform(decoded.image)
        status = "ok" if decoded.converted_from is None else f"converted:{decoded.converted_from}"
        return LoadedSample(image, ref.label, ref.sample_id, index, ref.is_ood, status)

    def decode(self, index: int) -> Tensor:
        """Return the raw uint8 [3, H, W] image of sample ``index`` (raises DecodeError when unreadable)."""
        return read_image(self.samples[index].path).image

    def with_transform(self, transform: Callable[[Tensor], Tensor] | None) -> ImageListDataset:
        """Return a copy of this dataset that applies ``transform`` (None: yield uint8 images)."""
        clone = ImageListDataset.__new__(ImageListDataset)
        clone.__dict__.update(self.__dict__)
        clone.transform = transform
        return clone

    def limit(self, n: int | None) -> ImageListDataset:
        """Return a copy holding the first ``n`` samples (all when n is None)."""
        clone = self.with_transform(self.transform)
        if n is not None:
            clone.samples = self.samples[: max(int(n), 0)]
        return clone

    @property
    def labels(self) -> list[int]:
        """Return the canonical labels of all samples, in order."""
        return [s.label for s in self.samples]

    def fingerprint(self) -> dict[str, Any]:
        """Return root, file count and a hash of the sorted sample ids (for provenance)."""
        return fingerprint_paths(self.name, self.root, [s.sample_id for s in self.samples], self.info)

    def loader(self, batch_size: int = 64, num_workers: int = 0, **kwargs: Any) -> DataLoader:
        """Return a DataLoader in dataset order that uses :func:`collate` (yields :class:`Batch`)."""
        return DataLoader(
            self,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate,
            persistent_workers=False,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r}, samples={len(self)})"


def relabel(sample: SampleRef, **changes: Any) -> SampleRef:
    """Return ``sample`` with fields replaced (e.g. ``is_ood=True, label=-1``)."""
    return replace(sample, **changes)
