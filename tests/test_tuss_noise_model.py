"""The noise model of full supervision (sseg/tuss/noise_model.py): VolMin's transition estimate, the held-out
likelihood that chooses λ (or no model), and GLCC's probe steps fitted through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sseg.tuss.config import GLCCConfig, NoiseModelConfig, ProbeConfig
from sseg.tuss.glcc import run_glcc
from sseg.tuss.noise_model import NoiseModel, choose_noise_model, fit_volmin, noisy_label_nll
from sseg.tuss.probe import CosineProbe
from sseg.tuss.supervision import Supervision
from tests.test_tuss_glcc import clusters

PROBE = ProbeConfig(epochs=30, batch_size=32)
# the toy floods class 0 with 60 % wrong labels: beyond the default floor's assumption, so the free T
VOLMIN = NoiseModelConfig(kind="volmin", epochs=60, transition_lr=0.05, min_diagonal=0.0)


@pytest.fixture(scope="module")
def flooded():
    """Three clusters; 60 % of class 0's masks labelled 1 (class-conditional noise, true T row 0 = [1-f, f, 0])."""
    x, labels = clusters(n_per=120, classes=3, spread=0.5, seed=3)
    flip = (labels == 0) & (np.random.default_rng(0).random(len(labels)) < 0.6)
    noisy = np.where(flip, 1, labels)
    return x, labels, np.eye(3, dtype=np.float32)[noisy], float(flip.sum() / (labels == 0).sum())


def test_volmin_recovers_the_flooding_transition_and_the_clean_classes(flooded):
    x, labels, y, flipped = flooded
    probe, t = fit_volmin(x, y, np.ones(len(x)), PROBE, 0.01, VOLMIN)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-5)
    assert abs(t[0, 1] - flipped) < 0.1 and t[0, 2] < 0.05
    assert t[1, 1] > 0.9 and t[2, 2] > 0.9
    assert (probe.scores(x).argmax(1) == labels).mean() > 0.95
    plain, identity = fit_volmin(x, y, np.ones(len(x)), PROBE, None, VOLMIN)  # T fixed: the plain probe's fit
    np.testing.assert_array_equal(identity, np.eye(3))
    assert (plain.scores(x)[labels == 0].argmax(1) == 0).mean() < 0.7  # the flooding wins without the model


def test_the_diagonal_floor_holds_and_rows_stay_distributions(flooded):
    x, labels, y, _ = flooded
    floored = VOLMIN.model_copy(update={"min_diagonal": 0.5})
    probe, t = fit_volmin(x, y, np.ones(len(x)), PROBE, 0.01, floored)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-5)
    assert np.all(np.diag(t) >= 0.5 - 1e-6)
    assert t[0, 0] < 0.55 and t[0, 1] > 0.4  # pressed against the floor: the truth (0.4) lies beyond it
    assert (probe.scores(x).argmax(1) == labels).mean() > 0.95


def test_noisy_label_nll_by_hand():
    probe = CosineProbe(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), scale=1.0)
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    y = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)  # the second mask has no label: not counted
    t = np.array([[0.7, 0.3], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0]]).softmax(-1).numpy()[0]  # logits = scale · cos = (1, 0)
    expected = -np.log(p[0] * t[0, 1] + p[1] * t[1, 1])
    assert noisy_label_nll(probe, t, x, y, np.array([3.0, 5.0])) == pytest.approx(expected, rel=1e-5)


def _parts(x, y, seed=1):
    held = np.random.default_rng(seed).random(len(x)) < 0.3
    part = lambda rows: (x[rows], y[rows], np.ones(int(rows.sum())))  # noqa: E731
    return part(~held), part(held), part(np.ones(len(x), dtype=bool))


def test_the_held_out_likelihood_chooses_a_noise_model_for_noisy_labels_and_none_for_clean(flooded):
    x, labels, y, _ = flooded
    noisy = choose_noise_model(*_parts(x, y), PROBE, VOLMIN)
    assert noisy.lam in VOLMIN.lambdas
    assert noisy.heldout_nll["identity"] > noisy.heldout_nll[f"{noisy.lam:g}"]
    assert noisy.model.probe.epochs == VOLMIN.epochs and noisy.fit_model is not None
    assert noisy.model.transition[0, 1] > 0.3  # refitted on every mask with the chosen λ
    clean = choose_noise_model(*_parts(x, np.eye(3, dtype=np.float32)[labels]), PROBE, VOLMIN)
    assert clean.lam is None and clean.model is None and clean.fit_model is None


def test_glcc_fits_every_probe_step_through_the_noise_model(flooded):
    x, labels, y, flipped = flooded
    t = np.eye(3)
    t[0] = [1 - flipped, flipped, 0.0]
    noise = NoiseModel(t, PROBE)
    full = Supervision("full", 3, proportions=y)
    zero_shot = np.full((len(x), 3), 1 / 3, dtype=np.float32)
    cfg = GLCCConfig(order=("probe",), probe=PROBE)
    corrected = run_glcc(x, np.ones(len(x)), full, zero_shot, x, cfg, noise=noise).test_scores
    np.testing.assert_allclose(corrected, noise.train(x, y, np.ones(len(x))).scores(x), atol=1e-6)
    plain = run_glcc(x, np.ones(len(x)), full, zero_shot, x, cfg).test_scores
    zero = labels == 0
    assert (corrected[zero].argmax(1) == 0).mean() > 0.9 > (plain[zero].argmax(1) == 0).mean()


def test_noise_model_config_refuses_no_or_non_positive_lambdas():
    with pytest.raises(ValueError, match="at least one λ"):
        NoiseModelConfig(kind="volmin", lambdas=())
    with pytest.raises(ValueError, match="must be positive"):
        NoiseModelConfig(kind="volmin", lambdas=(0.01, 0.0))
