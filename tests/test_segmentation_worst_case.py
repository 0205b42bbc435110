"""The segmentation worst case: the lowest mIoU / mAcc / aAcc any attack, or their per-image combination, reached."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustbench_rpc.metrics.segmentation import class_areas, segmentation_metrics, total_areas
from robustbench_rpc.results.segmentation import segmentation_worst_case


def _records(preds: list[np.ndarray], labels: list[np.ndarray], ids: list[str]) -> pd.DataFrame:
    rows = []
    for pred, label, sid in zip(preds, labels, ids, strict=True):
        a = class_areas(pred, label, num_classes=3)
        rows.append({"sample_id": sid, "area_intersect": a.intersect.tolist(), "area_union": a.union.tolist(),
                     "area_pred": a.pred.tolist(), "area_label": a.label.tolist()})
    return pd.DataFrame(rows)


def test_worst_case_is_the_lowest_of_each_attack_and_the_per_image_combination():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, size=(6, 6)) for _ in range(4)]
    labels[2][0, :] = 255  # ignored pixels
    # attack A ruins images 0 and 1, attack B images 2 and 3; B also ran on an extra image "x"
    ruined = [np.full((6, 6), 2) for _ in range(4)]
    a_preds = [ruined[0], ruined[1], labels[2].clip(0, 2), labels[3]]
    b_preds = [labels[0], labels[1], ruined[2], ruined[3]]
    ids = ["s0", "s1", "s2", "s3"]
    a = _records(a_preds, labels, ids)
    b = _records([*b_preds, labels[0]], [*labels, labels[0]], [*ids, "x"])
    found = {m: (v, n) for m, v, n in segmentation_worst_case([("pgd", a), ("segpgd", b.iloc[::-1])])}
    # independent: per image, the prediction with the fewer correctly labelled pixels, then mmseg's totals
    chosen = []
    for i in range(4):
        valid = labels[i] != 255
        correct = [int(((p == labels[i]) & valid).sum()) for p in (a_preds[i], b_preds[i])]
        chosen.append(class_areas((a_preds[i], b_preds[i])[int(np.argmin(correct))], labels[i], num_classes=3))
    combined = segmentation_metrics(total_areas(chosen))
    each = [segmentation_metrics(total_areas([class_areas(p, t, num_classes=3) for p, t in zip(preds, labels,
                                                                                               strict=True)]))
            for preds in (a_preds, b_preds)]
    for metric in ("aAcc", "mIoU", "mAcc"):
        expected = min(combined[metric], *(e[metric] for e in each))
        assert found[metric] == (pytest.approx(expected, abs=1e-12), 4)  # the 4 common images, "x" left out
    assert found["mIoU"][0] < min(e["mIoU"] for e in each)  # the combination is stronger than either attack


def test_worst_case_of_attacks_without_common_images_is_empty():
    label = np.zeros((2, 2), dtype=np.int64)
    a = _records([label], [label], ["a"])
    b = _records([label], [label], ["b"])
    assert segmentation_worst_case([("pgd", a), ("fgsm", b)]) == []
