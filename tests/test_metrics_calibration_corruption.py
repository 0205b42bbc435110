from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from robustbench_rpc.errors import UserError
from robustbench_rpc.metrics import (
    STANDARD_CORRUPTIONS,
    aurra,
    calibration_metrics,
    corruption_errors,
    corruption_summary,
    ece,
    errors_from_records,
    load_alexnet_errors,
    mce,
    relative_mce,
    rms_calibration_error,
)

# ---------------------------------------------------------------- calibration


def test_rms_calibration_error_hand_computed():
    conf = [0.9, 0.8, 0.6, 0.4]
    correct = [1, 0, 1, 0]
    # bins of 2 after sorting by confidence: {0.4, 0.6} acc 0.5 conf 0.5 -> gap 0; {0.8, 0.9} acc 0.5 conf 0.85
    assert rms_calibration_error(conf, correct, bin_size=2) == pytest.approx(math.sqrt(0.5 * 0.35**2))
    # one bin: mean conf 0.675, accuracy 0.5
    assert rms_calibration_error(conf, correct, bin_size=100) == pytest.approx(0.175)
    # the reference code of the ImageNet-A paper leaves out the last bin
    assert rms_calibration_error(conf, correct, bin_size=2, include_last_bin=False) == pytest.approx(0.0)
    # last bin takes the remainder: bins {0.4, 0.6} and {0.8, 0.9, 0.95}
    conf5, correct5 = conf + [0.95], correct + [1]
    expected = math.sqrt(3 / 5 * ((0.8 + 0.9 + 0.95) / 3 - 2 / 3) ** 2)
    assert rms_calibration_error(conf5, correct5, bin_size=2) == pytest.approx(expected)


def test_ece_hand_computed():
    conf = [0.95, 0.85, 0.55, 0.25]
    correct = [1, 1, 0, 0]
    # 10 bins: each sample alone in its bin -> mean |conf - correct| = (0.05 + 0.15 + 0.55 + 0.25) / 4
    assert ece(conf, correct, n_bins=10) == pytest.approx(0.25)
    # 2 bins: (0, 0.5] holds 0.25 (acc 0); (0.5, 1] holds 0.95, 0.85, 0.55 (acc 2/3, conf 0.7833)
    expected = 0.25 * 0.25 + 0.75 * abs((0.95 + 0.85 + 0.55) / 3 - 2 / 3)
    assert ece(conf, correct, n_bins=2) == pytest.approx(expected)
    assert ece([1.0, 0.0], [1, 0], n_bins=15) == pytest.approx(0.0)  # the edges land in the first / last bin


def test_aurra_hand_computed():
    conf = [0.2, 0.9, 0.5, 0.7]
    correct = [1, 1, 0, 0]
    # answered in confidence order 0.9 (1), 0.7 (0), 0.5 (0), 0.2 (1): accuracies 1, 1/2, 1/3, 2/4
    assert aurra(conf, correct) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    assert aurra([0.1, 0.2], [1, 1]) == 1.0


def test_calibration_metrics_from_records():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1.0, 250)
    records = pd.DataFrame({"prob_max": conf, "correct1": rng.random(250) < conf})
    out = calibration_metrics(records)
    assert out["rms_calibration_error"] == rms_calibration_error(conf, records.correct1)
    # independent ECE reference: pandas' interval binning, (0, 1/15], (1/15, 2/15], ...
    frame = pd.DataFrame({"conf": conf, "acc": records.correct1.astype(float)})
    frame["bin"] = pd.cut(frame.conf, np.linspace(0, 1, 16), include_lowest=True)
    grouped = frame.groupby("bin", observed=True).agg(
        conf=("conf", "mean"), acc=("acc", "mean"), n=("conf", "size")
    )
    assert out["ece"] == pytest.approx(float((grouped.n / 250 * (grouped.conf - grouped.acc).abs()).sum()))
    assert 0.0 < out["aurra"] <= 1.0


# ---------------------------------------------------------------- corruption errors


def _alexnet_table() -> dict[tuple[str, int], float]:
    alexnet = load_alexnet_errors()
    return {(c, s): e for c, sev in alexnet.per_severity.items() for s, e in sev.items()}


def test_alexnet_json_documents_its_source_and_averages_match():
    raw = json.loads((resources.files("robustbench_rpc") / "assets/imagenet/alexnet_errors.json").read_text())
    assert "Hendrycks" in raw["source"] and len(raw["per_severity"]) == 15
    alexnet = load_alexnet_errors()
    for corruption, average in raw["average"].items():
        assert alexnet.average(corruption) == pytest.approx(average, abs=1e-6)
    assert alexnet.average("gaussian_noise") == pytest.approx(0.886428, abs=1e-6)


def test_alexnets_own_errors_give_mce_100_and_relative_mce_100():
    table = _alexnet_table()
    assert mce(table) == pytest.approx(1.0)
    assert relative_mce(table, clean_error=load_alexnet_errors().clean_error) == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in corruption_errors(table).values())


def test_corruption_errors_hand_computed_and_formats():
    alexnet = load_alexnet_errors()
    errors = {c: [0.5] * 5 for c in STANDARD_CORRUPTIONS}
    ce = corruption_errors(errors)
    assert ce["fog"] == pytest.approx(2.5 / sum(alexnet.per_severity["fog"].values()))
    expected = np.mean([0.5 / alexnet.average(c) for c in STANDARD_CORRUPTIONS])
    assert mce(errors) == pytest.approx(expected)
    frame = pd.DataFrame(
        [{"corruption": c, "severity": s, "top1": 0.5} for c in STANDARD_CORRUPTIONS for s in range(1, 6)]
    )
    assert mce(frame) == pytest.approx(expected)
    # relative CE of fog: sum(0.5 - 0.2) / sum(E_alexnet - E_alexnet_clean)
    rel = relative_mce(errors, clean_error=0.2)
    base = alexnet.clean_error
    expected_rel = np.mean(
        [1.5 / sum(e - base for e in alexnet.per_severity[c].values()) for c in STANDARD_CORRUPTIONS]
    )
    assert rel == pytest.approx(expected_rel)


def test_mce_names_missing_corruptions_unless_partial_is_asked():
    table = _alexnet_table()
    del table[("fog", 5)]
    partial = {k: v for k, v in table.items() if k[0] != "snow"}
    with pytest.raises(UserError, match=r"snow were not evaluated and fog lack some of severities 1-5"):
        mce(partial)
    assert mce(partial, allow_partial=True) == pytest.approx(1.0)  # fog normalized over severities 1-4
    extra = {("spatter", 1): 0.3}
    assert math.isnan(corruption_errors(extra)["spatter"])  # no published AlexNet error: not normalized


def test_errors_from_records_and_summary():
    records = {
        (c, s): pd.DataFrame({"correct1": [True, False, False, False]})
        for c in STANDARD_CORRUPTIONS
        for s in range(1, 6)
    }
    table = errors_from_records(records)
    assert table["fog"][3] == 0.75
    summary = corruption_summary(table, clean_error=0.25)
    assert summary["complete"] and summary["mean_error"] == pytest.approx(0.75)
    assert summary["mce"] == pytest.approx(mce(table)) and "relative_mce" in summary
