"""TagCLIP's inference rule on hand-made tensors."""

import math

import pytest
import torch

from sseg.tagclip.scores import combine_scores, max_over_concepts


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def maps(*values):
    return torch.tensor([[[[logit(v)]] for v in values]])  # [1, K, 1, 1]


def test_weighting_rule_on_one_pixel():
    # classes: seen (p .8), unseen (p .6); trusty probability .7 (the pixel is likely not seen)
    scores = combine_scores(maps(0.8, 0.6), maps(0.7), torch.tensor([True, False]))
    assert scores.flatten().tolist() == pytest.approx([(0.8 - 0.1) * 0.3, 0.6 * 0.7])
    assert scores.argmax(1).item() == 1  # the unseen class wins
    # without weighting only the seen bias applies: the seen class wins
    plain = combine_scores(maps(0.8, 0.6), maps(0.7), torch.tensor([True, False]), weighting=False)
    assert plain.flatten().tolist() == pytest.approx([0.7, 0.6])
    assert plain.argmax(1).item() == 0
    # no trusty map (baseline): same as no weighting
    assert torch.equal(combine_scores(maps(0.8, 0.6), None, torch.tensor([True, False])), plain)


def test_weighting_over_a_map_and_the_bias():
    # two pixels: a seen-looking one (w = .1) and an unseen-looking one (w = .9)
    cls = torch.tensor([[[[logit(0.9), logit(0.5)]], [[logit(0.4), logit(0.45)]]]])  # [1, 2, 1, 2]
    trusty = torch.tensor([[[[logit(0.1), logit(0.9)]]]])
    seen = torch.tensor([True, False])
    scores = combine_scores(cls, trusty, seen, bias=0.2)
    expected = torch.tensor([[[[(0.9 - 0.2) * 0.9, (0.5 - 0.2) * 0.1]], [[0.4 * 0.1, 0.45 * 0.9]]]])
    assert torch.allclose(scores, expected, atol=1e-6)
    assert scores.argmax(1).tolist() == [[[0, 1]]]
    with pytest.raises(ValueError, match="2 class maps but 3 seen flags"):
        combine_scores(cls, trusty, torch.tensor([True, False, True]))


def test_max_over_concepts():
    scores = torch.tensor([[[[0.1]], [[0.5]], [[0.3]]]])  # concepts 0, 1 -> class 0; concept 2 -> class 1
    out = max_over_concepts(scores, torch.tensor([0, 0, 1]), 2)
    assert out.flatten().tolist() == pytest.approx([0.5, 0.3])


def test_zero_shot_ensemble_weights_the_decoder_on_seen_and_the_vlm_on_unseen():
    # seen class: decoder .8, VLM .3; unseen class: decoder .2, VLM .6; no trusty map, bias 0
    p, q = maps(0.8, 0.2), torch.tensor([[[[0.3]], [[0.6]]]])
    seen = torch.tensor([True, False])
    mixed = combine_scores(p, None, seen, bias=0.0, zero_shot=q, zero_shot_weight=0.8)
    assert mixed.flatten().tolist() == pytest.approx([0.8 ** 0.8 * 0.3 ** 0.2, 0.2 ** 0.2 * 0.6 ** 0.8])
    assert mixed.argmax(1).item() == 0
    # weight 1: the decoder alone on seen classes, the VLM alone on unseen ones; weight 0 (or no map): the paper
    only = combine_scores(p, None, seen, bias=0.0, zero_shot=q, zero_shot_weight=1.0)
    assert only.flatten().tolist() == pytest.approx([0.8, 0.6])
    assert torch.equal(combine_scores(p, None, seen, zero_shot=q, zero_shot_weight=0.0), combine_scores(p, None, seen))
    # the bias and the trusty weighting act on the mixed probability
    w = maps(0.7)
    weighted = combine_scores(p, w, seen, bias=0.1, zero_shot=q, zero_shot_weight=1.0)
    assert weighted.flatten().tolist() == pytest.approx([(0.8 - 0.1) * 0.3, 0.6 * 0.7])
