"""A model of the label noise for full supervision: the transition matrix ``T[true, given]`` learnt from the
noisy labels alone, and the probe fitted through it (forward correction).

GLCC keeps full supervision's labels every round, so wrong labels keep training every probe step. When the
noise is class-conditional (a true class's masks get the wrong label from a fixed distribution), a probe fitted
with ``CE(p·T, given)`` learns the clean posterior ``p`` (Patrini et al. 2017). ``T`` is estimated with
VolMinNet (Li et al. 2021): a cosine probe and ``T`` (rows a softmax, started diagonal-dominant) fitted jointly
with ``CE(p·T, given) + λ log det T`` — of all the transition matrices that explain the labels, the
smallest simplex, which is the true one when the clean posteriors are spread enough; no anchor mask needed.
A diagonal floor (``min_diagonal``, default 0.5) keeps every class's own label at least that likely.

λ is chosen on a held-out slice of the training images, by the likelihood of *their noisy labels* under the
jointly fitted model (the clean labels are never seen): ``−Σ w log (p·T)[given]``. Identity (no noise model,
the same probe fit with ``T = I``) is a candidate too, so clean labels keep the plain probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sseg.tuss.config import NoiseModelConfig, ProbeConfig
from sseg.tuss.probe import (CosineProbe, forward_corrected_cross_entropy, one_thread, soft_cross_entropy,
                             supervised_rows, train_probe)


@dataclass
class NoiseModel:
    """The chosen transition and the probe settings every probe step fits through it with."""

    transition: np.ndarray  # [C, C], rows sum to 1
    probe: ProbeConfig

    def train(self, x: np.ndarray, y: np.ndarray, area: np.ndarray) -> CosineProbe:
        return train_probe(x, y, area, self.probe, transition=self.transition)


@dataclass
class NoiseModelChoice:
    model: NoiseModel | None  # fitted on every training mask; None: identity won (labels taken as they are)
    fit_model: NoiseModel | None  # the same λ fitted on the fitting part alone (what tuning on the held-out uses)
    lam: float | None  # the chosen λ (None: identity)
    heldout_nll: dict[str, float] = field(default_factory=dict)  # candidate ("identity", "0.01", …) → NLL


def fit_volmin(x: np.ndarray, y: np.ndarray, area: np.ndarray, probe_cfg: ProbeConfig, lam: float | None,
               cfg: NoiseModelConfig) -> tuple[CosineProbe, np.ndarray]:
    """The jointly fitted probe and ``T [C, C]`` on embeddings ``x``, noisy soft labels ``y`` and mask areas.
    ``lam=None`` keeps ``T = I`` (the same probe fit without a noise model: the identity candidate)."""
    xs, ys, ws = supervised_rows(x, y, area, "the noise model")
    c = ys.shape[1]
    weight = F.normalize(ys.T @ xs, dim=-1)  # prototype start, as the product's probe
    empty = weight.norm(dim=-1) == 0
    gen = torch.Generator().manual_seed(probe_cfg.seed)
    weight[empty] = F.normalize(torch.randn(int(empty.sum()), xs.shape[1], generator=gen), dim=-1)
    weight.requires_grad_(True)
    # T's logits: −2 off the diagonal, +4 on it (each row starts ≈ 0.97 on its own class for 14 classes)
    logits_t = (torch.full((c, c), -2.0) + 6.0 * torch.eye(c)).requires_grad_(lam is not None)
    opt = torch.optim.SGD([weight], lr=probe_cfg.lr, momentum=probe_cfg.momentum)
    opt_t = torch.optim.Adam([logits_t], lr=cfg.transition_lr) if lam is not None else None
    eye = torch.eye(c)

    def transition_of(logits: torch.Tensor) -> torch.Tensor:
        # a diagonal floor d: T = d·I + (1 − d)·softmax(logits) — every class keeps at least d of its own label
        return cfg.min_diagonal * eye + (1 - cfg.min_diagonal) * logits.softmax(-1)

    with one_thread():
        for _ in range(cfg.epochs):
            order = torch.randperm(len(xs), generator=gen)
            for start in range(0, len(xs), probe_cfg.batch_size):
                idx = order[start:start + probe_cfg.batch_size]
                logits = probe_cfg.scale * xs[idx] @ F.normalize(weight, dim=-1).T
                if opt_t is None:
                    loss = soft_cross_entropy(logits, ys[idx], ws[idx])
                else:
                    t = transition_of(logits_t)
                    loss = forward_corrected_cross_entropy(logits, ys[idx], ws[idx], t) + lam * torch.logdet(t)
                    opt_t.zero_grad(set_to_none=True)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if opt_t is not None:
                    opt_t.step()
    transition = np.eye(c) if lam is None else transition_of(logits_t.detach()).numpy().astype(np.float64)
    return CosineProbe(weight.detach().clone(), probe_cfg.scale), transition


def noisy_label_nll(probe: CosineProbe, transition: np.ndarray, x: np.ndarray, y: np.ndarray,
                    area: np.ndarray) -> float:
    """Area-weighted ``−Σ_c y_c log (p·T)_c`` over the labelled masks: how well the model explains the given
    (noisy) labels of masks it did not fit."""
    _, ys, ws = supervised_rows(x, y, area, "the noise model")
    keep = np.asarray(y).sum(axis=1) > 0
    with torch.no_grad():
        noisy = torch.as_tensor(probe.scores(np.asarray(x)[keep]) @ transition, dtype=torch.float32)
    return float((ws * -(ys * noisy.clamp_min(1e-12).log()).sum(-1)).mean())


def choose_noise_model(fit: tuple[np.ndarray, np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray, np.ndarray],
                       everything: tuple[np.ndarray, np.ndarray, np.ndarray], probe_cfg: ProbeConfig,
                       cfg: NoiseModelConfig) -> NoiseModelChoice:
    """Each candidate (identity and every λ of ``cfg.lambdas``) fitted on ``fit`` = (embeddings, noisy labels,
    areas) and scored by the NLL of ``held``'s noisy labels; the winner's ``T`` is fitted again on ``everything``
    (the run's training masks). Identity wins ties."""
    corrected = probe_cfg.model_copy(update={"epochs": cfg.epochs})
    nll = {"identity": noisy_label_nll(*fit_volmin(*fit, probe_cfg, None, cfg), *held)}
    fitted = {}
    for lam in cfg.lambdas:
        probe, fitted[lam] = fit_volmin(*fit, probe_cfg, lam, cfg)
        nll[f"{lam:g}"] = noisy_label_nll(probe, fitted[lam], *held)
    best = min(nll, key=lambda name: (nll[name], name != "identity"))
    if best == "identity":
        return NoiseModelChoice(None, None, None, nll)
    lam = next(lam for lam in cfg.lambdas if f"{lam:g}" == best)
    _, transition = fit_volmin(*everything, probe_cfg, lam, cfg)
    return NoiseModelChoice(NoiseModel(transition, corrected), NoiseModel(fitted[lam], corrected), lam, nll)

