"""Seen / unseen metrics against a hand-computed confusion matrix, AUROC, and the seen / unseen splits."""

import json
import math

import numpy as np
import pytest

from sseg.data.readers.class_names import COCO_STUFF_CLASSES, VOC_CLASSES
from sseg.errors import ConfigError
from sseg.metrics import ConfusionMatrix, ScoreHistogram, binary_auroc, harmonic_mean
from sseg.tagclip.evaluation import seen_unseen_metrics, update_trusty_histogram
from sseg.tagclip.splits import builtin_splits, resolve_split

WORLD_CLASSES = ["ball", "box", "tree", "car", "house", "fish", "bird", "flower", "star", "cup",
                 "sky", "grass", "water", "sand"]


def test_hiou_against_a_hand_computed_confusion_matrix():
    # classes: 0 background (ignored), 1, 2 seen, 3 unseen; rows = truth, columns = prediction
    matrix = np.array([[50, 5, 0, 5],     # background pixels: ignored altogether
                       [0, 8, 2, 0],      # seen 1
                       [0, 0, 6, 4],      # seen 2
                       [0, 6, 0, 4]])     # unseen 3: 6 of 10 pixels labelled as seen class 1
    split = resolve_split({"ignore": ["bg"], "unseen": ["c3"]}, ["bg", "c1", "c2", "c3"])
    m = seen_unseen_metrics(ConfusionMatrix.from_matrix(matrix), split)
    # with the background rows dropped: column sums = [0, 14, 8, 8]
    iou1 = 8 / (10 + 14 - 8)  # 0.5
    iou2 = 6 / (10 + 8 - 6)  # 0.5
    iou3 = 4 / (10 + 8 - 4)  # 2/7
    s, u = (iou1 + iou2) / 2, iou3
    assert m["miou_seen"] == pytest.approx(s)
    assert m["miou_unseen"] == pytest.approx(u)
    assert m["hiou"] == pytest.approx(2 * s * u / (s + u))  # 0.3636...
    assert m["hiou"] == pytest.approx(4 / 11)
    assert m["pixel_accuracy"] == pytest.approx(18 / 30)
    assert m["unseen_as_seen"] == pytest.approx(0.6)
    assert math.isnan(m["per_class_iou"][0])


def test_harmonic_mean_edges():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.0) == 0.0
    assert math.isnan(harmonic_mean(math.nan, 0.5))


def test_auroc_exact_histogram_and_sklearn_agree():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    s = np.clip(rng.normal(0.5 + 0.2 * y, 0.2), 0, 1)
    s[:50] = 0.5  # ties
    exact = binary_auroc(s, y)
    assert exact == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    hist = ScoreHistogram(1000)
    hist.update(s[:1000], y[:1000])
    other = ScoreHistogram(1000)
    other.update(s[1000:], y[1000:])
    assert hist.merge(other).auroc() == pytest.approx(exact, abs=2e-3)
    assert binary_auroc([0.1, 0.9], [False, True]) == 1.0 and binary_auroc([0.9, 0.1], [False, True]) == 0.0
    assert math.isnan(binary_auroc([0.1, 0.2], [True, True]))


def test_trusty_histogram_leaves_out_ignored_and_void_pixels():
    split = resolve_split({"ignore": ["bg"], "unseen": ["c2"]}, ["bg", "c1", "c2"])
    label = np.array([[0, 1, 2, 255]])
    trusty = np.array([[0.99, 0.2, 0.8, 0.0]])  # background and void would spoil a perfect AUROC
    hist = ScoreHistogram()
    update_trusty_histogram(hist, trusty, label, split)
    assert hist.positive.sum() == 1 and hist.negative.sum() == 1 and hist.auroc() == 1.0


def test_builtin_splits_resolve_on_their_datasets():
    assert {"voc", "coco_stuff", "world", "world_b"} <= set(builtin_splits())
    voc = resolve_split("voc", VOC_CLASSES)
    assert voc.unseen_names == ("potted plant", "sheep", "sofa", "train", "tv monitor")
    assert len(voc.seen) == 15 and voc.ignored == (0,)
    coco = resolve_split("coco_stuff", COCO_STUFF_CLASSES)
    assert len(coco.seen) == 156 and len(coco.unseen) == 15
    for name in ("world", "world_b"):
        world = resolve_split(name, WORLD_CLASSES)
        things, stuff = set(WORLD_CLASSES[:10]), set(WORLD_CLASSES[10:])
        assert set(world.unseen_names) & things and set(world.unseen_names) & stuff
        assert 3 <= len(world.unseen) <= 4
    everything = resolve_split("world", WORLD_CLASSES).all_seen()
    assert len(everything.seen) == 14 and everything.unseen == ()


def test_bad_splits_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="names class 'zebra' \\(unseen\\), which the dataset does not have"):
        resolve_split({"unseen": ["zebra"]}, WORLD_CLASSES)
    with pytest.raises(ConfigError, match="has no unseen class"):
        resolve_split({"unseen": []}, WORLD_CLASSES)
    with pytest.raises(ConfigError, match="leaves no seen class"):
        resolve_split({"unseen": WORLD_CLASSES[:7], "ignore": WORLD_CLASSES[7:]}, WORLD_CLASSES)
    with pytest.raises(ConfigError, match="both unseen and ignored"):
        resolve_split({"unseen": ["car"], "ignore": ["car"]}, WORLD_CLASSES)
    with pytest.raises(ConfigError, match="unknown split 'nope'"):
        resolve_split("nope", WORLD_CLASSES)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"unseen": "car"}))
    with pytest.raises(ConfigError, match="needs an 'unseen' list"):
        resolve_split(str(bad), WORLD_CLASSES)
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"unseen": ["Car"]}))
    assert resolve_split(str(good), WORLD_CLASSES).unseen_names == ("car",)
