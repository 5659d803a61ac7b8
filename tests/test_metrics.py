import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, jaccard_score

import sseg  # noqa: F401
from sseg.errors import DataError
from sseg.metrics import ConfusionMatrix

# gt rows / pred columns of this example (hand-computed):
#   gt 0: pred 0, pred 1        -> [1, 1, 0]
#   gt 1: pred 1, pred 1        -> [0, 2, 0]
#   gt 2: pred 0                -> [1, 0, 0]
#   gt 255 (ignored): pred 2
GT = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])


def example(num_classes: int = 3) -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes)
    cm.update(PRED, GT)
    return cm


def test_matrix_by_hand():
    np.testing.assert_array_equal(example().matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert example().matrix.dtype == np.int64


def test_metrics_by_hand():
    result = example().compute()
    # IoU0 = 1/(2+2-1), IoU1 = 2/(2+3-2), IoU2 = 0/(1+0-0)
    np.testing.assert_allclose(result["per_class_iou"], [1 / 3, 2 / 3, 0.0])
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert result["num_classes_in_mean"] == 3


def test_absent_class_is_nan_and_left_out_of_the_mean():
    result = example(num_classes=4).compute()
    assert math.isnan(result["per_class_iou"][3])
    assert math.isnan(result["per_class_accuracy"][3])
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["num_classes_in_mean"] == 3


def test_class_only_predicted_counts_with_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 0]))
    result = cm.compute()
    assert result["per_class_iou"][:2] == [0.5, 0.0]
    assert math.isnan(result["per_class_iou"][2])
    assert result["miou"] == pytest.approx(0.25)
    assert result["mean_accuracy"] == pytest.approx(0.5)  # class 1 has no gt pixels


def test_exclude_background_pixels_protocol():
    # Row 0 (gt background) is dropped: [[0,0,0],[0,2,0],[1,0,0]]
    result = example().compute(exclude=[0])
    assert math.isnan(result["per_class_iou"][0])
    np.testing.assert_allclose(result["per_class_iou"][1:], [2 / (2 + 2 - 2), 0.0])
    assert result["miou"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)
    assert result["mean_accuracy"] == pytest.approx(0.5)


def test_exclude_from_mean_only():
    result = example().compute(exclude=[0], exclude_mode="mean")
    np.testing.assert_allclose(result["per_class_iou"], [1 / 3, 2 / 3, 0.0])
    assert result["miou"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["mean_accuracy"] == pytest.approx(0.5)


def test_empty_matrix_gives_nan():
    result = ConfusionMatrix(2).compute()
    assert math.isnan(result["miou"]) and math.isnan(result["pixel_accuracy"])
    cm = ConfusionMatrix(2)
    cm.update(np.full((2, 2), 1), np.full((2, 2), 255))  # everything ignored
    assert cm.total == 0


def test_against_sklearn_on_random_maps():
    rng = np.random.default_rng(0)
    num_classes = 6
    gt = rng.integers(0, num_classes, size=(3, 40, 50))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, num_classes, size=gt.shape))
    pred[pred == 255] = 0
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    keep = gt != 255
    expected = confusion_matrix(gt[keep], pred[keep], labels=list(range(num_classes)))
    np.testing.assert_array_equal(cm.matrix, expected)
    reference = jaccard_score(gt[keep], pred[keep], labels=list(range(num_classes)), average=None)
    result = cm.compute()
    np.testing.assert_allclose(result["per_class_iou"], reference)
    assert result["miou"] == pytest.approx(reference.mean())
    assert result["pixel_accuracy"] == pytest.approx((gt[keep] == pred[keep]).mean())


def test_merge_and_sum_equal_one_pass():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 4, size=(4, 16, 16))
    pred = rng.integers(0, 4, size=(4, 16, 16))
    whole = ConfusionMatrix(4)
    whole.update(pred, gt)
    parts = []
    for i in range(4):
        part = ConfusionMatrix(4)
        part.update(pred[i], gt[i])
        parts.append(part)
    np.testing.assert_array_equal(sum(parts).matrix, whole.matrix)
    np.testing.assert_array_equal((parts[0] + parts[1] + parts[2] + parts[3]).matrix, whole.matrix)
    merged = ConfusionMatrix(4)
    for part in parts:
        merged.merge(part)
    np.testing.assert_array_equal(merged.matrix, whole.matrix)
    assert parts[0].matrix.sum() == 256  # + does not modify its operands


def test_from_matrix_roundtrip():
    cm = ConfusionMatrix.from_matrix(example().matrix.tolist())
    assert cm.compute()["miou"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("pred, gt, message", [
    (np.array([0, 3]), np.array([0, 1]), "predicted label 3"),
    (np.array([0, 1]), np.array([0, 7]), "ground-truth label 7"),
    (np.array([0, 1]), np.array([0, -1]), "ground-truth label -1"),
    (np.array([0, 1, 2]), np.array([0, 1]), "shape"),
    (np.array([0.5, 1.0]), np.array([0, 1]), "integer"),
])
def test_bad_input_is_a_data_error(pred, gt, message):
    with pytest.raises(DataError, match=message):
        ConfusionMatrix(3).update(pred, gt)


def test_merge_rejects_other_sizes():
    with pytest.raises(DataError, match="3 and 4 classes"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))


def test_exclude_out_of_range():
    with pytest.raises(DataError, match="excluded class 5"):
        example().compute(exclude=[5])
