"""Choosing GLCC's hyperparameters on a held-out slice of the *training* split, never on the evaluation split.

The training images are split (seeded) into a fitting part and a held-out part. Every grid point runs the
bootstrap on the fitting part with the supervision restricted to it, classifies the held-out masks and
scores them against their ground truth (the held-out images' labels serve only this choice). The score
is the mean of held-out mIoU and mask F1. The public TUSS code tunes α, k̄ and the combination weight on
the evaluation split; here nothing the evaluation reports is seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from sseg.errors import ConfigError, DataError
from sseg.tuss.config import GLCCConfig
from sseg.tuss.glcc import fit_probe, run_glcc
from sseg.tuss.noise_model import NoiseModel
from sseg.tuss.propagation import KnnGraph, knn_graph
from sseg.tuss.supervision import Supervision
from sseg.tuss.table import MaskTable, score

TUNABLE = ("alpha", "k", "weight", "gamma")


def holdout_flags(num_images: int, fraction: float, seed: int) -> np.ndarray:
    """bool ``[num_images]``: True for the held-out images (at least one, at least one left to fit)."""
    if num_images < 2:
        raise DataError(f"tuning needs at least 2 training images (got {num_images})")
    count = min(num_images - 1, max(1, int(round(fraction * num_images))))
    flags = np.zeros(num_images, dtype=bool)
    flags[np.random.default_rng(seed).choice(num_images, size=count, replace=False)] = True
    return flags


@dataclass
class TuningResult:
    best: GLCCConfig
    trials: list[dict[str, Any]]  # one per grid point: the values and the held-out miou, f1, score


def tune_glcc(train: MaskTable, train_scores: np.ndarray, supervision_for: Callable[[np.ndarray], Supervision],
              cfg: GLCCConfig, grid: dict[str, list], num_classes: int, holdout_fraction: float = 0.2,
              seed: int = 0, noise: NoiseModel | None = None) -> TuningResult:
    """Grid search over ``grid`` (keys among :data:`TUNABLE`) of the propagation settings.

    ``supervision_for(row_flags)`` builds the supervision of the training rows where ``row_flags`` is true
    (in order), ``train_scores`` are all training masks' zero-shot scores; ``noise``: the probe steps' noise
    model (estimated on the fitting part).
    """
    unknown = set(grid) - set(TUNABLE)
    if unknown:
        raise ConfigError(f"cannot tune {', '.join(sorted(unknown))}: tunable are {', '.join(TUNABLE)}")
    if "propagation" not in cfg.order:  # nothing of the grid is used
        return TuningResult(cfg, [])
    held_images = holdout_flags(len(train.image_ids), holdout_fraction, seed)
    held_rows = held_images[train.image_index]
    fit, held = train.select_images(~held_images), train.select_images(held_images)
    supervision = supervision_for(~held_rows)
    weights = [float(w) for w in grid.get("weight", [cfg.propagation.weight])]
    order = cfg.order
    # the weight only scales the last propagation's votes, unless a propagation feeds it its prior
    one_pass = order[-1] == "propagation" and (len(order) == 1 or order[-2] == "probe")
    keys = [k for k in grid if k != "weight"] + ([] if one_pass else ["weight"])
    graphs: dict[tuple[int, float], KnnGraph] = {}
    first = None
    if order[0] == "probe":  # trained on the initial labels alone: the same at every grid point
        labels = supervision.initial(train_scores[~held_rows])
        first = fit_probe(fit.embeddings, labels, fit.area, cfg, noise)
    trials, best, best_score = [], cfg, -np.inf
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = {k: (int(v) if k == "k" else float(v)) for k, v in zip(keys, values)}
        prop = cfg.propagation.model_copy(update=setting)
        graph = None
        if "propagation" in order:
            if (prop.k, prop.gamma) not in graphs:
                graphs[(prop.k, prop.gamma)] = knn_graph(fit.embeddings, prop.k, prop.gamma)
            graph = graphs[(prop.k, prop.gamma)]
        result = run_glcc(fit.embeddings, fit.area, supervision, train_scores[~held_rows], held.embeddings,
                          cfg.model_copy(update={"propagation": prop}), graph=graph, first_probe=first, noise=noise)
        for weight in (weights if one_pass else [prop.weight]):
            scores = result.last_prior + weight * result.last_votes if one_pass else result.test_scores
            metrics = score(held, scores.argmax(axis=1), num_classes)
            value = 0.5 * (metrics["miou"] + metrics["f1"])
            trials.append({**setting, "weight": weight, "miou": metrics["miou"], "f1": metrics["f1"], "score": value})
            if value > best_score:
                best_score = value
                best = cfg.model_copy(update={"propagation": prop.model_copy(update={"weight": weight})})
    return TuningResult(best, trials)
