"""Paired statistics: McNemar's exact test, the paired bootstrap intervals and the weighted AUPR."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from robustbench_rpc.metrics import ood
from robustbench_rpc.metrics.paired import (
    bootstrap_accuracy_difference,
    bootstrap_aupr_difference,
    mcnemar_exact,
    weighted_aupr,
)


@pytest.mark.parametrize(
    ("only_base", "only_model", "both"), [(0, 6, 10), (4, 6, 3), (7, 2, 0), (13, 25, 40)]
)
def test_mcnemar_matches_scipy_binomtest(only_base: int, only_model: int, both: int) -> None:
    base = [True] * only_base + [False] * only_model + [True] * both + [False] * 5
    model = [False] * only_base + [True] * only_model + [True] * both + [False] * 5
    expected = binomtest(only_base, only_base + only_model, 0.5).pvalue
    assert mcnemar_exact(base, model) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    assert mcnemar_exact([True, False, True], [True, False, True]) == 1.0


def test_bootstrap_accuracy_has_the_distribution_of_resampled_pairs() -> None:
    rng = np.random.default_rng(11)
    base = rng.random(300) < 0.6
    model = rng.random(300) < 0.7
    low, high = bootstrap_accuracy_difference(base, model, resamples=20000, seed=5)
    # reference: resample the pairs themselves
    draws = np.random.default_rng(6).integers(0, 300, size=(20000, 300))
    diffs = (model[draws].mean(axis=1) - base[draws].mean(axis=1)) * 100.0
    ref_low, ref_high = np.percentile(diffs, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=0.5) and high == pytest.approx(ref_high, abs=0.5)
    # and the normal approximation of the paired difference
    delta = model.astype(float) - base.astype(float)
    half_width = 1.96 * delta.std() / np.sqrt(len(delta)) * 100.0
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.05)
    assert bootstrap_accuracy_difference(base, model, resamples=20000, seed=5) == (low, high)


def test_bootstrap_accuracy_one_sided_pairs_is_binomial() -> None:
    # 6 of 40 pairs favour the model, none the baseline: the resampled difference is Binomial(40, 6/40) / 40
    base = np.array([i < 30 for i in range(40)])
    model = np.array([i < 36 for i in range(40)])
    low, high = bootstrap_accuracy_difference(base, model, resamples=4000, seed=0, level=0.9)
    assert low == pytest.approx(100 * binom.ppf(0.05, 40, 0.15) / 40, abs=2.5)
    assert high == pytest.approx(100 * binom.ppf(0.95, 40, 0.15) / 40, abs=2.5)
    assert low >= 0.0


def test_bootstrap_aupr_chunks_give_the_same_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    import robustbench_rpc.metrics.paired as paired_module

    rng = np.random.default_rng(1)
    positive = rng.random(50) < 0.5
    weak, strong = rng.normal(size=50), rng.normal(size=50) + positive
    whole = bootstrap_aupr_difference(positive, weak, strong, resamples=300, seed=1)
    monkeypatch.setattr(paired_module, "_CHUNK_ELEMENTS", 50 * 7)  # 7 resamples per chunk
    assert bootstrap_aupr_difference(positive, weak, strong, resamples=300, seed=1) == pytest.approx(whole)


def test_weighted_aupr_equals_aupr_of_the_resample() -> None:
    rng = np.random.default_rng(2)
    positive = rng.random(60) < 0.4
    score = np.round(rng.normal(size=60) + positive, 1)  # rounding makes ties
    for seed in range(5):
        idx = np.random.default_rng(seed).integers(0, 60, size=60)
        counts = np.bincount(idx, minlength=60)
        expected = ood.aupr(positive[idx], score[idx])
        assert weighted_aupr(positive, score, counts[None, :])[0] == pytest.approx(expected)
    assert weighted_aupr(positive, score, np.ones((1, 60)))[0] == pytest.approx(ood.aupr(positive, score))


def test_bootstrap_aupr_interval_brackets_the_difference() -> None:
    rng = np.random.default_rng(4)
    positive = rng.random(200) < 0.5
    weak = rng.normal(size=200) + 0.5 * positive
    strong = rng.normal(size=200) + 2.0 * positive
    diff = 100.0 * (ood.aupr(positive, strong) - ood.aupr(positive, weak))
    low, high = bootstrap_aupr_difference(positive, weak, strong, resamples=400, seed=0)
    assert 0.0 < low < diff < high
    assert bootstrap_aupr_difference(positive, weak, strong, resamples=400, seed=0) == (low, high)
