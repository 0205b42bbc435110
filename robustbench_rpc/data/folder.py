"""Scanning ImageFolder trees (``<root>/<class>/*``) into labelled samples, with layout checks for people."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from robustbench_rpc.data.base import ImageListDataset, SampleRef
from robustbench_rpc.data.classes import is_wnid, wnid_to_index
from robustbench_rpc.data.decode import is_image_file
from robustbench_rpc.errors import UserError
from robustbench_rpc.names import ALL_CORRUPTIONS, CORRUPTION_GROUPS

#: The 15 standard ImageNet-C corruptions and the 4 extra ones (used here only to recognise a wrong layout).
_IMAGENET_C_NAMES = set(ALL_CORRUPTIONS) | set(CORRUPTION_GROUPS)


def _preview(names: Collection[str], n: int = 4) -> str:
    items = sorted(names)
    text = ", ".join(repr(x) for x in items[:n])
    return text + (f" and {len(items) - n} more" if len(items) > n else "")


def check_root(root: str | Path, what: str) -> Path:
    """Return ``root`` as a Path after checking that it is an existing folder."""
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise UserError(f"{what} root {str(path)!r} does not exist.")
    if not path.is_dir():
        raise UserError(f"{what} root {str(path)!r} is a file; expected a folder.")
    return path


def list_class_dirs(root: Path) -> tuple[list[str], list[str]]:
    """Return (visible sub-folder names, image file names directly in ``root``), both sorted."""
    dirs: list[str] = []
    files: list[str] = []
    with os.scandir(root) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                dirs.append(entry.name)
            elif is_image_file(entry.name):
                files.append(entry.name)
    return sorted(dirs), sorted(files)


def list_images(folder: Path) -> list[Path]:
    """Return the image files under ``folder`` (recursively, following links), sorted by relative path."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if is_image_file(f) and not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _layout_error(what: str, root: Path, expected: str, dirs: list[str], files: list[str]) -> UserError:
    if not dirs and not files:
        return UserError(f"{what} root {str(root)!r} is empty; expected {expected}.")
    if not dirs:
        return UserError(
            f"{what} root {str(root)!r} holds {len(files)} image files but no class folders; expected {expected}"
            " (for the flat ImageNet validation layout, also give a labels file)."
        )
    corruption_like = [d for d in dirs if d in _IMAGENET_C_NAMES]
    if corruption_like and len(corruption_like) == len(dirs):
        return UserError(
            f"{what} root {str(root)!r} holds corruption folders ({_preview(corruption_like)}), the ImageNet-C "
            f"layout; expected {expected} (use the imagenet-c dataset for this folder)."
        )
    bad = [d for d in dirs if not is_wnid(d)]
    return UserError(
        f"{what} root {str(root)!r} has {len(bad)} folders that are not ImageNet wnids ({_preview(bad)}); "
        f"expected {expected}."
    )


def scan_wnid_folders(
    root: str | Path,
    what: str,
    expected: str | None = None,
    allowed_wnids: Collection[str] | None = None,
    allowed_label: str = "",
) -> tuple[Path, list[SampleRef]]:
    """Scan ``<root>/<wnid>/*`` into samples labelled by canonical 1000-class index.

    A partial class set is fine; folders that are not wnids, wnids outside ``allowed_wnids``, empty class
    folders and a wrong layout raise one-sentence UserErrors that say what was expected and what was found.
    """
    expected = expected or f"{root}/<wnid>/<image files>"
    path = check_root(root, what)
    dirs, files = list_class_dirs(path)
    if not dirs or any(not is_wnid(d) for d in dirs):
        raise _layout_error(what, path, expected, dirs, files)
    table = wnid_to_index()
    unknown = [d for d in dirs if d not in table]
    if unknown:
        raise UserError(
            f"{what} root {str(path)!r} has folders that look like wnids but are not ImageNet-1k classes "
            f"({_preview(unknown)}); expected {expected}."
        )
    if allowed_wnids is not None:
        allowed = set(allowed_wnids)
        outside = [d for d in dirs if d not in allowed]
        if outside:
            raise UserError(
                f"{what} root {str(path)!r} has {len(outside)} class folders outside the {len(allowed)} "
                f"{allowed_label or what} classes ({_preview(outside)}); expected only those classes."
            )
    return path, _class_samples(path, dirs, table, what)


