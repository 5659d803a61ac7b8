"""GLCC (TUSS Sec. 3, 4.2): the kNN graph, the conjugate-gradient solve, the inductive classifier, the cosine
probe and the bootstrap orders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sseg.errors import DataError
from sseg.tuss.config import GLCCConfig, ProbeConfig, PropagationConfig
from sseg.tuss.glcc import run_glcc
from sseg.tuss.paint import mask_f1
from sseg.tuss.probe import train_probe
from sseg.tuss.propagation import conjugate_gradient, inductive_scores, knn_graph, propagate, unit_rows
from sseg.tuss.supervision import Supervision, corrupt_labels


def clusters(n_per=60, classes=4, dim=16, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(classes, dim)))
    labels = np.repeat(np.arange(classes), n_per)
    x = unit_rows(centres[labels] + spread * rng.normal(size=(len(labels), dim)) / math.sqrt(dim))
    return x, labels


# ----------------------------------------------------------------------------- graph


def test_knn_graph_is_symmetric_normalised_with_k_nearest_neighbours():
    x, _ = clusters(n_per=15, classes=3)
    k = 5
    g = knn_graph(x, k=k, gamma=3.0)
    n = len(x)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    brute = np.argsort(-sims, axis=1)[:, :k]
    assert g.neighbours.shape == (n, k)
    assert all(set(g.neighbours[i]) == set(brute[i]) for i in range(n))
    assert not np.any(g.neighbours == np.arange(n)[:, None])
    # dense reference: a_ij = max(sim, 0)^gamma over the k nearest, W = A + Aᵀ, D^-1/2 W D^-1/2
    a = np.zeros((n, n))
    for i in range(n):
        a[i, brute[i]] = np.clip(sims[i, brute[i]], 0, None) ** 3.0
    w = a + a.T
    d = w.sum(1)
    w_hat = w / np.sqrt(np.outer(d, d))
    dense = g.w_hat.toarray()
    np.testing.assert_allclose(dense, dense.T, atol=1e-6)
    np.testing.assert_allclose(dense, w_hat, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g.degree, d, rtol=1e-4)
    assert np.all(np.diag(dense) == 0)
    assert np.abs(np.linalg.eigvalsh(dense)).max() <= 1 + 1e-5  # normalised: spectrum in [-1, 1]


def test_knn_graph_caps_k_and_refuses_a_single_mask():
    x, _ = clusters(n_per=2, classes=2)
    assert knn_graph(x, k=50).k == 3
    with pytest.raises(DataError, match="at least 2"):
        knn_graph(x[:1], k=5)


# ----------------------------------------------------------------------------- solve


def test_conjugate_gradient_matches_a_dense_solve():
    x, labels = clusters(n_per=20, classes=3)
    g = knn_graph(x, k=6)
    rng = np.random.default_rng(1)
    y = np.eye(3)[labels] * rng.uniform(0.2, 1.0, size=(len(x), 1))
    y[rng.random(len(x)) < 0.5] = 0  # half the masks unlabelled
    alpha = 0.9
    dense = np.linalg.solve(np.eye(len(x)) - alpha * g.w_hat.toarray(), y)
    ours = propagate(g, y, alpha=alpha, tol=1e-10, max_iter=500)
    np.testing.assert_allclose(ours, np.clip(dense, 0, None), rtol=1e-4, atol=1e-6)
    # a general SPD system, several right-hand sides, converging in at most N iterations
    m = rng.normal(size=(30, 30))
    spd = m @ m.T + 30 * np.eye(30)
    b = rng.normal(size=(30, 4))
    sol, iterations = conjugate_gradient(lambda v: spd @ v, b, tol=1e-12, max_iter=200)
    np.testing.assert_allclose(sol, np.linalg.solve(spd, b), rtol=1e-6, atol=1e-9)
    assert iterations <= 30


def test_propagation_clips_negatives():
    x, _ = clusters(n_per=10, classes=2)
    g = knn_graph(x, k=4)
    y = np.zeros((len(x), 2))
    y[0, 1] = -1.0
    out = propagate(g, y)
    assert out.min() == 0.0 and out[:, 1].max() == 0.0


# ----------------------------------------------------------------------------- inductive classifier


def test_inductive_classifier_on_a_hand_made_case():
    # three training masks on the unit circle; k = 1 graph:
    # x0 → x2 (0.6), x1 → x2 (0.8), x2 → x1 (0.8); W = A + Aᵀ: W02 = .6, W12 = 1.6 → d = (.6, 1.6, 2.2)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    g = knn_graph(x, k=1)
    np.testing.assert_allclose(g.degree, [0.6, 1.6, 2.2], rtol=1e-6)
    y_star = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.5]])
    query = np.array([[0.8, 0.6]])  # similarities .8, .6, .96 → its 2 nearest: x2 (.96), x0 (.8); ‖a‖₁ = 1.76
    prior = np.array([[0.1, 0.2]])
    out = inductive_scores(g, y_star, query, prior, k=2, k_bar=2.0, weight=0.5)
    c2 = 0.96 / math.sqrt(0.5 * 1.0 * 2.2 * 1.76)
    c0 = 0.8 / math.sqrt(0.5 * 1.0 * 0.6 * 1.76)
    expected = [0.1 + 0.5 * (c0 * 1.0 + c2 * 0.2), 0.2 + 0.5 * (c2 * 0.5)]
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
    # no prior: the votes alone; k̄/k scales the normaliser
    alone = inductive_scores(g, y_star, query, None, k=2, k_bar=8.0, weight=1.0)
    np.testing.assert_allclose(alone[0], [(c0 + c2 * 0.2) / 2, c2 * 0.5 / 2], rtol=1e-5)


# ----------------------------------------------------------------------------- probe


def test_probe_learns_clusters_and_weighs_by_area():
    x, labels = clusters()
    probe = train_probe(x, np.eye(4)[labels], np.ones(len(x)), ProbeConfig(epochs=20, batch_size=64))
    assert (probe.scores(x).argmax(1) == labels).mean() > 0.95
    # two copies of one embedding with opposite labels: the larger mask wins
    e = x[:1].repeat(2, axis=0)
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    big_first = train_probe(e, y, np.array([10.0, 1.0]), ProbeConfig(epochs=50, batch_size=2))
    big_second = train_probe(e, y, np.array([1.0, 10.0]), ProbeConfig(epochs=50, batch_size=2))
    assert big_first.scores(e[:1]).argmax() == 0 and big_second.scores(e[:1]).argmax() == 1
    with pytest.raises(DataError, match="no supervised mask"):
        train_probe(x, np.zeros((len(x), 4)), np.ones(len(x)), ProbeConfig())


def test_prototype_start_beats_a_random_start_on_noisy_labels():
    for seed in (0, 1, 2):
        train_x, test_x, _, test_y, sup = _noisy_setting(seed=seed)
        acc = {}
        for init in ("random", "prototype"):
            probe = train_probe(train_x, sup.proportions, np.ones(len(train_x)), ProbeConfig(init=init, batch_size=64))
            acc[init] = (probe.scores(test_x).argmax(1) == test_y).mean()
        assert acc["prototype"] > acc["random"] + 0.05, (seed, acc)


# ----------------------------------------------------------------------------- bootstrap


def _noisy_setting(rate=0.4, seed=0):
    x, labels = clusters(n_per=80, classes=4, spread=0.6, seed=seed)
    rng = np.random.default_rng(seed)
    test = rng.random(len(x)) < 0.3
    noisy = corrupt_labels(labels[~test], rate, 4, rng)
    sup = Supervision("full", 4, proportions=np.eye(4, dtype=np.float32)[noisy])
    return x[~test], x[test], labels[~test], labels[test], sup


def test_glcc_beats_the_probe_on_noisy_labels():
    train_x, test_x, _, test_y, sup = _noisy_setting()
    area = np.ones(len(train_x))
    zero = np.zeros((len(train_x), 4))
    probe = ProbeConfig(epochs=20, batch_size=64)
    prop = PropagationConfig(k=10, alpha=0.9, weight=1.0, k_bar=10)
    base = run_glcc(train_x, area, sup, zero, test_x, GLCCConfig(order=("probe",), probe=probe, propagation=prop))
    glcc = run_glcc(train_x, area, sup, zero, test_x,
                    GLCCConfig(order=("probe", "propagation"), probe=probe, propagation=prop))
    f1_base = mask_f1(base.test_scores.argmax(1), test_y, 4)["f1"]
    f1_glcc = mask_f1(glcc.test_scores.argmax(1), test_y, 4)["f1"]
    assert f1_glcc > f1_base + 0.02, (f1_base, f1_glcc)
    assert set(glcc.seconds) == {"probe", "graph", "propagation"}
    np.testing.assert_array_equal(glcc.labels_after, sup.proportions)  # full supervision: Y never changes


def test_weak_supervision_bootstrap_improves_the_pseudo_labels():
    x, labels = clusters(n_per=60, classes=4, spread=0.7, seed=3)
    rng = np.random.default_rng(3)
    image_index = np.arange(len(x)) // 4  # 4 masks per image
    rng.shuffle(image_index)
    n_images = image_index.max() + 1
    image_labels = np.zeros((n_images, 4), dtype=bool)
    image_labels[image_index, labels] = True
    # weak, noisy zero-shot scores: the true class wins only 40 % of the time
    scores = rng.dirichlet(np.ones(4), size=len(x))
    scores[np.arange(len(x)), labels] += np.where(rng.random(len(x)) < 0.4, 1.0, 0.0)
    sup = Supervision("weak", 4, image_index=image_index, image_labels=image_labels)
    cfg = GLCCConfig(probe=ProbeConfig(epochs=20, batch_size=64), propagation=PropagationConfig(k=10, k_bar=10))
    out = run_glcc(x, np.ones(len(x)), sup, scores, x[:10], cfg)
    acc = lambda y: (y.argmax(1) == labels).mean()  # noqa: E731
    assert acc(out.labels_after) > acc(out.labels_before) + 0.05


def test_propagation_alone_uses_a_zero_prior():
    train_x, test_x, _, _, sup = _noisy_setting(rate=0.0)
    prop = PropagationConfig(k=8, k_bar=8)
    out = run_glcc(train_x, np.ones(len(train_x)), sup, np.zeros((len(train_x), 4)), test_x,
                   GLCCConfig(order=("propagation",), propagation=prop))
    g = knn_graph(train_x, 8)
    expected = inductive_scores(g, propagate(g, sup.proportions), test_x, None, 8, 8.0, 1.0)
    np.testing.assert_allclose(out.test_scores, expected, rtol=1e-5)


# ----------------------------------------------------------------------------- tuning


def test_tuning_picks_from_the_grid_on_held_out_training_images():
    from sseg.tuss.table import MaskTable
    from sseg.tuss.tuning import holdout_flags, tune_glcc

    x, labels = clusters(n_per=40, classes=3, spread=0.5, seed=4)
    image_index = np.arange(len(x)) // 3
    counts = np.eye(3, dtype=np.int64)[labels] * 10
    table = MaskTable([f"i{i}" for i in range(image_index.max() + 1)], image_index, np.full(len(x), 10.0), x,
                      counts, counts)
    seen = []

    def supervision_for(rows):
        seen.append(rows.copy())
        return Supervision("full", 3, proportions=table.proportions[rows])

    cfg = GLCCConfig(order=("propagation",), propagation=PropagationConfig(k=5, k_bar=5))
    out = tune_glcc(table, np.zeros((len(x), 3)), supervision_for, cfg, {"weight": [0.0, 1.0], "k": [3, 5]}, 3,
                    holdout_fraction=0.25, seed=0)
    assert len(out.trials) == 4 and {t["weight"] for t in out.trials} == {0.0, 1.0}
    assert out.best.propagation.weight == 1.0  # weight 0 with no prior predicts class 0 everywhere
    held = holdout_flags(len(table.image_ids), 0.25, 0)
    assert held.sum() == 10 and np.array_equal(seen[0], ~held[image_index])
    with pytest.raises(Exception, match="cannot tune lr"):
        tune_glcc(table, np.zeros((len(x), 3)), supervision_for, cfg, {"lr": [1.0]}, 3)


def test_a_given_first_probe_is_the_one_training_would_give():
    from sseg.tuss.probe import train_probe

    train_x, test_x, _, _, sup = _noisy_setting(rate=0.2)
    cfg = GLCCConfig(order=("probe", "propagation"), probe=ProbeConfig(epochs=3, batch_size=64),
                     propagation=PropagationConfig(k=8, k_bar=8))
    area, zero = np.ones(len(train_x)), np.zeros((len(train_x), 4))
    first = train_probe(train_x, sup.fill(zero), area, cfg.probe)
    a = run_glcc(train_x, area, sup, zero, test_x, cfg)
    b = run_glcc(train_x, area, sup, zero, test_x, cfg, first_probe=first)
    np.testing.assert_allclose(a.test_scores, b.test_scores, rtol=1e-6)


def test_glcc_cleans_noisy_pseudo_labels():
    train_x, _, train_y, _, full = _noisy_setting(rate=0.4, seed=1)
    sup = Supervision("noisy", 4, proportions=full.proportions)
    cfg = GLCCConfig(probe=ProbeConfig(epochs=10, batch_size=64), propagation=PropagationConfig(k=10, k_bar=10))
    out = run_glcc(train_x, np.ones(len(train_x)), sup, np.zeros((len(train_x), 4)), train_x[:5], cfg)
    before = (out.labels_before.argmax(1) == train_y).mean()
    after = (out.labels_after.argmax(1) == train_y).mean()
    assert before == pytest.approx(0.6, abs=0.01) and after > before + 0.15, (before, after)


def test_generalised_cross_entropy_tends_to_cross_entropy_and_is_bounded_at_q_1():
    import torch

    from sseg.tuss.probe import generalised_cross_entropy, soft_cross_entropy

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0]])
    weights = torch.tensor([1.0, 2.0])
    ce = soft_cross_entropy(logits, targets, weights)
    assert torch.isclose(generalised_cross_entropy(logits, targets, weights, 1e-5), ce, rtol=1e-3)
    p = logits.softmax(-1)
    mae = (weights * (targets * (1 - p)).sum(-1)).mean()  # q = 1: the bounded, noise-robust loss
    assert torch.isclose(generalised_cross_entropy(logits, targets, weights, 1.0), mae)


def test_forward_correction_is_cross_entropy_through_the_transition():
    import torch

    from sseg.tuss.probe import forward_corrected_cross_entropy, soft_cross_entropy

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.7, 0.0]])
    weights = torch.tensor([1.0, 2.0])
    assert torch.isclose(forward_corrected_cross_entropy(logits, targets, weights, torch.eye(3)),
                         soft_cross_entropy(logits, targets, weights))
    t = torch.tensor([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9]])
    noisy = logits.softmax(-1) @ t  # by hand: p(given = j) = Σ_k p(true = k) T[k, j]
    expected = (weights * -(targets * noisy.log()).sum(-1)).mean()
    assert torch.isclose(forward_corrected_cross_entropy(logits, targets, weights, t), expected)


def test_forward_correction_recovers_a_class_flooded_by_a_known_transition():
    """Class 0's masks all labelled 1 half of the time (and class 1's never 0): the plain probe's argmax on
    class 0 wavers; through the true transition the probe puts class 0's masks back in class 0."""
    x, labels = clusters(n_per=120, classes=3, spread=0.5, seed=3)
    rng = np.random.default_rng(0)
    noisy = labels.copy()
    flip = (labels == 0) & (rng.random(len(labels)) < 0.6)
    noisy[flip] = 1
    t = np.eye(3)
    t[0] = [0.4, 0.6, 0.0]
    y = np.eye(3, dtype=np.float32)[noisy]
    cfg = ProbeConfig(epochs=30, batch_size=64)
    plain = train_probe(x, y, np.ones(len(x)), cfg).scores(x).argmax(1)
    corrected = train_probe(x, y, np.ones(len(x)), cfg, transition=t).scores(x).argmax(1)
    zero = labels == 0
    assert (corrected[zero] == 0).mean() > 0.9 > (plain[zero] == 0).mean()
    assert (corrected[~zero] == labels[~zero]).mean() > 0.9
    with pytest.raises(DataError, match="noise transition of shape"):
        train_probe(x, y, np.ones(len(x)), cfg, transition=np.eye(2))
