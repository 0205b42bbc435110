"""Fidelity of our corruptions against the reference ``imagecorruptions`` (a test/benchmark dependency only).

Both implementations corrupt the same clean 8-bit images; we compare the mean SSIM and PSNR of
(clean, corrupted) pairs, and for the deterministic corruptions the corrupted images themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustbench_rpc.corruptions.api import CORRUPTIONS, corrupt
from robustbench_rpc.corruptions.severity import SEVERITIES

# Corruptions with no randomness: the reference's images must be reproduced, not only their statistics.
DETERMINISTIC = (
    "brightness",
    "contrast",
    "saturate",
    "defocus_blur",
    "gaussian_blur",
    "zoom_blur",
    "pixelate",
    "jpeg_compression",
)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


def center_crop_resized(path: Path, resize: int | None = 256, crop: int | None = 224) -> np.ndarray:
    """Decode an image as RGB, resize its shorter side to ``resize`` (bilinear) and centre-crop ``crop``.

    This is how ImageNet-C was prepared (torchvision's Resize(256) + CenterCrop(224) on PIL images);
    ``None`` skips a step. Returns uint8 [H, W, 3].
    """
    from PIL import Image

    with Image.open(path) as im:
        img = im.convert("RGB")
    if resize is not None:
        w, h = img.size
        if w <= h:
            size = (resize, max(1, int(resize * h / w)))
        else:
            size = (max(1, int(resize * w / h)), resize)
        img = img.resize(size, Image.BILINEAR)
    if crop is not None:
        w, h = img.size
        top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
        img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8).copy()


def load_folder(folder: Path, limit: int | None = None) -> torch.Tensor:
    """Load the images of an ImageFolder tree (sorted) prepared as ImageNet-C: uint8 [N, 3, 224, 224]."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    arrays = [center_crop_resized(p) for p in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per image of uint8 batches [B, 3, H, W] (Gaussian window sigma 1.5, 11 taps, channel mean)."""
    from robustbench_rpc.corruptions._common import gaussian_filter

    x, y = a.float(), b.float()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return gaussian_filter(t, 1.5, mode="reflect101", truncate=3.5)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.double().mean((1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of uint8 batches (capped at 100 dB for identical images)."""
    mse = ((a.double() - b.double()) ** 2).mean((1, 2, 3))
    return torch.where(
        mse > 0, 10 * torch.log10(255.0**2 / mse.clamp_min(1e-12)), torch.full_like(mse, 100.0)
    )


def reference_corrupt(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """Corrupt uint8 images one by one with the reference package (seeding numpy's global generator)."""
    from imagecorruptions import corrupt as ref_corrupt

    np.random.seed(seed)
    out = [ref_corrupt(img.permute(1, 2, 0).numpy(), severity, name) for img in images]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


@dataclass
class FidelityRow:
    """One (corruption, severity) comparison."""

    corruption: str
    severity: int
    ssim_ours: float
    ssim_ref: float
    psnr_ours: float
    psnr_ref: float
    mean_abs_diff: float | None  # ours vs reference images, 8-bit levels (deterministic corruptions only)

    @property
    def ssim_delta(self) -> float:
        """Absolute difference of the mean SSIMs."""
        return abs(self.ssim_ours - self.ssim_ref)

    @property
    def psnr_delta(self) -> float:
        """Absolute difference of the mean PSNRs (dB)."""
        return abs(self.psnr_ours - self.psnr_ref)


FROST_REPEATS = 8


def compare(
    images: torch.Tensor,
    names: list[str] | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 25,
) -> list[FidelityRow]:
    """Compare ours with the reference on uint8 ``images`` for each corruption and severity.

    Random corruptions are run ``repeats`` times on both sides (different draws) to shrink sampling noise;
    frost at least ``FROST_REPEATS`` times, because each image draws one of six very different overlays.
    """
    rows = []
    gen = torch.Generator().manual_seed(seed)
    for name in names or list(CORRUPTIONS):
        reps = 1 if name in DETERMINISTIC else (max(repeats, FROST_REPEATS) if name == "frost" else repeats)
        for sev in severities:
            s_o, s_r, p_o, p_r, mad = [], [], [], [], []
            for r in range(reps):
                ref = reference_corrupt(images, name, sev, seed + 1000 * r + sev)
                ours = torch.cat([corrupt(b, name, sev, gen) for b in images.split(batch_size)])
                s_o.append(ssim(images, ours))
                s_r.append(ssim(images, ref))
                p_o.append(psnr(images, ours))
                p_r.append(psnr(images, ref))
                if name in DETERMINISTIC:
                    mad.append(float((ours.double() - ref.double()).abs().mean()))
            rows.append(
                FidelityRow(
                    name,
                    sev,
                    float(torch.cat(s_o).mean()),
                    float(torch.cat(s_r).mean()),
                    float(torch.cat(p_o).mean()),
                    float(torch.cat(p_r).mean()),
                    sum(mad) / len(mad) if mad else None,
                )
            )
    return rows


def format_table(rows: list[FidelityRow]) -> str:
    """Render rows as a fixed-width text table."""
    head = (
        f"{'corruption':<18} {'sev':>3} {'SSIM ours':>9} {'SSIM ref':>9} {'dSSIM':>7} "
        f"{'PSNR ours':>9} {'PSNR ref':>9} {'dPSNR':>6} {'MAD/255':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mad = "" if r.mean_abs_diff is None else f"{r.mean_abs_diff:.3f}"
        lines.append(
            f"{r.corruption:<18} {r.severity:>3} {r.ssim_ours:>9.4f} {r.ssim_ref:>9.4f} {r.ssim_delta:>7.4f} "
            f"{r.psnr_ours:>9.2f} {r.psnr_ref:>9.2f} {r.psnr_delta:>6.2f} {mad:>8}"
        )
    return "\n".join(lines)


def worst_by_corruption(rows: list[FidelityRow]) -> dict[str, tuple[float, float, float]]:
    """Worst (SSIM delta, PSNR delta, image MAD) over severities, per corruption."""
    out: dict[str, tuple[float, float, float]] = {}
    for r in rows:
        s, p, m = out.get(r.corruption, (0.0, 0.0, -math.inf))
        mad = r.mean_abs_diff if r.mean_abs_diff is not None else -math.inf
        out[r.corruption] = (max(s, r.ssim_delta), max(p, r.psnr_delta), max(m, mad))
    return out
