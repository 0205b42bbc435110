"""Paired statistics of two models on the same samples: McNemar's exact test, paired bootstrap intervals.

Pure numpy/scipy functions of per-sample arrays (no I/O, no records, no stores). The accuracy bootstrap draws
multinomial counts of the three kinds of pairs (cost independent of the sample count); the AUPR bootstrap draws
sample indices in chunks so that a large cell with 2 000 resamples never holds more than about four million
indices at once. :func:`weighted_aupr` is :func:`robustbench_rpc.metrics.ood.aupr` for a batch of sample weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Resamples of the paired bootstrap unless told otherwise.
DEFAULT_RESAMPLES = 2000
#: Largest resamples x samples block drawn at once.
_CHUNK_ELEMENTS = 1 << 22


def _bool_array(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    return array.astype(bool)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired arrays differ in length ({len(a)} and {len(b)})")
    if len(a) == 0:
        raise ValueError("paired statistics need at least one sample")


def mcnemar_exact(baseline_correct: Any, model_correct: Any) -> float:
    """Return the two-sided exact McNemar p-value: a binomial test (p = 1/2) on the discordant pairs."""
    from scipy.stats import binom

    base = _bool_array(baseline_correct, "baseline_correct")
    model = _bool_array(model_correct, "model_correct")
    _check_pair(base, model)
    only_base = int(np.sum(base & ~model))
    only_model = int(np.sum(~base & model))
    discordant = only_base + only_model
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(only_base, only_model), discordant, 0.5)))


def _resample_chunks(n: int, resamples: int, seed: int) -> Any:
    """Yield blocks of bootstrap indices of shape [chunk, n] from one seeded generator."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_ELEMENTS // max(n, 1)))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_accuracy_difference(
    baseline_correct: Any,
    model_correct: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Return the percentile bootstrap interval of accuracy(model) - accuracy(baseline), in points (%).

    The per-sample difference takes only the values +1 (only the model right), -1 (only the baseline
    right) and 0, so the difference of a resample of n pairs depends only on how many of each it drew: a
    multinomial draw with the observed proportions has exactly the distribution of resampling the pairs, at
    O(resamples) cost instead of O(resamples x n).
    """
    base = _bool_array(baseline_correct, "baseline_correct")
    model = _bool_array(model_correct, "model_correct")
    _check_pair(base, model)
    n = len(base)
    only_model = int(np.sum(model & ~base))
    only_base = int(np.sum(base & ~model))
    proportions = np.array([only_model, only_base, n - only_model - only_base], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, proportions, size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    return _interval(diffs * 100.0, level)


def weighted_aupr(is_ood: Any, score: Any, weights: Any) -> np.ndarray:
    """Return the average precision (OOD positive) for each row of sample ``weights`` [B, n].

    Integer weights give the AUPR of the sample repeated that many times, so a bootstrap resample is a row of
    counts; the definition is that of :func:`robustbench_rpc.metrics.ood.aupr` (step-wise, ties grouped). Rows
    without positives or without negatives give NaN.
    """
    positive = np.asarray(is_ood).astype(bool)
    values = np.asarray(score, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(-values, kind="mergesort")
    sorted_values = values[order]
    w = w[:, order]
    pos = positive[order]
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_values))[0], len(sorted_values) - 1]
    tps = np.cumsum(w * pos, axis=1)[:, last_of_tie]
    fps = np.cumsum(w * ~pos, axis=1)[:, last_of_tie]
    total_pos = tps[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        recall = tps / total_pos
    steps = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    ap = np.sum(steps * precision, axis=1)
    ap[(total_pos[:, 0] == 0) | (fps[:, -1] == 0)] = np.nan
    return ap


def bootstrap_aupr_difference(
    is_ood: Any,
    baseline_score: Any,
    model_score: Any,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Return the paired percentile bootstrap interval of AUPR(model) - AUPR(baseline), in points (%)."""
    positive = _bool_array(is_ood, "is_ood")
    base = np.asarray(baseline_score, dtype=float)
    model = np.asarray(model_score, dtype=float)
    _check_pair(positive, base)
    _check_pair(positive, model)
    n = len(positive)
    diffs = []
    for idx in _resample_chunks(n, resamples, seed):
        flat = (idx + n * np.arange(len(idx))[:, None]).ravel()
        counts = np.bincount(flat, minlength=idx.size).reshape(idx.shape)
        diffs.append(weighted_aupr(positive, model, counts) - weighted_aupr(positive, base, counts))
    return _interval(np.concatenate(diffs) * 100.0, level)
