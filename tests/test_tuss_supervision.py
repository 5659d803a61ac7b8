"""TUSS soft labels for each kind of supervision, image-level labels, zero-shot scores and label noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sseg.errors import DataError
from sseg.inference import TextClassifier
from sseg.models.mask_classification import classify_masks
from sseg.tuss.supervision import (Supervision, confusion_counts, corrupt_labels, image_labels_from_label_map,
                                   image_labels_from_names, noise_transition, noisy_full_labels, ranked_within_class,
                                   semi_labels, weak_labels, zero_shot_scores)

PROPORTIONS = np.array([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 0.5], [0.0, 1.0, 0.0]], dtype=np.float32)
SCORES = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]], dtype=np.float32)


def test_full_labels_are_the_ground_truth_proportions_whatever_the_scores():
    sup = Supervision("full", 3, proportions=PROPORTIONS)
    np.testing.assert_array_equal(sup.fill(SCORES), PROPORTIONS)
    np.testing.assert_array_equal(sup.fill(np.zeros_like(SCORES)), PROPORTIONS)


def test_semi_labels_keep_the_labelled_rows_and_balance_the_mass():
    labelled = np.array([True, True, False, False])
    y = Supervision("semi", 3, proportions=PROPORTIONS, labelled=labelled).fill(SCORES)
    np.testing.assert_array_equal(y[:2], PROPORTIONS[:2])
    # labelled mass 2.0, unlabelled scores mass 2.0 → here the factor is 1; check the rule on another case
    np.testing.assert_allclose(y[2:], SCORES[2:])
    y = semi_labels(PROPORTIONS, SCORES, np.array([True, False, False, False]))
    assert y[0].sum() == pytest.approx(1.0)
    assert y[1:].sum() == pytest.approx(1.0)  # unlabelled rows scaled to the labelled mass (1:1)
    np.testing.assert_allclose(y[1:], SCORES[1:] / 3.0, rtol=1e-6)


def test_weak_labels_restrict_to_image_labels_and_max_normalise_per_class_per_image():
    image_index = np.array([0, 0, 1, 1])
    image_labels = np.array([[True, False, True], [False, True, False]])
    y = weak_labels(SCORES, image_index, image_labels)
    expected = np.array([
        [1.0, 0.0, 0.1 / 0.6],   # image 0, class 0: max(.6, .2) = .6; class 2: max(.1, .6) = .6
        [0.2 / 0.6, 0.0, 1.0],
        [0.0, 1.0, 0.0],         # image 1 has only class 1: max(.8, .25)
        [0.0, 0.25 / 0.8, 0.0],
    ])
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    sup = Supervision("weak", 3, image_index=image_index, image_labels=image_labels)
    np.testing.assert_allclose(sup.fill(SCORES), expected, rtol=1e-6)


def test_open_vocabulary_trains_nothing_and_bad_shapes_are_errors():
    with pytest.raises(DataError, match="zero-shot argmax"):
        Supervision("open_vocabulary", 3).fill(SCORES)
    with pytest.raises(DataError, match="needs proportions"):
        Supervision("full", 3)
    with pytest.raises(DataError, match="2 classes, the class list 3"):
        Supervision("full", 3, proportions=PROPORTIONS[:, :2])
    with pytest.raises(DataError, match="scores have 2 classes"):
        Supervision("full", 3, proportions=PROPORTIONS).fill(SCORES[:, :2])


def test_zero_shot_scores_agree_with_the_segmenters_mask_classifier():
    torch.manual_seed(0)
    emb = torch.randn(5, 8)
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    concept_to_class = [0, 1, 1, 2]
    ours = zero_shot_scores(emb, text, concept_to_class, scale=100.0)
    clf = TextClassifier(["a", "b", "c"], ["a", "b1", "b2", "c"], text, torch.tensor(concept_to_class), ("{}",))
    theirs = classify_masks(emb[None], clf, 100.0)[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    plain = zero_shot_scores(emb, text)
    np.testing.assert_allclose(plain.sum(1), 1.0, rtol=1e-5)


def test_image_labels_from_names_and_label_maps():
    labels = image_labels_from_names([["cat", "dog"], [], ["dog"]], ["cat", "dog", "sky"])
    assert labels.tolist() == [[True, True, False], [False, False, False], [False, True, False]]
    with pytest.raises(DataError, match="'cow' is not one of the classes"):
        image_labels_from_names([["cow"]], ["cat", "dog"])
    label = np.array([[0, 0, 2], [255, 2, 2]])
    assert image_labels_from_label_map(label, 3).tolist() == [True, False, True]
    assert image_labels_from_label_map(label, 3, min_pixels=3).tolist() == [False, False, True]
    with pytest.raises(DataError, match="label 2 is outside the 2 classes"):
        image_labels_from_label_map(label, 2)


def test_uniform_noise_changes_exactly_the_rate_to_other_classes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 100)
    for rate in (0.2, 0.4, 0.6):
        noisy = corrupt_labels(labels, rate, 5, rng)
        assert (noisy != labels).sum() == round(rate * len(labels))
    counts = confusion_counts(labels, corrupt_labels(labels, 0.6, 5, rng), 5)
    off = counts[~np.eye(5, dtype=bool)]
    assert off.min() > 0  # every other class is reached


def test_confusion_shaped_noise_follows_the_off_diagonal_of_each_row():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 200)
    confusion = np.array([[50, 10, 0], [0, 50, 30], [5, 5, 50]])
    noisy = corrupt_labels(labels, 0.4, 3, rng, confusion)
    assert (noisy != labels).sum() == 240
    assert np.all(noisy[(labels == 0) & (noisy != 0)] == 1)  # class 0 is only ever confused with 1
    assert np.all(noisy[(labels == 1) & (noisy != 1)] == 2)
    changed2 = noisy[(labels == 2) & (noisy != 2)]
    assert set(changed2.tolist()) == {0, 1}


def test_noisy_full_labels_turn_corrupted_masks_one_hot():
    rng = np.random.default_rng(1)
    props = np.eye(3, dtype=np.float32)[np.repeat(np.arange(3), 10)] * 0.9
    props[0] = 0  # a mask without labelled pixels is never corrupted
    y, changed = noisy_full_labels(props, 0.5, rng)
    assert not changed[0] and changed.sum() == round(0.5 * 29)
    assert np.all(y[changed].sum(1) == 1) and np.all(y[changed].argmax(1) != props[changed].argmax(1))
    np.testing.assert_array_equal(y[~changed], props[~changed])


def test_noisy_labels_start_the_bootstrap_and_are_then_replaced_by_scores():
    noisy = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    sup = Supervision("noisy", 3, proportions=noisy)
    np.testing.assert_array_equal(sup.initial(SCORES), noisy)  # not the zero-shot scores
    np.testing.assert_allclose(sup.fill(2 * SCORES), SCORES / SCORES.sum(1, keepdims=True), rtol=1e-6)
    full = Supervision("full", 3, proportions=PROPORTIONS)
    np.testing.assert_array_equal(full.initial(SCORES), PROPORTIONS)


def test_noisy_labels_can_be_mixed_with_the_scores_or_filtered_by_them():
    noisy = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    noisy[2] = 0.0  # a mask without a label stays without one under the filter
    rows = SCORES / SCORES.sum(1, keepdims=True)
    mixed = Supervision("noisy", 3, proportions=noisy, keep=0.25).fill(SCORES)
    np.testing.assert_allclose(mixed, 0.25 * noisy + 0.75 * rows, rtol=1e-6)
    # argmax of SCORES: 0, 2, 1, 0 → only the first label (0) agrees
    kept = Supervision("noisy", 3, proportions=noisy, filter=True).fill(SCORES)
    np.testing.assert_array_equal(kept, np.eye(3, dtype=np.float32)[[0]].repeat(4, 0) * [[1], [0], [0], [0]])


def test_noise_transition_is_the_label_distribution_of_each_scored_class_and_the_posterior_follows_bayes():
    # scores say masks 0-3 are class 0 and masks 4-5 class 1; class 0 is labelled 1 once in four
    scores = np.eye(3, dtype=np.float32)[[0, 0, 0, 0, 1, 1]]
    given = np.eye(3, dtype=np.float32)[[0, 0, 0, 1, 1, 1]]
    given_unlabelled = np.vstack([given, np.zeros((1, 3), np.float32)])
    t = noise_transition(np.vstack([scores, [[0, 0, 1]]]), given_unlabelled)
    np.testing.assert_allclose(t, [[0.75, 0.25, 0], [0, 1, 0], [0, 0, 1]])  # class 2: no labelled mask → identity
    soft = np.array([[0.5, 0.5, 0.0]], dtype=np.float32)
    out = Supervision("noisy", 3, proportions=np.array([[0, 1, 0]], np.float32), transition=True).fill(
        np.vstack([soft]))
    # one mask: T rows = its own scores' label distribution → both rows [0, 1, 0]: posterior ∝ 0.5·1, 0.5·1
    np.testing.assert_allclose(out, [[0.5, 0.5, 0.0]], rtol=1e-6)
    mixed = np.vstack([scores, soft])
    labels = np.vstack([given, [[0, 1, 0]]]).astype(np.float32)
    t = noise_transition(mixed, labels)
    post = Supervision("noisy", 3, proportions=labels, transition=True).fill(mixed)
    expected = 0.5 * t[:, 1]
    np.testing.assert_allclose(post[-1], expected / expected.sum(), rtol=1e-5)


def test_rank_selection_keeps_each_given_classs_best_scored_share_even_against_the_argmax():
    # class 1 is flooded: four masks labelled 1, all with the argmax on class 0, ranked by their class-1 score
    given = np.eye(2, dtype=np.float32)[[1, 1, 1, 1, 0, 0]]
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.95, 0.05], [0.8, 0.2], [0.3, 0.7]], np.float32)
    np.testing.assert_array_equal(ranked_within_class(scores, given, 0.5), [False, True, True, False, True, False])
    unlabelled = np.vstack([given, np.zeros((1, 2), np.float32)])
    keep = ranked_within_class(np.vstack([scores, [[0.5, 0.5]]]), unlabelled, 1.0)
    np.testing.assert_array_equal(keep, [True] * 6 + [False])
    out = Supervision("noisy", 2, proportions=given, rank_keep=0.5).fill(scores)
    np.testing.assert_array_equal(out, given * np.array([0, 1, 1, 0, 1, 0], np.float32)[:, None])
