"""Datasets: ImageNet val, ImageNet-C (released layout), ImageNet-A/R/O (200-class masks), any wnid ImageFolder.

Every file-backed dataset is an :class:`ImageListDataset` of (file, canonical label) whose items are
:class:`LoadedSample`; use :func:`collate` (or ``dataset.loader(...)``) to get :class:`Batch` objects and
:class:`LoadReport` to count skipped or converted files. Labels always come from the sorted list of the 1000
ImageNet synsets. The embedded digits (scikit-learn's handwritten digits, used by the demo) are in
:mod:`robustbench_rpc.data.digits`. Segmentation datasets ((image, mask) pairs: the embedded digit scenes, ADE20K,
any image/mask folder) are in :mod:`robustbench_rpc.data.segmentation`.
"""

from __future__ import annotations

from robustbench_rpc.data.base import Batch, ImageListDataset, LoadedSample, LoadReport, SampleRef, collate
from robustbench_rpc.data.classes import (
    class_index,
    class_mask,
    imagenet_class_names,
    imagenet_wnids,
    mask_logits,
    restrict_logits,
    robustbench_5k_ids,
    subset_wnids,
    wnid_to_index,
)
from robustbench_rpc.data.decode import DecodeError, decode_image_bytes, read_image
from robustbench_rpc.data.folder import folder_dataset
from robustbench_rpc.data.imagenet import (
    ImageNetODetection,
    imagenet_a,
    imagenet_o_detection,
    imagenet_r,
    imagenet_val,
)
from robustbench_rpc.data.imagenet_c import (
    ALL_CORRUPTIONS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    ImageNetC,
)
from robustbench_rpc.data.registry import DATASET_NAMES, build_dataset
from robustbench_rpc.data.transforms import EvalTransform, build_eval_transform

__all__ = [
    "ALL_CORRUPTIONS",
    "CORRUPTIONS",
    "DATASET_NAMES",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "Batch",
    "DecodeError",
    "EvalTransform",
    "ImageListDataset",
    "ImageNetC",
    "ImageNetODetection",
    "LoadReport",
    "LoadedSample",
    "SampleRef",
    "build_dataset",
    "build_eval_transform",
    "class_index",
    "class_mask",
    "collate",
    "decode_image_bytes",
    "folder_dataset",
    "imagenet_a",
    "imagenet_class_names",
    "imagenet_o_detection",
    "imagenet_r",
    "imagenet_val",
    "imagenet_wnids",
    "mask_logits",
    "read_image",
    "restrict_logits",
    "robustbench_5k_ids",
    "subset_wnids",
    "wnid_to_index",
]
