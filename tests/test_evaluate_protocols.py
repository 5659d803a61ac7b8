"""The two evaluation protocols: label maps, background slots and excluded rows, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.stages.batch_inference import constant_class_miou
from pipelines.stages.evaluate_protocols import background_threshold, build_protocol
from sseg.errors import ConfigError
from sseg.metrics import ConfusionMatrix

VOC_LIKE = ["background", "cat", "dog"]
WORLD_LIKE = ["ball", "tree", "sky", "grass"]


def test_with_background_on_a_dataset_with_a_background_class():
    p = build_protocol("with_background", VOC_LIKE, 0, None)
    assert p.text_classes == ["cat", "dog"] and p.background_index == 0 and p.bg_mode == "threshold"
    assert p.label_map is None and p.exclude == []


def test_without_background_ignores_background_pixels_and_row():
    p = build_protocol("without_background", VOC_LIKE, 0, None)
    lut = np.asarray(p.label_map)
    assert lut[0] == 255 and lut[1] == 1 and lut[2] == 2 and lut[255] == 255
    assert p.text_classes == ["cat", "dog"] and p.bg_mode == "none" and p.exclude == [0]


def test_world_stuff_plays_background():
    p = build_protocol("with_background", WORLD_LIKE, None, ["sky", "grass"])
    assert p.report_names == ["background", "ball", "tree"] and p.text_classes == ["ball", "tree"]
    lut = np.asarray(p.label_map)
    assert lut[:4].tolist() == [1, 2, 0, 0] and lut[255] == 255
    q = build_protocol("without_background", WORLD_LIKE, None, None)
    assert q.text_classes == WORLD_LIKE and q.label_map is None and q.background_index is None


def test_bad_protocol_requests():
    with pytest.raises(ConfigError, match="not in the dataset"):
        build_protocol("with_background", WORLD_LIKE, None, ["lava"])
    with pytest.raises(ConfigError, match="needs a dataset background"):
        build_protocol("with_background", WORLD_LIKE, None, None)


def test_constant_class_baseline_by_hand():
    cm = ConfusionMatrix(3)
    gt = np.array([[0, 0, 0, 1], [1, 2, 255, 0]])
    cm.update(np.zeros_like(gt), gt)
    miou, best = constant_class_miou(cm)
    # 7 valid pixels: class 0 has 4 → predicting 0 everywhere: IoU_0 = 4/7, IoU_1 = IoU_2 = 0
    assert best == 0 and miou == pytest.approx((4 / 7) / 3)


@pytest.mark.parametrize("dataset, segment, expected", [
    ("voc", {}, (0.95, "groupvit_voc")),
    ("coco_object", {}, (0.95, "groupvit_coco_object")),
    ("context", {"window": 448}, (0.35, "groupvit_context")),
    ("world", {}, (0.95, "default")),
    ("ade20k", {"bg_thresh": None}, (0.95, "default")),
    ("context", {"bg_thresh": 0.5}, (0.5, "config")),  # a config field overrides the dataset's value
    ("voc", {"bg_thresh": "0.2"}, (0.2, "config")),  # as a command-line override arrives
])
def test_background_threshold_per_dataset(dataset, segment, expected):
    assert background_threshold(dataset, segment) == expected


def test_background_threshold_rejects_out_of_range():
    with pytest.raises(Exception, match="bg_thresh"):
        background_threshold("voc", {"bg_thresh": 1.5})

