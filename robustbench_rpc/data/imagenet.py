"""ImageNet validation (folder or flat layout), ImageNet-A, ImageNet-R and the ImageNet-O detection set."""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from robustbench_rpc.data.base import ImageListDataset, SampleRef
from robustbench_rpc.data.classes import class_mask, is_wnid, subset_wnids, wnid_to_index
from robustbench_rpc.data.folder import check_root, list_class_dirs, scan_wnid_folders
from robustbench_rpc.data.selection import check_limit, select_samples
from robustbench_rpc.errors import UserError

VAL_LAYOUT = "<root>/<wnid>/*.JPEG, or the flat <root>/ILSVRC2012_val_*.JPEG with a labels file"

_FILE_COLUMNS = ("file", "filename", "image", "imageid", "path", "name")
_LABEL_COLUMNS = ("wnid", "predictionstring", "synset", "label", "class_index", "class")


def _label_value(value: str, where: str) -> int:
    token = value.strip().split()[0] if value.strip() else ""
    table = wnid_to_index()
    if is_wnid(token):
        if token not in table:
            raise UserError(f"{where}: {token!r} is not one of the 1000 ImageNet wnids.")
        return table[token]
    if token.isdigit() and int(token) < 1000:
        return int(token)
    raise UserError(f"{where}: {value.strip()[:40]!r} is neither a wnid nor a class index 0-999.")