def _class_samples(path: Path, dirs: Sequence[str], labels: Mapping[str, int], what: str) -> list[SampleRef]:
    """List the images of each class folder with the folder's label; an empty class folder is an error."""
    samples: list[SampleRef] = []
    empty: list[str] = []
    for name in dirs:
        images = list_images(path / name)
        if not images:
            empty.append(name)
        samples.extend(SampleRef(p, labels[name], p.relative_to(path).as_posix()) for p in images)
    if empty:
        raise UserError(
            f"{what} root {str(path)!r} has {len(empty)} empty class folders ({_preview(empty)}); "
            "expected at least one image file in each."
        )
    return samples


def read_class_list(path: str | Path) -> tuple[dict[str, int], int]:
    """Read a user class list; return (folder -> label, number of classes).

    Lines ``<folder> <wnid or index>`` map folders onto the 1000 ImageNet classes; a list of single names gives
    the folders in label order (label = position in the list, from 0; the model then has that many classes).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"class list {str(file)!r} does not exist or is not a file.")
    mapping: dict[str, int] = {}
    kinds: set[int] = set()
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) == 1:
            mapping[parts[0]] = len(mapping)
        elif len(parts) == 2:
            target = parts[1]
            if is_wnid(target):
                if target not in wnid_to_index():
                    raise UserError(
                        f"class list {str(file)!r} line {number}: {target!r} is not an ImageNet wnid."
                    )
                mapping[parts[0]] = wnid_to_index()[target]
            elif target.isdigit() and int(target) < 1000:
                mapping[parts[0]] = int(target)
            else:
                raise UserError(
                    f"class list {str(file)!r} line {number}: {target!r} is neither a wnid nor a class index 0-999."
                )
        else:
            raise UserError(
                f"class list {str(file)!r} line {number} has {len(parts)} fields; expected '<folder>' or "
                "'<folder> <wnid or index>'."
            )
        kinds.add(len(parts))
    if not mapping:
        raise UserError(f"class list {str(file)!r} is empty; expected one class folder name per line.")
    if len(kinds) > 1:
        raise UserError(
            f"class list {str(file)!r} mixes '<folder>' and '<folder> <wnid or index>' lines; expected one form."
        )
    return mapping, (len(mapping) if kinds == {1} else 1000)


def scan_mapped_folders(
    root: str | Path, classes: Mapping[str, int], what: str = "folder"
) -> tuple[Path, list]:
    """Scan ``<root>/<class>/*`` where folder names map to labels through ``classes``."""
    path = check_root(root, what)
    dirs, files = list_class_dirs(path)
    if not dirs:
        raise _layout_error(what, path, f"{path}/<class>/<image files>", dirs, files)
    unknown = [d for d in dirs if d not in classes]
    if unknown:
        raise UserError(
            f"{what} root {str(path)!r} has {len(unknown)} folders not in the class list ({_preview(unknown)}); "
            f"expected only {_preview(list(classes))}."
        )
    return path, _class_samples(path, dirs, classes, what)


def folder_dataset(
    root: str | Path, class_list: str | Path | Mapping[str, int] | None = None
) -> ImageListDataset:
    """Build an ImageFolder dataset whose class folders are wnids, or are mapped by a user class list."""
    if class_list is None:
        path, samples = scan_wnid_folders(root, "folder")
        return ImageListDataset("folder", path, samples, info={"classes": "imagenet-1k wnids"})
    if isinstance(class_list, Mapping):
        classes = dict(class_list)
        num_classes = max(1000, max(classes.values(), default=0) + 1)
    else:
        classes, num_classes = read_class_list(class_list)
    path, samples = scan_mapped_folders(root, classes)
    source = str(class_list) if not isinstance(class_list, Mapping) else "mapping"
    return ImageListDataset("folder", path, samples, num_classes=num_classes, info={"classes": source})
