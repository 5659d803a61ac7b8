"""The mask table: exact mIoU from owned counts, image selection, concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sseg.errors import DataError
from sseg.metrics import ConfusionMatrix
from sseg.tuss.paint import paint
from sseg.tuss.table import MaskTable, concat, mask_counts, pixel_confusion, score


def _image(seed: int, h=12, w=15, classes=3):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes, (h, w))
    label[rng.random((h, w)) < 0.1] = 255
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[0, :, : w // 2] = True
    masks[1, :, w // 2 + 2:] = True  # two columns uncovered
    masks[2, 2:6, 2:6] = True  # overlaps mask 0
    masks[3, 8:, 1:4] = True  # overlaps mask 0
    return label, masks


def test_owned_counts_give_the_confusion_matrix_of_the_painted_maps():
    rng = np.random.default_rng(0)
    expected = ConfusionMatrix(3)
    tables = []
    for seed in range(3):
        label, masks = _image(seed)
        area, inside, owned = mask_counts(masks, label, 3)
        assert area.tolist() == masks.flatten(1).sum(1).tolist()
        assert inside.sum() < area.sum()  # ignored pixels count for no class; overlaps counted twice
        assert owned.sum() == (label != 255).sum()  # every labelled pixel owned by exactly one mask
        classes = rng.integers(0, 3, 4)
        expected.update(paint(masks, classes), label)
        tables.append((MaskTable([f"im{seed}"], np.zeros(4, int), area, np.zeros((4, 2)), inside, owned), classes))
    table = concat([t for t, _ in tables])
    predicted = np.concatenate([c for _, c in tables])
    np.testing.assert_array_equal(pixel_confusion(table, predicted, 3).matrix, expected.matrix)
    out = score(table, predicted, 3)
    assert out["miou"] == pytest.approx(expected.compute()["miou"])
    assert 0.0 <= out["f1"] <= 1.0


def test_select_images_and_concat_keep_rows_aligned():
    t = MaskTable(["a", "b", "c"], np.array([0, 0, 1, 2, 2, 2]), np.arange(6) + 1.0, np.arange(12.0).reshape(6, 2))
    sub = t.select_images(np.array([True, False, True]))
    assert sub.image_ids == ["a", "c"] and sub.image_index.tolist() == [0, 0, 1, 1, 1]
    assert sub.area.tolist() == [1.0, 2.0, 4.0, 5.0, 6.0]
    both = concat([sub, t.select_images(np.array([False, True, False]))])
    assert both.image_ids == ["a", "c", "b"] and both.image_index.tolist() == [0, 0, 1, 1, 1, 2]
    with pytest.raises(DataError, match="3 rows, image_index 6"):
        MaskTable(["a"], np.zeros(6, int), np.ones(3), np.ones((6, 2)))
    with pytest.raises(DataError, match="no ground truth"):
        pixel_confusion(t, np.zeros(6, int), 2)
