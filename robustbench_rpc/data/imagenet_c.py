"""ImageNet-C in its released layout ``<root>/<corruption>/<severity>/<wnid>/*.JPEG``.

The released images are 224 x 224 already, so the transform only center-crops (``resize=False``).
Each (corruption, severity) is one cell; :meth:`ImageNetC.dataset` scans one cell's folder on demand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from robustbench_rpc.data.base import ImageListDataset, fingerprint_paths
from robustbench_rpc.data.classes import SUBSETS
from robustbench_rpc.data.folder import check_root, scan_wnid_folders
from robustbench_rpc.data.selection import check_limit, select_samples
from robustbench_rpc.errors import UserError, did_you_mean
from robustbench_rpc.names import ALL_CORRUPTIONS, EXTRA_CORRUPTIONS, GROUP_OF, STANDARD_CORRUPTIONS

#: Names re-exported here for the data layer: ``CORRUPTIONS`` are the 15 standard ones (mCE is over these).
CORRUPTIONS: tuple[str, ...] = STANDARD_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
#: The group folders of the released tar files, accepted as an extra level (``<root>/noise/gaussian_noise/3``).
CORRUPTION_GROUPS: dict[str, str] = GROUP_OF

LAYOUT = "<root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG"


def parse_corruptions(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return corruption names from a list or comma-separated string; ``all`` = 19, ``standard``/None = 15."""
    if names is None:
        return CORRUPTIONS
    items = (
        [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    )
    out: list[str] = []
    for name in items:
        if not name:
            continue
        if name == "all":
            out.extend(ALL_CORRUPTIONS)
        elif name in ("standard", "common"):
            out.extend(CORRUPTIONS)
        elif name == "extra":
            out.extend(EXTRA_CORRUPTIONS)
        elif name in ALL_CORRUPTIONS:
            out.append(name)
        else:
            raise UserError(
                f"unknown corruption {name!r}; expected ImageNet-C names such as 'gaussian_noise', or 'all'"
                f"{did_you_mean(name, ALL_CORRUPTIONS)}."
            )
    if not out:
        raise UserError("no corruption selected; expected names such as 'gaussian_noise,fog' or 'all'.")
    return tuple(dict.fromkeys(out))


def parse_severities(values: str | Iterable[int] | None) -> tuple[int, ...]:
    """Return severities from a list or a string such as ``"1,3,5"`` or ``"1-5"``; None = 1-5."""
    if values is None:
        return SEVERITIES
    tokens = values.replace(" ", "").split(",") if isinstance(values, str) else [str(v) for v in values]
    out: list[int] = []
    for token in tokens:
        if not token:
            continue
        try:
            if "-" in token:
                lo, hi = (int(t) for t in token.split("-", 1))
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(token))
        except ValueError:
            raise UserError(
                f"severity {token!r} is not a number; expected integers 1-5 such as '1,3,5'."
            ) from None
    bad = [s for s in out if s not in SEVERITIES]
    if bad or not out:
        raise UserError(f"severity {bad[0] if bad else values!r} is out of range; expected integers 1-5.")
    return tuple(sorted(set(out)))


class ImageNetC:
    """The cells (corruption, severity) of an ImageNet-C root, with a dataset per cell.

    Missing corruptions or severities raise a UserError that names them, unless ``allow_missing`` is set, in
    which case only what exists is evaluated (:attr:`missing_cells` lists the rest).
    """

    def __init__(
        self,
        root: str | Path,
        corruptions: str | Iterable[str] | None = None,
        severities: str | Iterable[int] | None = None,
        subset: str | None = None,
        limit: int | None = None,
        allow_missing: bool = False,
    ) -> None:
        self.root = check_root(root, "imagenet-c")
        self.corruptions = parse_corruptions(corruptions)
        self.severities = parse_severities(severities)
        if subset is not None and subset not in SUBSETS:
            raise UserError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}.")
        self.subset = subset
        self.limit = check_limit(limit)
        self.allow_missing = allow_missing
        self._dirs: dict[tuple[str, int], Path] = {}
        self.missing_cells: list[tuple[str, int]] = []
        for corruption in self.corruptions:
            base = self._corruption_dir(corruption)
            for severity in self.severities:
                cell = base / str(severity) if base is not None else None
                if cell is not None and cell.is_dir():
                    self._dirs[(corruption, severity)] = cell
                else:
                    self.missing_cells.append((corruption, severity))
        self._check_missing()

    def _corruption_dir(self, corruption: str) -> Path | None:
        for candidate in (self.root / corruption, self.root / CORRUPTION_GROUPS[corruption] / corruption):
            if candidate.is_dir():
                return candidate
        return None

    def _describe_missing(self) -> str:
        parts = []
        for corruption in self.corruptions:
            sev = [s for c, s in self.missing_cells if c == corruption]
            if len(sev) == len(self.severities):
                parts.append(f"{corruption} (all selected severities)")
            elif sev:
                parts.append(f"{corruption} severities {', '.join(map(str, sev))}")
        return "; ".join(parts)

    def _check_missing(self) -> None:
        if not self._dirs:
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "") if found else "no folders"
            raise UserError(
                f"imagenet-c root {str(self.root)!r} holds none of the selected corruptions (found: {shown}); "
                f"expected {LAYOUT}."
            )
        if self.missing_cells and not self.allow_missing:
            raise UserError(
                f"imagenet-c root {str(self.root)!r} is missing {self._describe_missing()}; select what exists with "
                "--corruptions/--severities or pass --allow-missing to evaluate only what exists."
            )

    def cells(self) -> list[tuple[str, int]]:
        """Return the (corruption, severity) cells that exist, in corruption then severity order."""
        return [(c, s) for c in self.corruptions for s in self.severities if (c, s) in self._dirs]

    def dataset(self, corruption: str, severity: int) -> ImageListDataset:
        """Return the images of one cell, labelled by canonical class index, subset and limit applied."""
        key = (corruption, int(severity))
        if key not in self._dirs:
            raise UserError(
                f"imagenet-c cell {corruption} severity {severity} is not available under {str(self.root)!r}; "
                f"expected one of the selected, existing cells."
            )
        where = self._dirs[key]
        _, samples = scan_wnid_folders(where, f"imagenet-c {corruption}/{severity}", f"{where}/<wnid>/*.JPEG")
        selected, missing = select_samples(samples, self.subset, self.limit)
        info = {
            "corruption": corruption,
            "severity": int(severity),
            "subset": self.subset,
            "limit": self.limit,
        }
        return ImageListDataset("imagenet-c", where, selected, missing=missing, info=info)

    def fingerprint(self) -> dict:
        """Return root and the cells present (no file scan: cheap); per-cell fingerprints come from datasets."""
        cells = [f"{c}/{s}" for c, s in self.cells()]
        return fingerprint_paths("imagenet-c", self.root, cells, {"unit": "cells", "subset": self.subset})

    def __repr__(self) -> str:
        return (
            f"ImageNetC(root={str(self.root)!r}, cells={len(self._dirs)}, missing={len(self.missing_cells)})"
        )


def imagenet_c_severity_table(cells: Sequence[tuple[str, int]]) -> dict[str, list[int]]:
    """Group (corruption, severity) cells into {corruption: [severities]}."""
    table: dict[str, list[int]] = {}
    for corruption, severity in cells:
        table.setdefault(corruption, []).append(severity)
    return table
