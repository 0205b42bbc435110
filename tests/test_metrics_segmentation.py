"""Segmentation metrics against hand computations and scikit-learn's confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from robustbench_rpc.metrics.segmentation import (
    ClassAreas,
    bootstrap_segmentation,
    class_areas,
    reduce_zero,
    segmentation_metrics,
    total_areas,
)

PRED = np.array([[0, 0, 1], [1, 2, 2]])
LABEL = np.array([[0, 1, 1], [255, 2, 0]])


def test_hand_made_masks_with_an_ignored_pixel():
    areas = class_areas(PRED, LABEL, num_classes=3)
    # kept (pred, label) pairs: (0,0) (0,1) (1,1) (2,2) (2,0); the pixel labelled 255 is left out
    assert areas.intersect.tolist() == [1, 1, 1]
    assert areas.pred.tolist() == [2, 1, 2]
    assert areas.label.tolist() == [2, 2, 1]
    assert areas.union.tolist() == [3, 2, 2]
    m = segmentation_metrics(areas)
    assert m["aAcc"] == pytest.approx(60.0)
    assert m["mIoU"] == pytest.approx((100 / 3 + 50 + 50) / 3)
    assert m["mAcc"] == pytest.approx((50 + 50 + 100) / 3)


def test_absent_classes_are_left_out_as_mmsegmentation_does():
    # class 3 appears nowhere: no IoU, no accuracy; the means are those of the three other classes
    m = segmentation_metrics(class_areas(PRED, LABEL, num_classes=4))
    assert np.isnan(m["IoU"][3]) and np.isnan(m["Acc"][3])
    assert m["mIoU"] == pytest.approx((100 / 3 + 50 + 50) / 3)
    # class 3 predicted once but never labelled: IoU 0 counts in the mean, its accuracy stays undefined
    pred = PRED.copy()
    pred[0, 0] = 3
    m = segmentation_metrics(class_areas(pred, LABEL, num_classes=4))
    assert m["IoU"][3] == 0.0 and np.isnan(m["Acc"][3])
    # class 0 now: intersection 0, predicted 1, labelled 2 -> union 3
    assert m["IoU"][0] == 0.0
    assert m["mIoU"] == pytest.approx((0 + 50 + 50 + 0) / 4)
    assert m["mAcc"] == pytest.approx((0 + 50 + 100) / 3)


def test_reduce_zero_label_ignores_label_zero_and_shifts_the_rest():
    label = np.array([0, 1, 2, 150, 255])
    assert reduce_zero(label).tolist() == [255, 0, 1, 149, 255]
    areas = class_areas(np.array([5, 0, 1, 149, 7]), label, num_classes=150, reduce_zero_label=True)
    assert int(areas.label.sum()) == 3 and int(areas.intersect.sum()) == 3


def test_random_masks_against_sklearn_confusion_matrix():
    rng = np.random.default_rng(0)
    classes = 7
    images = []
    for _ in range(5):
        label = rng.integers(0, classes, size=(13, 11))
        label[rng.random(label.shape) < 0.1] = 255
        pred = np.where(rng.random(label.shape) < 0.6, np.where(label == 255, 0, label),
                        rng.integers(0, classes, size=label.shape))
        images.append((pred, label))
    total = total_areas([class_areas(p, lab, classes) for p, lab in images])
    keep = np.concatenate([(lab != 255).ravel() for _, lab in images])
    y_true = np.concatenate([lab.ravel() for _, lab in images])[keep]
    y_pred = np.concatenate([p.ravel() for p, _ in images])[keep]
    cm = confusion_matrix(y_true, y_pred, labels=list(range(classes)))
    inter, labelled, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    assert total.intersect.tolist() == inter.tolist()
    assert total.label.tolist() == labelled.tolist() and total.pred.tolist() == predicted.tolist()
    m = segmentation_metrics(total)
    assert m["aAcc"] == pytest.approx(inter.sum() / cm.sum() * 100)
    assert m["mIoU"] == pytest.approx(np.mean(inter / (labelled + predicted - inter)) * 100)
    assert m["mAcc"] == pytest.approx(np.mean(inter / labelled) * 100)
    stacked = ClassAreas(*(np.stack(a) for a in zip(*[(c.intersect, c.union, c.pred, c.label) for c in
                                                       (class_areas(p, lab, classes) for p, lab in images)],
                                                      strict=True)))
    assert segmentation_metrics(stacked)["mIoU"] == pytest.approx(m["mIoU"])  # totals of stacked per-image rows


@pytest.mark.parametrize(("pred", "label", "message"), [
    (np.zeros((2, 2)), np.zeros((2, 3)), "prediction of shape \\(2, 2\\) and label of shape \\(2, 3\\) differ"),
    (np.zeros((2, 2)), np.full((2, 2), 7), "label value 7 is outside the 3 classes \\(0..2, ignore index 255\\)"),
    (np.full((2, 2), -1), np.zeros((2, 2)), "prediction value -1 is outside the 3 classes"),
])
def test_bad_masks_are_refused(pred, label, message):
    with pytest.raises(ValueError, match=message):
        class_areas(pred, label, num_classes=3)


def test_bootstrap_over_images():
    one = class_areas(PRED, LABEL, num_classes=3)
    same = ClassAreas(*(np.stack([a] * 6) for a in (one.intersect, one.union, one.pred, one.label)))
    low, high = bootstrap_segmentation(same, resamples=50)
    assert low == pytest.approx(segmentation_metrics(one)["mIoU"]) == pytest.approx(high)
    rng = np.random.default_rng(1)
    per_image = [class_areas(rng.integers(0, 3, (6, 6)), rng.integers(0, 3, (6, 6)), 3) for _ in range(20)]
    stacked = ClassAreas(*(np.stack([getattr(c, f) for c in per_image]) for f in ("intersect", "union", "pred",
                                                                                  "label")))
    point = segmentation_metrics(stacked)["mIoU"]
    low, high = bootstrap_segmentation(stacked, resamples=400, seed=3)
    assert low < point < high and high - low < 30
    assert bootstrap_segmentation(stacked, resamples=400, seed=3) == (low, high)