def read_val_labels(path: str | Path) -> dict[str, int]:
    """Read a validation labels file into {file stem: canonical class index}.

    Accepted: a CSV with a file column and a wnid or class-index column (``file,wnid,class_index``; Kaggle's
    ``LOC_val_solution.csv`` with ImageId,PredictionString), or lines ``<file> <wnid or sorted class index>``.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"labels file {str(file)!r} does not exist or is not a file.")
    lines = [ln for ln in file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"labels file {str(file)!r} is empty; expected one '<file> <wnid>' line per image.")
    labels: dict[str, int] = {}
    header = [h.strip().lower() for h in lines[0].split(",")]
    if "," in lines[0] and any(h in _FILE_COLUMNS for h in header):
        file_col = next(i for i, h in enumerate(header) if h in _FILE_COLUMNS)
        label_cols = [i for name in _LABEL_COLUMNS for i, h in enumerate(header) if h == name]
        if not label_cols:
            raise UserError(
                f"labels file {str(file)!r} has columns {', '.join(header)}; expected a wnid or class_index column."
            )
        for number, row in enumerate(csv.reader(lines[1:]), start=2):
            if not row:
                continue
            label = _label_value(row[label_cols[0]], f"labels file {file.name!r} line {number}")
            labels[PurePosixPath(row[file_col].strip()).stem] = label
        return labels
    first = lines[0].replace(",", " ").split()
    if len(first) == 1:
        raise UserError(
            f"labels file {str(file)!r} holds one value per line (like the official ground-truth file, whose "
            "numbering is not the sorted wnid order); expected lines '<file> <wnid>' or a CSV with file and wnid."
        )
    for number, line in enumerate(lines, start=1):
        parts = line.replace(",", " ").split()
        if len(parts) < 2:
            raise UserError(
                f"labels file {str(file)!r} line {number} has no label; expected '<file> <wnid>'."
            )
        labels[PurePosixPath(parts[0]).stem] = _label_value(
            parts[1], f"labels file {file.name!r} line {number}"
        )
    return labels


def _flat_samples(root: Path, files: list[str], labels: dict[str, int]) -> tuple[list[SampleRef], list]:
    samples: list[SampleRef] = []
    unlabelled: list[tuple[str, str]] = []
    for name in files:
        label = labels.get(PurePosixPath(name).stem)
        if label is None:
            unlabelled.append((name, "no label in labels file"))
        else:
            samples.append(SampleRef(root / name, label, name))
    return samples, unlabelled


def imagenet_val(
    root: str | Path,
    labels_file: str | Path | None = None,
    subset: str | None = None,
    limit: int | None = None,
) -> ImageListDataset:
    """The ImageNet validation set, ``<root>/<wnid>/*.JPEG`` or flat with a labels file; labels canonical."""
    path = check_root(root, "imagenet")
    dirs, files = list_class_dirs(path)
    unlabelled: list[tuple[str, str]] = []
    if not dirs and files:
        if labels_file is None:
            raise UserError(
                f"imagenet root {str(path)!r} holds {len(files)} images but no class folders; expected "
                f"{VAL_LAYOUT} (pass the labels file for the flat layout)."
            )
        samples, unlabelled = _flat_samples(path, files, read_val_labels(labels_file))
        if not samples:
            raise UserError(
                f"no image in {str(path)!r} has a label in {str(labels_file)!r}; expected matching names."
            )
        layout = "flat"
    else:
        path, samples = scan_wnid_folders(path, "imagenet", f"{path}/<wnid>/*.JPEG ({VAL_LAYOUT})")
        if labels_file is not None:
            labels = read_val_labels(labels_file)
            wrong = [
                s.sample_id
                for s in samples
                if labels.get(PurePosixPath(s.sample_id).stem, s.label) != s.label
            ]
            if wrong:
                raise UserError(
                    f"{len(wrong)} images of {str(path)!r} sit in a class folder that disagrees with "
                    f"{str(labels_file)!r} (first: {wrong[0]!r}); expected the same class in both."
                )
        layout = "folders"
    selected, missing = select_samples(samples, subset, limit)
    info = {"layout": layout, "subset": subset, "limit": limit}
    return ImageListDataset("imagenet", path, selected, missing=unlabelled + missing, info=info)


def _imagenet_200(name: str, root: str | Path, limit: int | None) -> ImageListDataset:
    wnids = subset_wnids(name)
    path, samples = scan_wnid_folders(
        root, name, f"{root}/<wnid>/<images> with the {len(wnids)} {name} class folders", wnids, name
    )
    limit = check_limit(limit)
    selected = samples if limit is None else samples[:limit]
    info = {"num_class_folders": len({s.label for s in samples}), "limit": limit}
    return ImageListDataset(name, path, selected, class_indices=class_mask(name), info=info)


def imagenet_a(root: str | Path, limit: int | None = None) -> ImageListDataset:
    """ImageNet-A (``<root>/<wnid>/*``), evaluated on the 1000 logits masked to its 200 classes."""
    return _imagenet_200("imagenet-a", root, limit)


def imagenet_r(root: str | Path, limit: int | None = None) -> ImageListDataset:
    """ImageNet-R (``<root>/<wnid>/*``), evaluated on the 1000 logits masked to its 200 classes."""
    return _imagenet_200("imagenet-r", root, limit)


def imagenet_o_detection(
    imagenet_o_root: str | Path,
    imagenet_val_root: str | Path,
    labels_file: str | Path | None = None,
    limit: int | None = None,
) -> ImageListDataset:
    """ImageNet-O OOD detection: ImageNet-O images are the positives (``is_ood``, label -1), ImageNet validation
    images of ImageNet-O's 200 classes the negatives; logits are masked to those 200 classes.

    ``limit`` caps each of the two sets. Score: negative max softmax probability over the 200 masked logits.
    """
    wnids = subset_wnids("imagenet-o")
    o_root, ood = scan_wnid_folders(
        imagenet_o_root,
        "imagenet-o",
        f"{imagenet_o_root}/<wnid>/<images> with the 200 ImageNet-O class folders",
        wnids,
        "imagenet-o",
    )
    val = imagenet_val(imagenet_val_root, labels_file)
    keep = {wnid_to_index()[w] for w in wnids}
    in_dist = [s for s in val.samples if s.label in keep]
    if not in_dist:
        raise UserError(
            f"imagenet root {str(val.root)!r} has no validation image of ImageNet-O's 200 classes; expected the "
            "ImageNet validation set as in-distribution data."
        )
    limit = check_limit(limit)
    if limit is not None:
        in_dist, ood = in_dist[:limit], ood[:limit]
    samples = [SampleRef(s.path, s.label, f"imagenet/{s.sample_id}") for s in in_dist]
    samples += [SampleRef(s.path, -1, f"imagenet-o/{s.sample_id}", is_ood=True) for s in ood]
    info = {
        "imagenet_val_root": str(val.root),
        "num_in_distribution": len(in_dist),
        "num_ood": len(ood),
        "limit": limit,
    }
    return ImageListDataset(
        "imagenet-o", o_root, samples, class_indices=class_mask("imagenet-o"), missing=val.missing, info=info
    )


#: Alias with the name the design notes use.
ImageNetODetection = imagenet_o_detection
