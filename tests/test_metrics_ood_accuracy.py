from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from robustbench_rpc.metrics import (
    accuracy_metrics,
    aupr,
    auroc,
    fpr_at_tpr,
    ood_metrics,
    top1,
    top5,
    topk_correct,
)


def _cases():
    rng = np.random.default_rng(7)
    for n, rate, rounding in [(50, 0.5, None), (400, 0.2, 1), (1000, 0.7, 2), (30, 0.1, 0)]:
        is_ood = rng.random(n) < rate
        is_ood[0], is_ood[1] = True, False
        score = rng.normal(size=n) + 1.2 * is_ood
        if rounding is not None:  # rounding creates ties, which the references handle in their own way
            score = np.round(score, rounding)
        yield is_ood, score


@pytest.mark.parametrize(("is_ood", "score"), list(_cases()))
def test_aupr_and_auroc_match_scikit_learn(is_ood, score):
    assert aupr(is_ood, score) == pytest.approx(average_precision_score(is_ood, score), abs=1e-12)
    assert auroc(is_ood, score) == pytest.approx(roc_auc_score(is_ood, score), abs=1e-12)


@pytest.mark.parametrize(("is_ood", "score"), list(_cases()))
def test_fpr_at_95_tpr_matches_the_first_roc_point_reaching_it(is_ood, score):
    fpr, tpr, _ = roc_curve(is_ood, score)
    expected = fpr[np.argmax(tpr >= 0.95)]
    assert fpr_at_tpr(is_ood, score, 0.95) == pytest.approx(expected, abs=1e-12)


def test_ood_hand_computed_case():
    # scores of 2 OOD (positives) and 3 in-distribution samples
    is_ood = [True, False, True, False, False]
    score = [0.9, 0.8, 0.7, 0.3, 0.1]
    # ranking: P N P N N -> precision at the positives: 1/1, 2/3 -> AP = (1 + 2/3) / 2
    assert aupr(is_ood, score) == pytest.approx(5 / 6)
    # pairs (pos, neg) ordered correctly: 0.9 beats all 3, 0.7 beats 2 -> 5 / 6
    assert auroc(is_ood, score) == pytest.approx(5 / 6)
    assert fpr_at_tpr(is_ood, score, 0.95) == pytest.approx(1 / 3)
    assert auroc([True, False], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half


def test_ood_metrics_from_records_and_input_checks():
    records = pd.DataFrame({"is_ood": [True, False, True, False], "ood_score": [-0.2, -0.9, -0.6, -0.4]})
    out = ood_metrics(records)
    assert set(out) == {"aupr", "auroc", "fpr95"}
    assert out["auroc"] == pytest.approx(roc_auc_score(records.is_ood, records.ood_score))
    with pytest.raises(ValueError, match="both positives"):
        aupr([True, True], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        auroc([True, False], [0.1])


def test_top1_top5_from_records_and_topk_against_torch():
    records = pd.DataFrame({"correct1": [True, False, False, True], "correct5": [True, True, False, True]})
    assert top1(records) == 0.5 and top5(records) == 0.75
    assert accuracy_metrics(records) == {"top1": 0.5, "top5": 0.75, "error": 0.5, "n": 4.0}
    torch.manual_seed(0)
    logits = torch.randn(64, 10)
    labels = torch.randint(0, 10, (64,))
    for k in (1, 5):
        expected = (logits.topk(k, dim=1).indices == labels[:, None]).any(1).numpy()
        assert np.array_equal(topk_correct(logits, labels, k), expected)
