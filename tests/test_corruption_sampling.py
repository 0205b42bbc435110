"""The corruptions' random sampling: Poisson and bit-field samplers, the uint8 paths, glass blur's pixel chains."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from datagen import smooth_images

from robustbench_rpc.corruptions import corrupt
from robustbench_rpc.corruptions.api import EIGHT_BIT_PATHS
from robustbench_rpc.corruptions.blur import glass_source_indices


def test_noise_statistics_match_the_table() -> None:
    x = torch.full((1, 3, 128, 128), 0.5)
    y = corrupt(x, "gaussian_noise", 1, torch.Generator().manual_seed(0))
    assert abs(float((y - x).std()) - 0.08) < 0.003
    y = corrupt(x, "impulse_noise", 5, torch.Generator().manual_seed(0))
    assert abs(float((y != x).float().mean()) - 0.27) < 0.01
    assert set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}
    y = corrupt(x, "shot_noise", 5, torch.Generator().manual_seed(0))  # min(Poisson(1.5), 3) / 3
    want = sum(min(k, 3) * math.exp(-1.5) * 1.5**k / math.factorial(k) for k in range(40)) / 3
    assert abs(float(y.mean()) - want) < 0.01 and torch.allclose(y * 3, (y * 3).round(), atol=1e-5)


def test_8bit_poisson_sampler_has_the_poisson_law() -> None:
    from robustbench_rpc.corruptions.noise import poisson_8bit

    g = torch.Generator().manual_seed(0)
    n = 200_000
    for level, photons in [(200, 12.0), (255, 60.0), (3, 3.0), (0, 25.0)]:
        counts = poisson_8bit(torch.full((n,), level, dtype=torch.int32), photons, g).long()
        lam = level / 255 * photons
        freq = torch.bincount(counts, minlength=200).double() / n
        for k in range(int(lam + 6 * math.sqrt(lam) + 6)):
            p = math.exp(k * math.log(lam) - lam - math.lgamma(k + 1)) if lam > 0 else float(k == 0)
            assert abs(float(freq[k]) - p) <= 5 * math.sqrt(p * (1 - p) / n) + 3 / n, (level, photons, k)


def test_8bit_poisson_guide_table_gives_the_exact_inverse_cdf_count() -> None:
    from robustbench_rpc.corruptions.noise import poisson_8bit, poisson_tables

    levels = torch.arange(256, dtype=torch.int32).repeat(400)
    for photons in (60.0, 12.0, 3.0):
        counts = poisson_8bit(levels, photons, torch.Generator().manual_seed(2))
        u = torch.rand(levels.shape, generator=torch.Generator().manual_seed(2))  # the same draws
        cdf, guide, _ = poisson_tables(photons, torch.device("cpu"))
        want = (cdf[levels.long()] <= u[:, None]).sum(1)  # the count of each draw, searched in its whole row
        assert torch.equal(counts.long(), want), photons
        assert 0.5 < float((guide >= 0).float().mean()) < 1  # most buckets resolve without a search


def test_shot_noise_recognises_8bit_levels_however_they_were_divided() -> None:
    x8 = torch.arange(256, dtype=torch.uint8).repeat(3, 16).view(1, 3, 64, 64)
    quotient, product = x8.float() / 255, x8.float() * (1 / 255)  # CUDA divides by a scalar as the product
    assert not torch.equal(quotient, product)
    a = corrupt(quotient, "shot_noise", 3, torch.Generator().manual_seed(0))
    b = corrupt(product, "shot_noise", 3, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # both sampled from the exact 8-bit tables, with the same draws
    as_bytes = (a * 255 + 1e-3).to(torch.int32).to(torch.uint8)
    assert torch.equal(as_bytes, corrupt(x8, "shot_noise", 3, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
@pytest.mark.parametrize("name", sorted(EIGHT_BIT_PATHS))
def test_eight_bit_paths_give_the_bytes_of_the_float_path(name: str, device: str) -> None:
    x8 = (smooth_images(2, 40) * 255).round().to(torch.uint8)
    x8 = torch.cat([x8, torch.randint(0, 256, (2, 3, 40, 40), generator=torch.Generator().manual_seed(4),
                                      dtype=torch.uint8)]).to(device)
    for sev in range(1, 6):
        got = corrupt(x8, name, sev, torch.Generator().manual_seed(sev))
        y = corrupt(x8.float() / 255, name, sev, torch.Generator().manual_seed(sev)) * 255
        want = (y.round() if name == "jpeg_compression" else y + 1e-3).to(torch.int32).to(torch.uint8)
        assert torch.equal(got, want), (name, sev)
        assert not torch.equal(got, x8)


@pytest.mark.parametrize("bits", [2, 4, 6])
def test_random_bits_are_uniform_and_independent_within_a_word(bits: int) -> None:
    from robustbench_rpc.corruptions._common import random_bits

    n = 200_000
    v = random_bits(bits, n, torch.Generator().manual_seed(bits), torch.device("cpu"))
    assert v.dtype == torch.int32 and v.shape == (n,) and int(v.min()) == 0 and int(v.max()) == 2**bits - 1
    k = 2**bits
    v = v.long()
    counts = torch.bincount(v, minlength=k).double()
    chi2 = float(((counts - n / k) ** 2 / (n / k)).sum())
    assert chi2 < k + 6 * (2 * k) ** 0.5  # about 6 standard deviations of a chi-square with k - 1 dof
    # values cut from the same word (positions i and i + n / per_word) are independent: pair counts are flat
    per_word = 31 // bits
    words = -(-n // per_word)
    pairs = v[:words] * k + v[words : 2 * words]
    pair_counts = torch.bincount(pairs, minlength=k * k).double()
    expected = words / (k * k)
    chi2 = float(((pair_counts - expected) ** 2 / expected).sum())
    assert chi2 < k * k + 6 * (2 * k * k) ** 0.5


def test_glass_blur_chain_following_equals_the_sequential_loop() -> None:
    from robustbench_rpc.corruptions.blur import glass_offset_draws

    for h, w, d, batch, passes in [(15, 13, 2, 1, 1), (12, 17, 3, 3, 2), (9, 9, 1, 2, 3)]:
        maps = glass_source_indices(batch, h, w, d, torch.Generator().manual_seed(5), torch.device("cpu"), passes)
        g = torch.Generator().manual_seed(5)  # same draws, in the same order
        draws = [glass_offset_draws(batch, h, w, d, g, torch.device("cpu")).view(batch, h, w) for _ in range(passes)]
        for k, i in itertools.product(range(passes), range(batch)):
            dy, dx = draws[k] // (2 * d) - d, draws[k] % (2 * d) - d
            ptr = maps[k]
            src = np.arange(h * w).reshape(h, w)
            for yy in range(h - d, d, -1):  # the reference's visiting order, with its copy semantics
                for xx in range(w - d, d, -1):
                    src[yy, xx] = src[yy + dy[i, yy, xx], xx + dx[i, yy, xx]]
            assert np.array_equal(ptr[i].numpy(), src.reshape(-1))
            assert len(np.unique(src)) < h * w  # not a permutation: the reference's "swap" copies


def test_glass_blur_index_buffers_widen_to_int64_for_huge_batches(monkeypatch) -> None:
    import robustbench_rpc.corruptions.blur as blur

    def maps() -> torch.Tensor:
        return glass_source_indices(3, 19, 23, 2, torch.Generator().manual_seed(4), torch.device("cpu"), 3)

    narrow = maps()
    monkeypatch.setattr(blur, "INT32_INDEX_LIMIT", 3 * 3 * 19 * 23)  # as if this batch were too large for int32
    wide = maps()
    assert narrow.dtype == torch.int32 and wide.dtype == torch.int64 and torch.equal(narrow.long(), wide)
    x = smooth_images(2, 33)
    p = {"sigma": 1.0, "max_delta": 2, "iterations": 3}
    got = blur.glass_blur(x, p, torch.Generator().manual_seed(1))
    monkeypatch.setattr(blur, "INT32_INDEX_LIMIT", 2**31)
    assert torch.equal(got, blur.glass_blur(x, p, torch.Generator().manual_seed(1)))


def test_glass_blur_applies_its_passes_in_order() -> None:
    from robustbench_rpc.corruptions._common import gaussian_filter
    from robustbench_rpc.corruptions.blur import glass_blur, glass_offset_draws

    x = smooth_images(2, 20)
    p = {"sigma": 0.7, "max_delta": 2, "iterations": 3}
    got = glass_blur(x, p, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    draws = [glass_offset_draws(2, 20, 20, 2, g, torch.device("cpu")).view(2, 20, 20) for _ in range(3)]
    img = (torch.floor(gaussian_filter(x, 0.7) * 255.0).clamp(0, 255) / 255.0).permute(0, 2, 3, 1).numpy().copy()
    for r in draws:
        dy, dx = (r // 4 - 2).numpy(), (r % 4 - 2).numpy()
        for i in range(2):
            for yy in range(20 - 2, 2, -1):
                for xx in range(20 - 2, 2, -1):
                    img[i, yy, xx] = img[i, yy + dy[i, yy, xx], xx + dx[i, yy, xx]]
    want = gaussian_filter(torch.from_numpy(img).permute(0, 3, 1, 2), 0.7)
    assert torch.allclose(got, want, atol=1e-6)
