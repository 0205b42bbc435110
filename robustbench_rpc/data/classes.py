"""The canonical 1000 ImageNet classes, the published 200-class subsets (A, R, O) and logit masks over them.

Class indices always come from the sorted list of the 1000 ImageNet synsets (``n01440764`` = 0 ...
``n15075141`` = 999), never from the folders that happen to exist on disk.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib import resources

import torch
from torch import Tensor

from robustbench_rpc.errors import UserError, did_you_mean

_WNID_RE = re.compile(r"^n\d{8}$")

#: Dataset names that evaluate on a published 200-class subset, and their wnid list files.
SUBSET_CLASS_FILES: dict[str, str] = {
    "imagenet-a": "imagenet_a_wnids.txt",
    "imagenet-r": "imagenet_r_wnids.txt",
    "imagenet-o": "imagenet_o_wnids.txt",
}


def asset_text(name: str) -> str:
    """Return the text of a file shipped in ``robustbench_rpc/assets/imagenet/``."""
    return (resources.files("robustbench_rpc") / "assets" / "imagenet" / name).read_text(encoding="utf-8")


def is_wnid(name: str) -> bool:
    """Return True when ``name`` looks like a WordNet id (``n`` followed by 8 digits)."""
    return bool(_WNID_RE.match(name))


@lru_cache(maxsize=1)
def _synset_table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    wnids: list[str] = []
    names: list[str] = []
    for line in asset_text("synsets.txt").splitlines():
        if not line.strip():
            continue
        wnid, _, name = line.partition("\t")
        wnids.append(wnid.strip())
        names.append(name.strip())
    return tuple(wnids), tuple(names)


def imagenet_wnids() -> tuple[str, ...]:
    """Return the 1000 ImageNet wnids in canonical (sorted) index order."""
    return _synset_table()[0]


def imagenet_class_names() -> tuple[str, ...]:
    """Return the WordNet lemmas of the 1000 classes (e.g. ``"tench, Tinca tinca"``), in index order."""
    return _synset_table()[1]


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """Return the mapping from wnid to canonical class index (0-999)."""
    return {w: i for i, w in enumerate(imagenet_wnids())}


def class_index(wnid: str) -> int:
    """Return the canonical class index of ``wnid``, or raise UserError naming it."""
    try:
        return wnid_to_index()[wnid]
    except KeyError:
        raise UserError(
            f"{wnid!r} is not one of the 1000 ImageNet-1k wnids{did_you_mean(wnid, imagenet_wnids())}."
        ) from None


@cache
def subset_wnids(dataset: str) -> tuple[str, ...]:
    """Return the published 200 wnids of ``imagenet-a``, ``imagenet-r`` or ``imagenet-o`` (sorted)."""
    if dataset not in SUBSET_CLASS_FILES:
        raise UserError(
            f"dataset {dataset!r} has no published class subset; expected one of "
            f"{', '.join(SUBSET_CLASS_FILES)}{did_you_mean(dataset, SUBSET_CLASS_FILES)}."
        )
    return tuple(w for w in asset_text(SUBSET_CLASS_FILES[dataset]).split() if w)


def class_mask(dataset: str) -> Tensor | None:
    """Return the 1000-index positions (LongTensor, ascending) a dataset is evaluated on; None for all 1000."""
    if dataset not in SUBSET_CLASS_FILES:
        return None
    table = wnid_to_index()
    return torch.tensor(sorted(table[w] for w in subset_wnids(dataset)), dtype=torch.long)


def mask_logits(logits: Tensor, indices: Tensor | None) -> Tensor:
    """Return ``logits`` [B, 1000] with every class outside ``indices`` set to -inf.

    argmax / top-k / softmax of the result are then taken over the masked classes only, and predictions stay
    in the 1000-class index space: softmax over the result equals softmax over ``logits[:, indices]``. A ``[2, K]``
    ``indices`` merges classes: each group's maximum logit sits at its representative index (row 1), the rest -inf.
    """
    if indices is None:
        return logits
    if indices.ndim == 2:  # merged classes (ObjectNet): row 0 members, row 1 their group's representative
        members, groups = indices.to(logits.device)
        merged = torch.full_like(logits, float("-inf"))
        src = logits.index_select(-1, members)
        return merged.scatter_reduce(-1, groups.expand(*logits.shape[:-1], -1), src, "amax", include_self=True)
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[indices.to(logits.device)] = True
    return logits.masked_fill(~keep, float("-inf"))


def restrict_logits(logits: Tensor, indices: Tensor | None) -> Tensor:
    """Return ``logits[:, indices]`` (the 200 masked logits), or ``logits`` unchanged when indices is None."""
    if indices is None:
        return logits
    return logits.index_select(-1, indices.to(logits.device))


def robustbench_5k_ids() -> tuple[str, ...]:
    """Return RobustBench's 5,000 ImageNet evaluation images as ``wnid/ILSVRC2012_val_XXXXXXXX.JPEG`` paths."""
    return tuple(
        line.strip() for line in asset_text("robustbench_imagenet_5000_ids.txt").splitlines() if line.strip()
    )


#: Named subsets accepted by ``--subset``.
SUBSETS = ("robustbench-5k",)


def subset_ids(name: str) -> tuple[str, ...]:
    """Return the relative paths of a named subset (``robustbench-5k``)."""
    if name == "robustbench-5k":
        return robustbench_5k_ids()
    raise UserError(
        f"unknown subset {name!r}; expected one of {', '.join(SUBSETS)}{did_you_mean(name, SUBSETS)}."
    )
