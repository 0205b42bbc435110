"""The shared names, one for one thing: ImageNet-C corruptions, dataset families, how a budget is written.

Importable from every subpackage (no heavy imports here): the data, the results' tidy frame and reporting's views
and report all use these, so a name is spelt once.
"""

from __future__ import annotations

import math

#: The 15 standard corruptions (mCE is computed over these), in the order of the ImageNet-C paper.
STANDARD_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
#: The 4 extra (held-out validation) corruptions released with ImageNet-C.
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
#: All 19, standard first.
ALL_CORRUPTIONS: tuple[str, ...] = STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS
#: The groups of the released tar files (and of ``--corruptions noise`` etc.).
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": STANDARD_CORRUPTIONS[0:3],
    "blur": STANDARD_CORRUPTIONS[3:7],
    "weather": STANDARD_CORRUPTIONS[7:11],
    "digital": STANDARD_CORRUPTIONS[11:15],
    "extra": EXTRA_CORRUPTIONS,
}
#: Corruption name -> its group.
GROUP_OF: dict[str, str] = {name: group for group, names in CORRUPTION_GROUPS.items() for name in names}

#: Condition of the per-model ImageNet-C summary rows of the tidy table.
SUMMARY_CONDITION = "imagenet-c-summary"
#: Datasets with a column of their own in the paper view (after :func:`dataset_family` normalisation).
SHIFT_DATASETS = ("imagenet-c", "imagenet-r", "imagenet-a", "imagenet-o")


def dataset_family(name: str) -> str:
    """Return ``imagenet-c``/``-r``/``-a``/``-o`` for those datasets (any spelling), else ``clean``."""
    canonical = str(name).lower().replace("_", "-").replace(" ", "-")
    return canonical if canonical in SHIFT_DATASETS else "clean"


def eps_text(eps: float | None, norm: str | None) -> str:
    """Return an attack budget as people write it: ``4/255`` for L-infinity, the plain number otherwise."""
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return ""
    if str(norm or "").lower() in ("linf", "l_inf", "inf", ""):
        return f"{float(eps) * 255:.4g}/255"
    return f"{float(eps):.4g}"

#: The attack name of the tidy table's per-sample worst case over the attacks run at one budget.
WORST_CASE = "worst-case"
