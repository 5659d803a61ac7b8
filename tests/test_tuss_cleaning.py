"""Confident learning on hand-made scores, and the cleaner end to end on a toy set with known wrong labels."""

import numpy as np
import pytest

from sseg.errors import DataError
from sseg.tuss.cleaning import clean_labels, confident_learning_flags, out_of_fold_scores
from sseg.tuss.config import ProbeConfig


def test_flags_use_per_class_thresholds_not_the_argmax():
    # class 1 is flooded with class-0 masks; the thresholds are the mean probability of the given class
    scores = np.array([
        [0.8, 0.2],  # given 0, confidently 0: kept
        [0.8, 0.2],  # given 0: kept
        [0.7, 0.3],  # given 1, p0 0.7 < 0.8 and p1 0.3 < 0.4: no confident class, kept
        [0.9, 0.1],  # given 1, p0 0.9 >= 0.8: confidently 0, flagged
        [0.4, 0.6],  # given 1, argmax agrees: kept
        [0.5, 0.5],  # unlabelled: never flagged
    ])
    given = np.array([0, 0, 1, 1, 1, -1])
    flags = confident_learning_flags(scores, given)
    # thresholds: class 0 = 0.8, class 1 = (0.3 + 0.1 + 0.6) / 3 = 0.333
    assert flags.tolist() == [False, False, False, True, False, False]
    # a mask above both thresholds takes the more probable class; here its own: kept
    assert not confident_learning_flags(np.array([[0.5, 0.5], [0.45, 0.55]]), np.array([0, 1]))[1]


def test_a_class_nobody_is_labelled_with_is_never_the_confident_class():
    scores = np.array([[0.1, 0.9], [0.2, 0.8]])
    assert not confident_learning_flags(scores, np.array([0, 0])).any()


def test_cleaner_finds_wrong_labels_of_separable_classes():
    rng = np.random.default_rng(1)  # not the folds' seed (0): the same stream would tie the folds to the classes
    n, c = 600, 4
    true = rng.integers(0, c, size=n)
    x = np.eye(c, 8)[true] * 4 + rng.normal(size=(n, 8))
    given = true.copy()
    wrong = rng.choice(n, size=n // 5, replace=False)
    given[wrong] = (true[wrong] + rng.integers(1, c, size=len(wrong))) % c
    y = np.eye(c, dtype=np.float32)[given]
    # a probe that stays near its class-mean start: on this toy the fitted probe's held-out scores are what
    # is tested, not how well SGD at scale 100 copes with 20 % noise
    probe = ProbeConfig(epochs=1, warmup_epochs=1, lr=1e-4)
    cleaned, flags = clean_labels(x, y, np.ones(n), probe, folds=3)
    right = np.setdiff1d(np.arange(n), wrong)
    assert flags[wrong].mean() > 0.9  # the wrong labels are found
    assert flags[right].mean() < 0.1  # and few right ones dropped
    assert (cleaned[flags] == 0).all() and np.array_equal(cleaned[~flags], y[~flags])


def test_out_of_fold_needs_two_folds():
    with pytest.raises(DataError, match="at least 2 folds"):
        out_of_fold_scores(np.zeros((4, 2)), np.eye(2)[[0, 1, 0, 1]], np.ones(4), ProbeConfig(), 1, 0)
