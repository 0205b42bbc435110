"""Severity tables of the ImageNet-C corruptions, as data (severity 1..5 -> parameters).

The values are those of the ImageNet-C definitions (Hendrycks & Dietterich, 2019) in the size-generalised form
of the `imagecorruptions` package, which is the reference these implementations are measured against. Each
entry names its parameters so that documentation can cite the table directly.
"""

from __future__ import annotations

from typing import Any

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# Every table maps a severity to a dict of named parameters.
SEVERITY_TABLES: dict[str, dict[int, dict[str, Any]]] = {
    # ---- noise ----
    "gaussian_noise": {
        s: {"std": v} for s, v in zip(SEVERITIES, (0.08, 0.12, 0.18, 0.26, 0.38), strict=True)
    },
    "shot_noise": {s: {"photons": v} for s, v in zip(SEVERITIES, (60, 25, 12, 5, 3), strict=True)},
    "impulse_noise": {
        s: {"amount": v} for s, v in zip(SEVERITIES, (0.03, 0.06, 0.09, 0.17, 0.27), strict=True)
    },
    "speckle_noise": {s: {"std": v} for s, v in zip(SEVERITIES, (0.15, 0.2, 0.35, 0.45, 0.6), strict=True)},
    # ---- blur ----
    "defocus_blur": {
        s: {"radius": r, "alias_blur": a}
        for s, (r, a) in zip(SEVERITIES, ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)), strict=True)
    },
    "glass_blur": {
        s: {"sigma": sg, "max_delta": d, "iterations": it}
        for s, (sg, d, it) in zip(
            SEVERITIES, ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2)), strict=False
        )
    },
    "motion_blur": {
        s: {"radius": r, "sigma": sg}
        for s, (r, sg) in zip(SEVERITIES, ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)), strict=True)
    },
    # zoom factors: numpy.arange(1, stop, step)
    "zoom_blur": {
        s: {"stop": stop, "step": step}
        for s, (stop, step) in zip(
            SEVERITIES, ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)), strict=False
        )
    },
    "gaussian_blur": {s: {"sigma": v} for s, v in zip(SEVERITIES, (1, 2, 3, 4, 6), strict=True)},
    # ---- weather ----
    "snow": {
        s: {
            "mean": m,
            "std": sd,
            "zoom": z,
            "threshold": t,
            "blur_radius": r,
            "blur_sigma": bs,
            "blend": bl,
        }
        for s, (m, sd, z, t, r, bs, bl) in zip(
            SEVERITIES,
            (
                (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
            ),
            strict=False,
        )
    },
    "frost": {
        s: {"image_weight": a, "frost_weight": b}
        for s, (a, b) in zip(
            SEVERITIES, ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)), strict=True
        )
    },
    "fog": {
        s: {"strength": a, "wibble_decay": d}
        for s, (a, d) in zip(
            SEVERITIES, ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)), strict=True
        )
    },
    "spatter": {
        s: {"mean": m, "std": sd, "sigma": sg, "threshold": t, "intensity": i, "mud": bool(mud)}
        for s, (m, sd, sg, t, i, mud) in zip(
            SEVERITIES,
            (
                (0.65, 0.3, 4, 0.69, 0.6, 0),
                (0.65, 0.3, 3, 0.68, 0.6, 0),
                (0.65, 0.3, 2, 0.68, 0.5, 0),
                (0.65, 0.3, 1, 0.65, 1.5, 1),
                (0.67, 0.4, 1, 0.65, 1.5, 1),
            ),
            strict=False,
        )
    },
    # ---- digital ----
    "brightness": {s: {"delta": v} for s, v in zip(SEVERITIES, (0.1, 0.2, 0.3, 0.4, 0.5), strict=True)},
    "contrast": {s: {"factor": v} for s, v in zip(SEVERITIES, (0.4, 0.3, 0.2, 0.1, 0.05), strict=True)},
    "saturate": {
        s: {"scale": a, "shift": b}
        for s, (a, b) in zip(SEVERITIES, ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)), strict=True)
    },
    # displacement field: smoothing sigma = 1% of each side, max displacement = 0.5% of the height
    "elastic_transform": {
        s: {"alpha": v}
        for s, v in zip(
            SEVERITIES, (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12), strict=True
        )
    },
    "pixelate": {s: {"scale": v} for s, v in zip(SEVERITIES, (0.6, 0.5, 0.4, 0.3, 0.25), strict=True)},
    "jpeg_compression": {s: {"quality": v} for s, v in zip(SEVERITIES, (25, 18, 15, 10, 7), strict=True)},
}


def severity_params(name: str, severity: int) -> dict[str, Any]:
    """Return the parameter dict of corruption ``name`` at ``severity`` (both assumed valid)."""
    return SEVERITY_TABLES[name][severity]
