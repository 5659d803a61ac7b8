"""Word-to-mask alignment loss: known answers against a loop-by-loop reference."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from sseg.errors import DataError
from sseg.losses import SSegCriterion
from sseg.losses.word_alignment import WordAlignmentLoss, build_word_targets, text_words


def reference_loss(mask_features, word_features, labels, scale):
    """Plain loops: MIL score = best mask's cosine; multi-positive InfoNCE both ways."""
    B, N, _ = mask_features.shape
    W = word_features.shape[0]
    score = [[max(float(F.cosine_similarity(mask_features[b, n], word_features[w], dim=0)) for n in range(N))
              for w in range(W)] for b in range(B)]

    def rows(matrix, positives):
        losses = []
        for row, pos in zip(matrix, positives):
            if not any(pos):
                continue
            log_z = math.log(sum(math.exp(scale * s) for s in row))
            losses.append(-sum(scale * s - log_z for s, p in zip(row, pos) if p) / sum(pos))
        return sum(losses) / len(losses)

    lab = labels.tolist()
    columns = [list(c) for c in zip(*score)]
    return (rows(score, lab) + rows(columns, [list(c) for c in zip(*lab)])) / 2


def test_text_words_are_distinct_lowercase_in_order():
    assert text_words("Fish swims, fish  SKY beneath-sky") == ["fish", "swims", "sky", "beneath-sky"]
    assert text_words("") == []


def test_build_word_targets_vocabulary_labels_and_prompts():
    targets = build_word_targets(["fish water", "car sky", "fish sky sky"], ["a photo of a {}."], random.Random(0))
    assert targets.vocabulary == ["car", "fish", "sky", "water"]
    assert targets.prompts == ["a photo of a car.", "a photo of a fish.", "a photo of a sky.", "a photo of a water."]
    assert targets.labels.tolist() == [[False, True, False, True],
                                       [True, False, True, False],
                                       [False, True, True, False]]


def test_build_word_targets_needs_a_template():
    with pytest.raises(DataError, match="template"):
        build_word_targets(["fish"], [])


def test_loss_matches_reference():
    torch.manual_seed(0)
    masks, words = torch.randn(4, 5, 8), torch.randn(6, 8)
    labels = torch.rand(4, 6) < 0.4
    labels[3] = False  # an image whose text has no word of the vocabulary: left out of image→words
    labels[:, 5] = False  # a word no image has: left out of words→image
    labels[0, 0] = True
    out = WordAlignmentLoss()(masks, words, labels, 7.0)
    assert out.loss.item() == pytest.approx(reference_loss(masks, words, labels, 7.0), rel=1e-5)


def test_only_the_best_mask_gets_gradient():
    masks = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]], requires_grad=True)
    words = torch.tensor([[1.0, 0.1], [0.1, 1.0]])
    labels = torch.tensor([[True, False]])
    WordAlignmentLoss()(masks, words, labels, 10.0).loss.backward()
    grad = masks.grad[0].abs().sum(-1)
    assert grad[0] > 0 and grad[1] > 0  # best mask for word 0 and for word 1
    assert grad[2] == 0  # never the best: no gradient


def test_perfect_alignment_has_lower_loss_and_full_accuracy():
    words = torch.eye(3)
    labels = torch.eye(3, dtype=torch.bool)
    aligned = torch.stack([torch.stack([words[i], -words[(i + 1) % 3]]) for i in range(3)])
    shuffled = aligned[[1, 2, 0]]
    good = WordAlignmentLoss()(aligned, words, labels, 10.0)
    bad = WordAlignmentLoss()(shuffled, words, labels, 10.0)
    assert good.loss < bad.loss
    assert good.accuracy.item() == 1.0 and bad.accuracy.item() == 0.0


def test_shape_errors_are_one_line():
    with pytest.raises(DataError, match=r"word labels must be \[B,W\]"):
        WordAlignmentLoss()(torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 4, dtype=torch.bool), 1.0)
    with pytest.raises(DataError, match="mask features"):
        WordAlignmentLoss()(torch.randn(2, 4), torch.randn(5, 4), torch.zeros(2, 5, dtype=torch.bool), 1.0)


def test_criterion_adds_the_weighted_word_loss():
    torch.manual_seed(1)
    outputs = {"pred_masks": torch.randn(2, 3, 8, 8), "mask_features": torch.randn(2, 3, 4),
               "image_features": torch.randn(2, 4), "text_features": torch.randn(2, 4),
               "word_features": torch.randn(3, 4), "logit_scale": torch.tensor(5.0)}
    targets = [torch.rand(2, 8, 8) > 0.5, torch.rand(1, 8, 8) > 0.5]
    labels = torch.tensor([[True, False, True], [False, True, False]])
    plain = SSegCriterion()(outputs, targets)
    with_words = SSegCriterion(weight_words=0.5)(outputs, targets, word_labels=labels)
    expected = WordAlignmentLoss()(outputs["mask_features"], outputs["word_features"], labels, 5.0).loss
    assert with_words["loss"].item() == pytest.approx(plain["loss"].item() + 0.5 * expected.item(), rel=1e-5)
    assert "loss_words" not in plain


def test_criterion_refuses_missing_word_inputs():
    from sseg.errors import SsegError

    outputs = {"pred_masks": torch.randn(1, 2, 4, 4), "mask_features": torch.randn(1, 2, 4),
               "image_features": torch.randn(1, 4), "text_features": torch.randn(1, 4),
               "logit_scale": torch.tensor(1.0)}
    with pytest.raises(SsegError, match="word"):
        SSegCriterion(weight_words=1.0)(outputs, [torch.ones(1, 4, 4, dtype=torch.bool)])



def test_train_step_with_word_alignment_updates_the_text_tower():
    from sseg.losses.contrastive import ContrastiveLoss
    from sseg.models import SSegModel
    from sseg.models.config import tiny_model_config
    from sseg.training import TrainStep, build_optimizer, cosine_with_warmup, prepare_batch

    torch.manual_seed(0)
    model = SSegModel(tiny_model_config(mask_feature_source="pooled", image_size=32, num_queries=4,
                                        dec_layers=1, text_layers=1))
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999))
    step = TrainStep(model, SSegCriterion(contrastive=ContrastiveLoss(), weight_words=1.0), optimizer,
                     cosine_with_warmup(optimizer, 10, 1), num_segments=4, grad_clip=1.0)
    images = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8).numpy()
    segments = torch.randint(0, 4, (3, 32, 32)).numpy()
    batch = prepare_batch(images, segments, ["fish sky", "car grass", "fish water"], model.cfg.context_length,
                          torch.device("cpu"), ["a photo of a {}."], random.Random(0))
    assert batch.word_tokens.shape[0] == 5 and batch.word_labels.shape == (3, 5)
    before = model.text_encoder.projection[0].weight.detach().clone()
    metrics = step(batch)
    assert math.isfinite(metrics["loss_words"]) and 0 <= metrics["word_accuracy"] <= 1
    assert not torch.equal(before, model.text_encoder.projection[0].weight)
