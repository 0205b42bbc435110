"""One entry point from a dataset name and root to a dataset with the model's eval transform attached."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from robustbench_rpc.data.base import ImageListDataset
from robustbench_rpc.data.folder import folder_dataset
from robustbench_rpc.data.imagenet import imagenet_a, imagenet_o_detection, imagenet_r, imagenet_val
from robustbench_rpc.data.imagenet_c import ImageNetC
from robustbench_rpc.data.segmentation import SEGMENTATION_DATASETS
from robustbench_rpc.data.transforms import build_eval_transform
from robustbench_rpc.errors import UserError, did_you_mean

DATASET_NAMES: tuple[str, ...] = (
    "imagenet",
    "imagenet-c",
    "imagenet-a",
    "imagenet-r",
    "imagenet-o",
    "folder",
)

#: What each dataset root must look like (for help texts and error messages).
DATASET_LAYOUTS: dict[str, str] = {
    "imagenet": "<root>/<wnid>/*.JPEG, or flat <root>/*.JPEG with --labels FILE",
    "imagenet-c": "<root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG",
    "imagenet-a": "<root>/<wnid>/* (200 ImageNet-A classes)",
    "imagenet-r": "<root>/<wnid>/* (200 ImageNet-R classes)",
    "imagenet-o": "<root>/<wnid>/* (ImageNet-O) plus --imagenet-root with the ImageNet validation set",
    "folder": "<root>/<wnid>/*, or <root>/<class>/* with --classes FILE",
}

#: Segmentation datasets (built by ``robustbench_rpc.data.segmentation.load_segmentation_source``, not here).
SEGMENTATION_DATASET_NAMES: tuple[str, ...] = tuple(SEGMENTATION_DATASETS)


class _TransformedImageNetC(ImageNetC):
    """ImageNet-C whose per-cell datasets carry a transform."""

    transform: Any = None

    def dataset(self, corruption: str, severity: int) -> ImageListDataset:
        """Return one cell's dataset with the center-crop transform attached."""
        return super().dataset(corruption, severity).with_transform(self.transform)


def build_dataset(
    name: str,
    root: str | Path,
    preprocessing: Mapping[str, Any] | None = None,
    *,
    labels_file: str | Path | None = None,
    imagenet_root: str | Path | None = None,
    class_list: str | Path | Mapping[str, int] | None = None,
    corruptions: str | Iterable[str] | None = None,
    severities: str | Iterable[int] | None = None,
    subset: str | None = None,
    limit: int | None = None,
    allow_missing: bool = False,
) -> ImageListDataset | ImageNetC:
    """Build dataset ``name`` at ``root`` with the eval transform of ``preprocessing`` (None: uint8 images).

    ``imagenet-c`` returns an :class:`ImageNetC` (call ``.cells()`` and ``.dataset(c, s)``); the others return
    an :class:`ImageListDataset` whose ``class_indices`` is the logit mask to evaluate with.
    """
    if name in SEGMENTATION_DATASET_NAMES:
        raise UserError(f"{name!r} is a segmentation dataset ({SEGMENTATION_DATASETS[name]}); evaluate it with the "
                        f"segmentation task, not as a classification dataset.")
    if name not in DATASET_NAMES:
        raise UserError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}{did_you_mean(name, DATASET_NAMES)}."
        )
    if name != "imagenet-c" and (corruptions is not None or severities is not None):
        raise UserError(f"corruptions and severities apply to imagenet-c only, not to {name!r}.")
    if subset is not None and name not in ("imagenet", "imagenet-c"):
        raise UserError(f"--subset applies to imagenet and imagenet-c only, not to {name!r}.")
    transform = None
    if preprocessing is not None:
        transform = build_eval_transform(preprocessing, resize=name != "imagenet-c")
    if name == "imagenet-c":
        dataset_c = _TransformedImageNetC(root, corruptions, severities, subset, limit, allow_missing)
        dataset_c.transform = transform
        return dataset_c
    if name == "imagenet":
        dataset = imagenet_val(root, labels_file, subset, limit)
    elif name == "imagenet-a":
        dataset = imagenet_a(root, limit)
    elif name == "imagenet-r":
        dataset = imagenet_r(root, limit)
    elif name == "imagenet-o":
        if imagenet_root is None:
            raise UserError(
                "imagenet-o needs the ImageNet validation set as in-distribution data; expected --imagenet-root."
            )
        dataset = imagenet_o_detection(root, imagenet_root, labels_file, limit)
    else:
        dataset = folder_dataset(root, class_list).limit(limit)
    return dataset.with_transform(transform)
