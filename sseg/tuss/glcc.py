"""GLCC: the linear probe and inductive label propagation bootstrapping each other (TUSS Sec. 4.2).

The state is the training masks' soft labels ``Y`` (the supervision filled in by some scores) and the test
masks' current scores. Each step of ``order`` trains on ``Y``:

* ``probe``: fit the cosine probe on ``Y``; the test scores (and the prior of a later propagation) become
  its scores; ``Y`` ← the supervision filled in by its scores on the training masks (``Ŷ``);
* ``propagation``: propagate ``Y`` on the kNN graph (``Y*``); the test scores become the inductive
  classifier's, with the current test scores as prior (zeros when no probe ran before); ``Y`` ← the
  supervision filled in by ``Y*`` (rows normalised).

The paper's GLCC is ``probe, propagation, probe, propagation``; Table 7's rows are other orders (``probe``
alone is the baseline). Full supervision fills in nothing, so its ``Y`` stays the ground truth; noisy labels
(``Supervision("noisy")``) are pseudo-labels and are replaced like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from sseg.errors import DataError
from sseg.tuss.config import GLCCConfig
from sseg.tuss.noise_model import NoiseModel
from sseg.tuss.probe import CosineProbe, train_probe
from sseg.tuss.propagation import KnnGraph, inductive_votes, knn_graph, propagate
from sseg.tuss.supervision import Supervision, normalise_rows


@dataclass
class GLCCResult:
    test_scores: np.ndarray  # [M, C]
    labels_before: np.ndarray  # [N, C] the training soft labels GLCC started from
    labels_after: np.ndarray  # [N, C] the training soft labels after the last step
    seconds: dict[str, float] = field(default_factory=dict)  # time per kind of step, graph included
    # when the last step is a propagation: test_scores = last_prior + weight · last_votes (what tuning the
    # weight needs; the training labels never depend on it)
    last_prior: np.ndarray | None = None
    last_votes: np.ndarray | None = None


def fit_probe(x: np.ndarray, y: np.ndarray, area: np.ndarray, cfg: GLCCConfig,
              noise: NoiseModel | None = None) -> CosineProbe:
    """One probe step: through the noise model when there is one, otherwise the plain probe."""
    return noise.train(x, y, area) if noise is not None else train_probe(x, y, area, cfg.probe)


def run_glcc(train_x: np.ndarray, train_area: np.ndarray, supervision: Supervision, initial_scores: np.ndarray,
             test_x: np.ndarray, cfg: GLCCConfig, graph: KnnGraph | None = None,
             first_probe: CosineProbe | None = None, noise: NoiseModel | None = None) -> GLCCResult:
    """``initial_scores [N, C]``: the zero-shot scores of the training masks (what the supervision is first
    filled in with). ``graph``: a prebuilt kNN graph of ``train_x`` (built here on first use otherwise).
    ``first_probe``: the probe of a first ``probe`` step, already trained on the same initial labels (it
    depends on nothing else, so a hyperparameter search trains it once). ``noise``: every probe step is fitted
    through this model of the labels' noise (full supervision)."""
    if len(train_x) != len(initial_scores):
        raise DataError(f"{len(train_x)} training embeddings but {len(initial_scores)} score rows")
    seconds = {"probe": 0.0, "graph": 0.0, "propagation": 0.0}
    y = supervision.initial(initial_scores)
    before = y.copy()
    test_scores: np.ndarray | None = None
    prior = votes = None
    prop = cfg.propagation
    for i, step in enumerate(cfg.order):
        start = time.perf_counter()
        if step == "probe":
            if i == 0 and first_probe is not None:
                probe = first_probe
            else:
                probe = fit_probe(train_x, y, train_area, cfg, noise)
            test_scores = probe.scores(test_x)
            train_scores = probe.scores(train_x)
            prior = votes = None
        else:
            if graph is None:
                graph = knn_graph(train_x, prop.k, prop.gamma)
                seconds["graph"] += time.perf_counter() - start
                start = time.perf_counter()
            y_star = propagate(graph, y, prop.alpha, prop.tol, prop.max_iter)
            votes = inductive_votes(graph, y_star, test_x, prop.k, prop.k_bar)
            prior = np.zeros_like(votes) if test_scores is None else test_scores
            test_scores = prior + prop.weight * votes
            train_scores = normalise_rows(y_star)
        y = supervision.fill(train_scores)
        seconds[step] += time.perf_counter() - start
    return GLCCResult(test_scores, before, y, seconds, prior, votes)
