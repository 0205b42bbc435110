"""ImageNet-C-bar and ImageNet-3DCC in their released layouts: corrupted copies of the validation images.

- ImageNet-C-bar (Mintun et al. 2021, facebookresearch/augmentation-corruption ``make_imagenet_c_bar.py``):
  ``ImageNet-C-Bar/<corruption>/<severity parameter, two decimals>/<wnid>/*.JPEG``, 10 corruptions x 5 severities;
  a severity folder is named by the corruption's parameter value (``caustic_refraction/2.35``), not 1-5.
- ImageNet-3DCC (Kar et al. 2022): ``<root>/<corruption>/<1-5>/<wnid>/*.JPEG``, 12 corruptions x 5 severities,
  like ImageNet-C.

Both were made from the resized and center-cropped 224 x 224 validation images, so the transform only
center-crops (as for ImageNet-C). Their summary is the mean top-1 error over every cell (no AlexNet normalization).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from robustbench_rpc.data.base import ImageListDataset
from robustbench_rpc.data.folder import _preview, check_root, list_class_dirs, scan_wnid_folders
from robustbench_rpc.data.imagenet_c import parse_severities
from robustbench_rpc.data.selection import check_limit
from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.names import CORRUPTION_SET_NAMES

#: ImageNet-C-bar's corruptions and their five severity parameters (the release's ``imagenet_c_bar.csv``).
C_BAR_SEVERITIES: dict[str, tuple[float, ...]] = {
    "blue_noise_sample": (0.8, 1.6, 2.4, 4.0, 5.6),
    "brownish_noise": (1.0, 2.0, 3.0, 4.0, 5.0),
    "caustic_refraction": (2.35, 3.2, 4.9, 6.6, 9.15),
    "checkerboard_cutout": (2.0, 3.0, 4.0, 5.0, 6.0),
    "cocentric_sine_waves": (3.0, 5.0, 8.0, 9.0, 10.0),
    "inverse_sparkles": (1.0, 2.0, 4.0, 9.0, 10.0),
    "perlin_noise": (4.6, 5.2, 5.8, 7.6, 8.8),
    "plasma_noise": (4.75, 7.0, 8.5, 9.25, 10.0),
    "single_frequency_greyscale": (1.0, 1.5, 2.0, 4.5, 5.0),
    "sparkles": (1.0, 2.0, 3.0, 5.0, 6.0),
}
#: Dataset name -> its corruptions.
CORRUPTION_SETS: dict[str, tuple[str, ...]] = CORRUPTION_SET_NAMES
assert set(C_BAR_SEVERITIES) == set(CORRUPTION_SET_NAMES["imagenet-c-bar"])


def severity_folder(dataset: str, corruption: str, severity: int) -> str:
    """Return the folder name of severity 1-5 of ``corruption``: C-bar's parameter (``2.35``), else ``"3"``."""
    if dataset == "imagenet-c-bar":
        return f"{C_BAR_SEVERITIES[corruption][severity - 1]:.2f}"
    return str(severity)


def layout_of(dataset: str) -> str:
    """Return the released layout of a corruption set, for messages."""
    if dataset == "imagenet-c-bar":
        return "<root>/<corruption>/<severity parameter such as 2.35>/<wnid>/*.JPEG"
    return "<root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG"


def parse_set_corruptions(dataset: str, names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return the corruptions of ``dataset`` asked for (``all`` or None: every one)."""
    known = CORRUPTION_SETS[dataset]
    if names is None:
        return known
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]
    out: list[str] = []
    for name in filter(None, items):
        if name in ("all", "standard"):
            out.extend(known)
        elif name in known:
            out.append(name)
        else:
            raise UserError(f"Unknown {dataset} corruption {name!r}; expected some of {', '.join(known)}"
                            f"{did_you_mean(name, known)}.")
    return tuple(dict.fromkeys(out))


class CorruptionSet:
    """A released corruption set (ImageNet-C-bar or ImageNet-3DCC): cells of (corruption, severity 1-5)."""

    def __init__(self, dataset: str, root: str | Path, corruptions: str | Iterable[str] | None = None,
                 severities: str | Iterable[int] | None = None, limit: int | None = None,
                 allow_missing: bool = False) -> None:
        if dataset not in CORRUPTION_SETS:
            raise UserError(f"Unknown corruption set {dataset!r}; expected one of {', '.join(CORRUPTION_SETS)}.")
        self.name = dataset
        self.root = check_root(root, dataset)
        self.corruptions = parse_set_corruptions(dataset, corruptions)
        self.severities = parse_severities(severities)
        self.limit = check_limit(limit)
        wanted = [(c, s) for c in self.corruptions for s in self.severities]
        self._cells = [(c, s) for c, s in wanted if self._folder(c, s).is_dir()]
        missing = [(c, s) for c, s in wanted if (c, s) not in self._cells]
        if missing and (not allow_missing or not self._cells):
            raise UserError(self._missing_sentence(missing))

    def _folder(self, corruption: str, severity: int) -> Path:
        return self.root / corruption / severity_folder(self.name, corruption, severity)

    def _missing_sentence(self, missing: list[tuple[str, int]]) -> str:
        corruption, severity = missing[0]
        first = self.root / corruption
        expected = layout_of(self.name)
        found = list_class_dirs(self.root)[0]
        if not any(c in found for c in CORRUPTION_SETS[self.name]):
            return (f"{self.name} root {str(self.root)!r} has none of its corruption folders (found "
                    f"{_preview(found) if found else 'no folders'}); expected {expected}.")
        levels = list_class_dirs(first)[0] if first.is_dir() else []
        if self.name == "imagenet-c-bar" and levels and all(d.isdigit() for d in levels):
            params = ", ".join(severity_folder(self.name, corruption, s) for s in range(1, 6))
            return (f"imagenet-c-bar folder {str(first)!r} has severity folders {_preview(levels)}; expected the "
                    f"parameter values of the release ({params}), as in {expected}.")
        return (f"{self.name} root {str(self.root)!r} lacks {len(missing)} of the cells asked for (first: "
                f"{corruption} severity {severity}, folder {severity_folder(self.name, corruption, severity)!r}); "
                f"expected {expected} (--allow-missing evaluates the cells that exist).")

    def cells(self) -> list[tuple[str, int]]:
        """Return the (corruption, severity) cells present, in order."""
        return list(self._cells)

    def dataset(self, corruption: str, severity: int) -> ImageListDataset:
        """Return one cell's images, labelled by canonical class index."""
        folder = self._folder(corruption, severity)
        path, samples = scan_wnid_folders(folder, self.name, f"{folder}/<wnid>/*.JPEG ({layout_of(self.name)})")
        if self.limit is not None:
            samples = samples[: self.limit]
        info = {"corruption": corruption, "severity": severity, "folder": folder.name, "limit": self.limit}
        return ImageListDataset(self.name, path, samples, info=info)
