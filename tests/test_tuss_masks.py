"""TUSS mask sources (files, ground truth, our generator, S-Seg's own masks), painting and mask F1."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from sseg.errors import DataError
from sseg.pseudo_masks.generator import PseudoMaskConfig, build_generator
from sseg.tuss.masks import (MaskSkip, class_proportions, drop_empty, generated_masks, ground_truth_regions,
                             read_mask_png, segment_ids_to_masks, sseg_predicted_masks)
from sseg.tuss.paint import majority_labels, mask_f1, paint


# ----------------------------------------------------------------------------- sources


def test_segment_ids_to_masks_orders_ids_and_splits_components():
    ids = np.array([[3, 3, 7, 3],
                    [3, 3, 7, 3],
                    [9, 9, 9, 9]])
    masks, dropped = segment_ids_to_masks(ids)
    assert masks.shape == (3, 3, 4) and dropped == 0
    assert masks[0].sum() == 6 and masks[1].sum() == 2 and masks[2].sum() == 4
    split, _ = segment_ids_to_masks(ids, split_components=True)
    assert split.shape[0] == 4  # id 3 is two components
    small, dropped = segment_ids_to_masks(ids, split_components=True, min_area=3)
    assert small.shape[0] == 2 and dropped == 2
    none, _ = segment_ids_to_masks(ids, no_mask_value=9)
    assert none.shape[0] == 2 and not none.any(0)[2].any()
    with pytest.raises(MaskSkip) as err:
        segment_ids_to_masks(np.full((2, 2), 5), no_mask_value=5)
    assert err.value.reason == "no_masks"


def test_mask_png_reads_segment_ids_and_skips_bad_files(tmp_path):
    ids = np.zeros((6, 8), dtype=np.uint16)
    ids[:, 4:] = 300  # 16-bit ids
    ids[0, 0] = 7
    Image.fromarray(ids).save(tmp_path / "a.png")
    masks, _ = read_mask_png(tmp_path / "a.png", (6, 8))
    assert masks.shape == (3, 6, 8) and masks.sum() == 48
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "grey.png")
    assert read_mask_png(tmp_path / "grey.png", (6, 8))[0].shape == (1, 6, 8)
    reasons = {}
    for name, hw in (("a.png", (6, 9)), ("missing.png", (6, 8)), ("rgb.png", (6, 8)), ("junk.png", (6, 8)),
                     ("empty.png", (6, 8))):
        if name == "rgb.png":
            Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / name)
        if name == "junk.png":
            (tmp_path / name).write_bytes(b"not a png")
        if name == "empty.png":
            Image.fromarray(np.full((6, 8), 255, np.uint8)).save(tmp_path / name)
        with pytest.raises(MaskSkip) as err:
            read_mask_png(tmp_path / name, hw, no_mask_value=255)
        reasons[name] = err.value.reason
    assert reasons == {"a.png": "size_mismatch", "missing.png": "missing_file", "rgb.png": "unreadable",
                       "junk.png": "unreadable", "empty.png": "no_masks"}


def test_drop_empty_counts_and_refuses_an_image_left_without_masks():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[1, 0, 0] = True
    kept, dropped = drop_empty(masks)
    assert kept.shape[0] == 1 and dropped == 2
    with pytest.raises(MaskSkip, match="no non-empty mask"):
        drop_empty(torch.zeros(2, 4, 4, dtype=torch.bool))


def test_ground_truth_regions_are_connected_class_regions_without_ignored_pixels():
    label = np.array([[0, 0, 1, 0],
                      [255, 255, 1, 0],
                      [2, 2, 2, 2]])
    masks, _ = ground_truth_regions(label)
    assert masks.shape[0] == 4  # class 0 twice (left, right), class 1, class 2
    assert not masks.any(0)[1, :2].any()
    props = class_proportions(masks, label, 3)
    assert sorted(map(tuple, props.tolist())) == [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (1.0, 0.0, 0.0)]


def test_class_proportions_count_ignored_pixels_for_no_class_and_check_the_labels():
    masks = torch.ones(1, 2, 2, dtype=torch.bool)
    label = np.array([[0, 1], [1, 255]])
    np.testing.assert_allclose(class_proportions(masks, label, 2), [[0.25, 0.5]])
    with pytest.raises(DataError, match="label 1 is outside the 1 classes"):
        class_proportions(masks, label, 1)
    with pytest.raises(DataError, match="does not match the masks"):
        class_proportions(masks, label[:1], 2)


def test_generated_masks_from_our_pixel_kmeans():
    rng = np.random.default_rng(0)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[:, :, :16] = (200, 30, 30)
    images[:, :, 16:] = (30, 30, 200)
    images = np.clip(images + rng.integers(0, 10, images.shape), 0, 255).astype(np.uint8)
    gen = build_generator(PseudoMaskConfig(generator="pixel", num_segments=2, pixel_stride=1, device="cpu"))
    out = generated_masks(gen, images)
    assert len(out) == 2
    masks, _ = out[0]
    assert masks.shape[1:] == (32, 32) and masks.sum() == 32 * 32  # a partition of the image
    halves = {int(m[:, :16].sum()) for m in masks}
    assert 0 in halves or 32 * 16 in halves  # no mask mixes the two colours across the border entirely


def test_sseg_predicted_masks_partition_the_image():
    from sseg.models.config import ModelConfig
    from sseg.models.sseg_model import SSegModel

    torch.manual_seed(0)
    model = SSegModel(ModelConfig.model_validate({
        "backbone": "tiny_convnet", "tiny_convnet_widths": [8, 16, 16, 32], "image_size": 64, "hidden_dim": 32,
        "num_queries": 4, "dec_layers": 1, "nheads": 2, "dim_feedforward": 64, "decoder_dropout": 0.0,
        "mask_dim": 32, "text_layers": 1, "text_width": 32, "text_heads": 2, "context_length": 16,
        "embed_dim": 32, "mask_feature_source": "pooled"})).eval()
    out = sseg_predicted_masks(model, torch.randn(2, 3, 64, 64))
    for masks, dropped in out:
        assert 1 <= masks.shape[0] <= 4 and dropped == 0
        assert torch.equal(masks.sum(0), torch.ones(64, 64, dtype=masks.sum(0).dtype))  # each pixel in one mask


# ----------------------------------------------------------------------------- painting and F1


def test_paint_smallest_mask_wins_and_holes_take_the_nearest_class():
    masks = np.zeros((3, 4, 6), dtype=bool)
    masks[0, :, :4] = True   # large, class 1
    masks[1, 1:3, 1:3] = True  # small, inside mask 0, class 2
    masks[2, :, 5] = True    # column 5, class 3; column 4 is uncovered
    out = paint(masks, np.array([1, 2, 3]))
    assert out[1, 1] == 2 and out[0, 0] == 1 and out[0, 5] == 3
    assert out[0, 4] in (1, 3) and (out[:, 4] >= 1).all()
    np.testing.assert_array_equal(paint(masks[[1, 0, 2]], np.array([2, 1, 3])), out)  # order-independent
    fixed = paint(masks, np.array([1, 2, 3]), uncovered=0)
    assert (fixed[:, 4] == 0).all()
    with pytest.raises(DataError, match="without masks"):
        paint(np.zeros((0, 4, 6), bool), np.array([]))


def test_mask_f1_by_hand():
    true = np.array([0, 0, 1, 1, 2, -1])
    pred = np.array([0, 1, 1, 1, 0, 2])
    out = mask_f1(pred, true, 3)
    # class 0: tp 1, fp 1, fn 1 → 0.5; class 1: tp 2, fp 1, fn 0 → 0.8; class 2: tp 0, fn 1 → 0
    assert out["per_class_f1"][:3] == pytest.approx([0.5, 0.8, 0.0])
    assert out["f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert math.isnan(mask_f1(np.array([0]), np.array([-1]), 2)["f1"])
    assert majority_labels(np.array([[0.2, 0.7], [0.0, 0.0]])).tolist() == [1, -1]
