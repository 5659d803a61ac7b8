"""Finding wrong labels before the bootstrap: confident learning (Northcutt et al. 2021) on the cosine probe.

Every labelled mask is scored by a probe that never saw it (``folds``-fold cross-fitting on the given labels).
A class's threshold is the mean out-of-fold probability of that class over the masks labelled with it — so a
class flooded with wrong labels gets a low threshold rather than an argmax that sides with its majority. A
mask's *confident* class is the most probable of the classes whose probability reaches their threshold; a
mask whose confident class exists and differs from its given label is flagged (the confident joint's
off-diagonal, ``cj_only`` in the paper). Flagged masks lose their label; everything else is untouched.
"""

from __future__ import annotations

import numpy as np

from sseg.errors import DataError
from sseg.tuss.config import ProbeConfig
from sseg.tuss.probe import train_probe


def out_of_fold_scores(x: np.ndarray, y: np.ndarray, area: np.ndarray, cfg: ProbeConfig, folds: int,
                       seed: int) -> np.ndarray:
    """``[N, C]`` class probabilities of every mask from a probe trained on the other folds' labels (rows of
    unlabelled masks are scored too; they never train)."""
    if folds < 2:
        raise DataError(f"cross-fitting needs at least 2 folds (got {folds})")
    fold = np.random.default_rng(seed).integers(0, folds, size=len(x))
    scores = np.zeros(y.shape, dtype=np.float32)
    for f in range(folds):
        train = fold != f
        probe = train_probe(x[train], y[train], area[train], cfg)
        scores[~train] = probe.scores(x[~train])
    return scores


def confident_classes(scores: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``scores [N, C]`` out-of-fold probabilities, ``given [N]`` labels (−1: unlabelled) -> ``[N]`` each mask's
    confident class (−1 where no class reaches its threshold)."""
    scores = np.asarray(scores, dtype=np.float64)
    given = np.asarray(given, dtype=np.int64)
    labelled = given >= 0
    c = scores.shape[1]
    counts = np.bincount(given[labelled], minlength=c)
    sums = np.bincount(given[labelled], weights=scores[labelled, given[labelled]], minlength=c)
    # a class nobody is labelled with cannot be a confident class (infinite threshold)
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    above = scores >= thresholds[None, :]
    return np.where(above.any(axis=1), np.where(above, scores, -np.inf).argmax(axis=1), -1)


def confident_learning_flags(scores: np.ndarray, given: np.ndarray) -> np.ndarray:
    """bool [N]: True where a labelled mask's confident class exists and is not its label."""
    return _flags(confident_classes(scores, given), given)


def _flags(confident: np.ndarray, given: np.ndarray) -> np.ndarray:
    given = np.asarray(given)
    return (given >= 0) & (confident >= 0) & (confident != given)


def clean_labels(x: np.ndarray, y: np.ndarray, area: np.ndarray, cfg: ProbeConfig, folds: int = 5,
                 seed: int = 0, relabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Soft labels ``y [N, C]`` with the flagged masks' rows zeroed (``relabel``: one-hot of their confident
    class instead), and the bool [N] flags."""
    y = np.asarray(y, dtype=np.float32)
    given = np.where(y.sum(axis=1) > 0, y.argmax(axis=1), -1)
    confident = confident_classes(out_of_fold_scores(x, y, area, cfg, folds, seed), given)
    flags = _flags(confident, given)
    cleaned = y.copy()
    cleaned[flags] = 0.0
    if relabel:
        cleaned[flags, confident[flags]] = 1.0
    return cleaned, flags
