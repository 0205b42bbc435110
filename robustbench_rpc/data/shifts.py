"""Natural distribution shifts in their released layouts: ImageNet-V2, ImageNet-Sketch, Stylized-ImageNet, ObjectNet.

- ImageNet-V2 (Recht et al. 2019): three variants, each ``imagenetv2-<variant>-format-val/<0..999>/*.jpeg`` with
  folders named by class index (the canonical sorted-wnid order); 1000 classes.
- ImageNet-Sketch (Wang et al. 2019): ``sketch/<wnid>/*.JPEG`` (the zip's top folder), 1000 classes.
- Stylized-ImageNet (Geirhos et al. 2019): the ImageNet layout, ``val/<wnid>/*.JPEG``, 1000 classes.
- ObjectNet (Barbu et al. 2019): ``objectnet-1.0/images/<folder>/*.png`` and ``objectnet-1.0/mappings/``; only the
  113 classes that overlap ImageNet are scored, predictions restricted to the ImageNet classes mapped to them (an
  ObjectNet class may map to several: the logits of a class's ImageNet classes are merged by their maximum), and
  the 2-pixel border of every image is cropped first, as the authors' evaluation code does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustbench_rpc.data.base import ImageListDataset, SampleRef
from robustbench_rpc.data.classes import is_wnid
from robustbench_rpc.data.folder import _class_samples, _preview, check_root, list_class_dirs, scan_wnid_folders
from robustbench_rpc.data.selection import check_limit
from robustbench_rpc.errors import UserError, did_you_mean

#: ImageNet-V2 variant -> the folder its tar file extracts to.
IMAGENET_V2_VARIANTS: dict[str, str] = {
    "matched-frequency": "imagenetv2-matched-frequency-format-val",
    "threshold-0.7": "imagenetv2-threshold0.7-format-val",
    "top-images": "imagenetv2-top-images-format-val",
}
#: The ObjectNet mapping files (under ``mappings/``) this loader reads.
OBJECTNET_MAPPINGS = ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
                      "imagenet_to_label_2012_v2", "pytorch_to_imagenet_2012_id.json")
#: Pixels cropped from each side of an ObjectNet image (its border), as in the authors' evaluation code.
OBJECTNET_BORDER = 2


def _limited(samples: list[SampleRef], limit: int | None) -> list[SampleRef]:
    limit = check_limit(limit)
    return samples if limit is None else samples[:limit]


def _index_folders(path: Path, what: str, expected: str) -> list[SampleRef]:
    """Scan ``<path>/<0..999>/*`` (class-index folders) into samples with those indices as labels."""
    dirs, files = list_class_dirs(path)
    if dirs and all(is_wnid(d) for d in dirs):
        raise UserError(f"{what} root {str(path)!r} has wnid folders ({_preview(dirs)}); expected {expected}: "
                        "ImageNet-V2 names its folders by class index (this looks like ImageNet val or Sketch).")
    bad = [d for d in dirs if not (d.isdigit() and int(d) < 1000)]
    if not dirs or bad:
        found = f"folders {_preview(bad)}" if bad else f"{len(files)} files and no folders"
        raise UserError(f"{what} root {str(path)!r} has {found}; expected {expected}.")
    labels = {d: int(d) for d in dirs}
    return _class_samples(path, sorted(dirs, key=int), labels, what)


def imagenet_v2(root: str | Path, variant: str | None = None, limit: int | None = None) -> list[ImageListDataset]:
    """Return the ImageNet-V2 variants under ``root``: one variant folder, or a folder holding several of them.

    ``variant`` picks one (``matched-frequency``, ``threshold-0.7``, ``top-images``); labels are the folder indices.
    """
    path = check_root(root, "imagenet-v2")
    if variant is not None and variant not in IMAGENET_V2_VARIANTS:
        raise UserError(f"Unknown ImageNet-V2 variant {variant!r}; expected one of "
                        f"{', '.join(IMAGENET_V2_VARIANTS)}{did_you_mean(variant, IMAGENET_V2_VARIANTS)}.")
    expected = "<root>/<0..999>/*.jpeg (a variant folder such as imagenetv2-matched-frequency-format-val)"
    found = {v: path / folder for v, folder in IMAGENET_V2_VARIANTS.items() if (path / folder).is_dir()}
    own = next((v for v, folder in IMAGENET_V2_VARIANTS.items() if path.name == folder), None)
    if not found:
        found = {own or "matched-frequency": path} if own or variant is None else {variant: path}
    if variant is not None:
        if variant not in found:
            raise UserError(f"imagenet-v2 root {str(path)!r} has no {variant} variant "
                            f"({IMAGENET_V2_VARIANTS[variant]}); found {', '.join(found)}.")
        found = {variant: found[variant]}
    out = []
    for name, folder in found.items():
        samples = _limited(_index_folders(folder, "imagenet-v2", expected), limit)
        out.append(ImageListDataset("imagenet-v2", folder, samples, info={"variant": name, "limit": limit}))
    return out


def _wnid_tree(root: str | Path, what: str, inner: str, expected: str, limit: int | None) -> ImageListDataset:
    """A 1000-class ``<root>/<wnid>/*`` tree, also found one level down in ``<root>/<inner>/``."""
    path = check_root(root, what)
    if (path / inner).is_dir() and not any(is_wnid(d) for d in list_class_dirs(path)[0]):
        path = path / inner
    dirs = list_class_dirs(path)[0]
    if dirs and all(d.isdigit() for d in dirs):
        raise UserError(f"{what} root {str(path)!r} has class-index folders ({_preview(dirs)}), the ImageNet-V2 "
                        f"layout; expected {expected} (use the imagenet-v2 dataset for this folder).")
    path, samples = scan_wnid_folders(path, what, expected)
    return ImageListDataset(what, path, _limited(samples, limit), info={"limit": limit})


def imagenet_sketch(root: str | Path, limit: int | None = None) -> ImageListDataset:
    """ImageNet-Sketch: ``<root>/<wnid>/*`` (or the zip's ``<root>/sketch/<wnid>/*``), 1000 classes."""
    return _wnid_tree(root, "imagenet-sketch", "sketch", "<root>/sketch/<wnid>/*.JPEG (1000 wnid folders)", limit)


def stylized_imagenet(root: str | Path, limit: int | None = None) -> ImageListDataset:
    """Stylized-ImageNet validation images: ``<root>/<wnid>/*`` (or ``<root>/val/<wnid>/*``), 1000 classes."""
    return _wnid_tree(root, "stylized-imagenet", "val", "<root>/val/<wnid>/*.JPEG (1000 wnid folders)", limit)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"ObjectNet mapping file {str(path)!r} is not readable JSON ({exc}).") from None


def objectnet_classes(mappings: Path) -> dict[str, list[int]]:
    """Return {ObjectNet image folder: canonical ImageNet indices} for the classes that overlap ImageNet-1k.

    Reads ``folder_to_objectnet_label.json`` ({folder: ObjectNet label}), ``objectnet_to_imagenet_1k.json``
    ({ObjectNet label: "ImageNet label; ImageNet label"}), ``imagenet_to_label_2012_v2`` (line i: the label of
    ImageNet 2012 id i) and ``pytorch_to_imagenet_2012_id.json`` ({sorted-wnid index: 2012 id}).
    """
    missing = [name for name in OBJECTNET_MAPPINGS if not (mappings / name).is_file()]
    if missing:
        raise UserError(f"ObjectNet mappings folder {str(mappings)!r} lacks {', '.join(missing)}; expected the "
                        "mappings/ folder of the objectnet-1.0 release.")
    folder_of = {label: folder for folder, label in _read_json(mappings / "folder_to_objectnet_label.json").items()}
    to_imagenet = _read_json(mappings / "objectnet_to_imagenet_1k.json")
    lines = (mappings / "imagenet_to_label_2012_v2").read_text(encoding="utf-8").splitlines()
    line_of = {text.strip(): i for i, text in enumerate(lines) if text.strip()}
    index_of_line = {int(v): int(k) for k, v in _read_json(mappings / "pytorch_to_imagenet_2012_id.json").items()}
    out: dict[str, list[int]] = {}
    for label, names in to_imagenet.items():
        if label not in folder_of:
            raise UserError(f"ObjectNet class {label!r} of objectnet_to_imagenet_1k.json has no folder in "
                            "folder_to_objectnet_label.json; expected the files of one release.")
        indices = []
        for name in str(names).split("; "):
            if name.strip() not in line_of or line_of[name.strip()] not in index_of_line:
                raise UserError(f"ImageNet class {name!r} (for ObjectNet's {label!r}) is not in "
                                "imagenet_to_label_2012_v2 / pytorch_to_imagenet_2012_id.json.")
            indices.append(index_of_line[line_of[name.strip()]])
        out[folder_of[label]] = sorted(set(indices))
    return out


def grouped_class_indices(groups: list[list[int]]) -> Tensor:
    """Return the ``[2, K]`` class map of merged classes: row 0 the ImageNet indices, row 1 each one's group
    representative (the group's smallest index); :func:`~robustbench_rpc.data.classes.mask_logits` merges them."""
    members = [i for group in groups for i in group]
    representatives = [min(group) for group in groups for _ in group]
    return torch.tensor([members, representatives], dtype=torch.long)


class BorderCrop:
    """Crop ``border`` pixels from every side of a ``[3, H, W]`` image, then apply ``transform``."""

    def __init__(self, transform: Callable[[Tensor], Tensor] | None, border: int = OBJECTNET_BORDER) -> None:
        self.transform = transform
        self.border = border

    def __call__(self, image: Tensor) -> Tensor:
        b = self.border
        cropped = image[..., b:-b, b:-b] if image.shape[-1] > 2 * b and image.shape[-2] > 2 * b else image
        return cropped if self.transform is None else self.transform(cropped)

    def __repr__(self) -> str:
        return f"BorderCrop({self.border}, {self.transform!r})"


def objectnet(root: str | Path, limit: int | None = None) -> ImageListDataset:
    """ObjectNet's 113 ImageNet-overlapping classes: ``<root>/images/<folder>/*`` and ``<root>/mappings/``.

    An image's label is the smallest ImageNet index its class maps to; the dataset's ``class_indices`` merge each
    class's ImageNet classes (maximum logit), so top-1/top-5 are over the 113 classes.
    """
    path = check_root(root, "objectnet")
    if not (path / "images").is_dir() and (path / "objectnet-1.0").is_dir():
        path = path / "objectnet-1.0"
    expected = "<root>/images/<class folder>/*.png with <root>/mappings/objectnet_to_imagenet_1k.json (objectnet-1.0)"
    if not (path / "images").is_dir() or not (path / "mappings").is_dir():
        dirs = list_class_dirs(path)[0]
        raise UserError(f"objectnet root {str(path)!r} has {('folders ' + _preview(dirs)) if dirs else 'no folders'}"
                        f"; expected {expected}.")
    classes = objectnet_classes(path / "mappings")
    dirs = list_class_dirs(path / "images")[0]
    present = [d for d in dirs if d in classes]
    if not present:
        raise UserError(f"objectnet images folder {str(path / 'images')!r} has none of the 113 ImageNet-overlapping "
                        f"class folders ({_preview(classes)}); expected {expected}.")
    labels = {d: min(classes[d]) for d in present}
    samples = _class_samples(path / "images", present, labels, "objectnet")
    info = {"classes_present": len(present), "classes_overlapping": len(classes),
            "folders_skipped": len(dirs) - len(present), "border_crop": OBJECTNET_BORDER, "limit": limit}
    return ImageListDataset("objectnet", path, _limited(samples, limit),
                            class_indices=grouped_class_indices([classes[d] for d in sorted(classes)]), info=info)

