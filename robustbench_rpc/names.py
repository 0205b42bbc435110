"""The one list of ImageNet-C corruption names, shared by every subpackage (no heavy imports here)."""

from __future__ import annotations

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
