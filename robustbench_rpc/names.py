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

#: ImageNet-C-bar's 10 corruptions (Mintun et al. 2021) and ImageNet-3DCC's 12 (Kar et al. 2022).
C_BAR_CORRUPTIONS: tuple[str, ...] = (
    "blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout", "cocentric_sine_waves",
    "inverse_sparkles", "perlin_noise", "plasma_noise", "single_frequency_greyscale", "sparkles",
)  # fmt: skip
THREEDCC_CORRUPTIONS: tuple[str, ...] = (
    "near_focus", "far_focus", "fog_3d", "flash", "color_quant", "low_light",
    "xy_motion_blur", "z_motion_blur", "iso_noise", "bit_error", "h265_abr", "h265_crf",
)  # fmt: skip
#: Corrupted datasets whose summary is the mean error over all their own corruptions (no AlexNet normalization).
CORRUPTION_SET_NAMES: dict[str, tuple[str, ...]] = {
    "imagenet-c-bar": C_BAR_CORRUPTIONS,
    "imagenet-3dcc": THREEDCC_CORRUPTIONS,
}

#: Condition of the per-model ImageNet-C summary rows of the tidy table.
SUMMARY_CONDITION = "imagenet-c-summary"
#: Datasets with a column of their own in the paper view (after :func:`dataset_family` normalisation).
SHIFT_DATASETS = ("imagenet-c", "imagenet-r", "imagenet-a", "imagenet-o", "imagenet-v2", "imagenet-sketch",
                  "stylized-imagenet", "objectnet", "imagenet-c-bar", "imagenet-3dcc")


def dataset_family(name: str) -> str:
    """Return the shift dataset's name (``imagenet-c``, ``-r``, ``-a``, ``-o``, ``-v2``, ``-sketch``,
    ``stylized-imagenet``, ``objectnet``, ``imagenet-c-bar``, ``imagenet-3dcc``; any spelling), else ``clean``."""
    canonical = str(name).lower().replace("_", "-").replace(" ", "-")
    return canonical if canonical in SHIFT_DATASETS else "clean"


#: The spellings of the L-infinity norm (a budget of this norm is written in 255ths).
LINF_NAMES = ("linf", "l_inf", "inf", "")


def eps_text(eps: float | None, norm: str | None = "Linf") -> str:
    """Return a budget as people write it: ``k/255`` for L-infinity budgets that are a multiple of 1/255 (to two
    decimals of k: ``4/255``, ``0.5/255``), the exact value (six significant digits) otherwise, e.g. L2's ``0.5``."""
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return ""
    value = float(eps)
    if str(norm or "").lower() in LINF_NAMES:
        scaled = value * 255
        nearest = round(scaled, 2)
        if abs(scaled - nearest) <= 1e-5 * max(1.0, abs(scaled)):
            return f"{nearest:g}/255"
    return f"{value:.6g}"


#: The attack name of the tidy table's per-sample worst case over the attacks run at one budget.
WORST_CASE = "worst-case"
