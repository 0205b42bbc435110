"""Fidelity against the reference `imagecorruptions` on real images (skipped without reference or data)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("imagecorruptions", reason="reference imagecorruptions-imaug is not installed")

from robustbench_rpc.corruptions import CORRUPTIONS  # noqa: E402
from robustbench_rpc.corruptions.fidelity import DETERMINISTIC, compare, load_folder  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-val-100"
N_IMAGES = 40


@pytest.fixture(scope="module")
def images():
    if not DATA.is_dir():
        pytest.skip(f"real images not found at {DATA}")
    return load_folder(DATA, N_IMAGES)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_matches_reference(images, name: str) -> None:
    # frost draws one of six very different overlays per image: its mean needs many draws to settle
    repeats = 1 if name in DETERMINISTIC else (8 if name == "frost" else 3)
    rows = compare(images, [name], repeats=repeats)
    for r in rows:
        assert r.ssim_delta <= 0.02, (name, r.severity, r.ssim_ours, r.ssim_ref)
        assert r.psnr_delta <= 0.5, (name, r.severity, r.psnr_ours, r.psnr_ref)
        if name in DETERMINISTIC:
            assert r.mean_abs_diff is not None and r.mean_abs_diff <= 2.0, (name, r.severity, r.mean_abs_diff)
