"""S-Seg+ and the background (issue 24, defects 1 and 2), on hand-made score tensors.

1. A closed-vocabulary model trained with a background class decides background itself: its own
   probabilities over every trained class, not GroupViT's threshold on the foreground probabilities
   renormalised without it.
2. Background pseudo-labels get a confidence on the foreground's scale (not the threshold itself), so a
   confidence threshold does not drop every background pixel; the paper configs keep every pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class FixedClosedVocabulary(nn.Module):
    """A closed-vocabulary segmenter whose per-pixel probabilities over its trained classes are given:
    ``segment_scores`` is UperNetViT's (the requested classes picked from the trained-class softmax)."""

    closed_vocabulary = True

    def __init__(self, class_names: list[str], probs: torch.Tensor):
        super().__init__()
        self.class_names = list(class_names)
        self.probs = probs  # [K, H, W], sums to 1 over K
        self.anchor = nn.Parameter(torch.zeros(1))  # model_device() needs a parameter

    def class_logits(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.probs.clamp_min(1e-12).log()[None].expand(images.shape[0], -1, -1, -1)
        return nn.functional.interpolate(logits, size=images.shape[-2:], mode="nearest")

    def segment_scores(self, images, classifier):
        from sseg.models.upernet import UperNetViT

        return UperNetViT.segment_scores(self, images, classifier)


def _segmenter(model, text_classes, background_index=0, bg_thresh=0.95):
    from sseg.inference import SegmentConfig, Segmenter, build_text_classifier

    cfg = SegmentConfig(bg_mode="threshold", bg_thresh=bg_thresh, short_side=None, sliding=False, size_divisor=1)
    classifier = build_text_classifier(model, text_classes, cfg.templates)
    return Segmenter(model, classifier, cfg, background_index=background_index)


def test_closed_vocabulary_model_with_background_uses_its_own_background_class():
    # pixel 0: background .99 / cat .0099 / dog .0001 -> background (GroupViT's rule on the renormalised
    # foreground gives cat .99 >= .95 -> cat); pixel 1: cat .8 -> cat; pixel 2: dog .6, background .3 -> dog
    probs = torch.tensor([[0.99, 0.1, 0.3], [0.0099, 0.8, 0.1], [0.0001, 0.1, 0.6]]).view(3, 1, 3)
    model = FixedClosedVocabulary(["background", "cat", "dog"], probs)
    segmenter = _segmenter(model, ["cat", "dog"])  # the with-background protocol: foreground names only
    assert segmenter.class_names == ["background", "cat", "dog"]
    prediction = segmenter.predict(np.zeros((1, 3, 3), np.uint8))
    assert prediction.labels.tolist() == [[0, 1, 2]]
    # the background slot holds the model's background probability (not a threshold): scores sum to 1
    torch.testing.assert_close(prediction.scores, probs, atol=1e-5, rtol=0)
    assert prediction.bg_thresh is None
    # the text classes' own map is unchanged: cat and dog renormalised between themselves
    scores = segmenter.score_map(np.zeros((1, 3, 3), np.uint8))
    assert scores.shape == (2, 1, 3)
    torch.testing.assert_close(scores.sum(0), torch.ones(1, 3))


def test_closed_vocabulary_model_classes_not_asked_for_are_background():
    # a model trained on sky / ball / grass (no class named background, like the world's), asked for ball
    # only: sky and grass are what it is not, so their probabilities are the background's
    probs = torch.tensor([[0.5, 0.1], [0.3, 0.8], [0.2, 0.1]]).view(3, 1, 2)  # sky, ball, grass
    model = FixedClosedVocabulary(["sky", "ball", "grass"], probs)
    prediction = _segmenter(model, ["ball"]).predict(np.zeros((1, 2, 3), np.uint8))
    assert prediction.labels.tolist() == [[0, 1]]  # pixel 0: background .7 > ball .3
    torch.testing.assert_close(prediction.scores[:, 0, 0], torch.tensor([0.7, 0.3]), atol=1e-5, rtol=0)


def test_open_vocabulary_model_keeps_groupvits_threshold():
    from sseg.inference import threshold_background

    scores = torch.tensor([[0.9, 0.2], [0.1, 0.8]]).view(2, 1, 2)
    mask, threshold = threshold_background(scores, 0.85, clamp=False)
    assert mask.tolist() == [[False, True]] and threshold == 0.85


# ----------------------------------------------------------------------------- defect 2: confidence


def _label_chunk_with(prediction, background_index):
    from pipelines.stages.pseudo_labels import LabelChunk

    chunk = LabelChunk.__new__(LabelChunk)  # no checkpoint: the segmenter is a stand-in
    chunk.segmenter = type("Fixed", (), {"predict": lambda self, image, return_scores=True: prediction,
                                         "background_index": background_index})()
    return chunk


def _threshold_prediction(fg: torch.Tensor, threshold: float):
    """A Prediction as Segmenter.predict makes it in "threshold" mode (background slot 0 holds the
    threshold applied; labels by GroupViT's rule)."""
    from sseg.inference import Prediction

    best, index = fg.max(dim=0)
    labels = torch.where(best < threshold, torch.zeros_like(index), index + 1).numpy().astype(np.uint8)
    scores = torch.cat([torch.full((1, *fg.shape[1:]), threshold), fg])
    return Prediction(labels=labels, scores=scores, bg_thresh=threshold)


def test_background_pseudo_labels_survive_the_confidence_threshold():
    # Pascal Context's threshold .35 over 4 foreground classes: pixel 0 background (best .30),
    # pixel 1 background (uniform: the strongest background evidence), pixel 2 foreground .90,
    # pixel 3 foreground just above the threshold (.36)
    fg = torch.tensor([[0.30, 0.25, 0.90, 0.36], [0.25, 0.25, 0.04, 0.32],
                       [0.25, 0.25, 0.03, 0.30], [0.20, 0.25, 0.03, 0.02]]).view(4, 1, 4)
    labels, confidence = _label_chunk_with(_threshold_prediction(fg, 0.35), 0).label(np.zeros((1, 4, 3), np.uint8))
    assert labels.tolist() == [[0, 0, 1, 1]]
    conf = confidence[0] / 255.0
    assert conf[0] >= 0.5  # today: .35, below the 0.5 threshold: every background pixel was dropped
    assert conf[1] == pytest.approx(1.0, abs=1 / 255)
    assert conf[2] == pytest.approx(0.90, abs=1 / 255)  # a foreground pixel keeps its probability
    assert conf[3] == pytest.approx(0.36, abs=1 / 255)
    # on the background side the confidence rises from the threshold (at the boundary) to 1 (uniform)
    assert conf[0] == pytest.approx(0.35 + 0.65 * (0.35 - 0.30) / (0.35 - 0.25), abs=1 / 255)


def test_closed_vocabulary_background_confidence_is_its_probability():
    from sseg.inference import Prediction

    scores = torch.tensor([[0.9, 0.2], [0.1, 0.8]]).view(2, 1, 2)
    prediction = Prediction(labels=np.array([[0, 1]], np.uint8), scores=scores, bg_thresh=None)
    _, confidence = _label_chunk_with(prediction, 0).label(np.zeros((1, 2, 3), np.uint8))
    assert confidence.tolist() == [[round(0.9 * 255), round(0.8 * 255)]]


@pytest.mark.parametrize("name", ["self_train_voc", "self_train_context", "self_train_coco"])
def test_paper_configs_keep_every_pseudo_label_pixel(name):
    """The paper names no confidence threshold: its configs keep every pixel."""
    from schemas.configs import SelfTrainConfig
    from sseg.config import load_config

    cfg = load_config(SelfTrainConfig, ROOT / "configs" / f"{name}.yaml")
    assert cfg.pseudo_labels.confidence_threshold == 0.0
