"""The cosine linear probe: normalised class weights, no bias, a fixed scale; soft-label cross-entropy
weighted by mask area; SGD with momentum, linear warm-up then cosine decay (TUSS Sec. 4.2, MAE's recipe)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sseg.errors import DataError
from sseg.tuss.config import ProbeConfig


@dataclass
class CosineProbe:
    weight: Tensor  # [C, D]
    scale: float

    def logits(self, x: np.ndarray | Tensor) -> Tensor:
        x = F.normalize(torch.tensor(np.asarray(x), dtype=torch.float32), dim=-1)
        return self.scale * x @ F.normalize(self.weight, dim=-1).T

    def scores(self, x: np.ndarray | Tensor) -> np.ndarray:
        """Class probabilities ``[N, C]``."""
        with torch.no_grad():
            return self.logits(x).softmax(dim=-1).numpy()


@contextmanager
def one_thread():
    """The probe's products are small (a batch of 512 masks × D against C classes): a second thread buys
    nothing, and on shared cores OpenMP's spin-waiting makes two threads ~10× slower (docs/benchmarks.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def learning_rate(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def soft_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """``mean_i w_i · Σ_c −y_ic log p_ic``: a row's mass is its confidence (soft labels need not sum to 1)."""
    return (weights * -(targets * logits.log_softmax(dim=-1)).sum(dim=-1)).mean()


def generalised_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor, q: float) -> Tensor:
    """``mean_i w_i · Σ_c y_ic (1 − p_ic^q) / q``: cross-entropy as q → 0, the (noise-robust) MAE at q = 1."""
    p = logits.softmax(dim=-1).clamp_min(1e-12)
    return (weights * (targets * (1 - p ** q) / q).sum(dim=-1)).mean()


def forward_corrected_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor, transition: Tensor) -> Tensor:
    """``mean_i w_i · Σ_c −y_ic log (p_i T)_c``: the labels are taken as draws through the noise transition
    ``T[true, given]`` from the clean posterior ``p`` (Patrini et al. 2017's forward correction), so ``p``
    itself is fitted to the clean classes."""
    noisy = (logits.softmax(dim=-1) @ transition).clamp_min(1e-12)
    return (weights * -(targets * noisy.log()).sum(dim=-1)).mean()


def supervised_rows(x: np.ndarray, y: np.ndarray, area: np.ndarray, who: str) -> tuple[Tensor, Tensor, Tensor]:
    """The masks with a label: unit embeddings, soft labels and area weights of mean 1."""
    keep = np.asarray(y).sum(axis=1) > 0
    if not keep.any():
        raise DataError(f"{who} has no supervised mask (every label row is zero)")
    xs = F.normalize(torch.as_tensor(np.asarray(x)[keep], dtype=torch.float32), dim=-1)
    ys = torch.as_tensor(np.asarray(y)[keep], dtype=torch.float32)
    ws = torch.as_tensor(np.asarray(area)[keep], dtype=torch.float32)
    return xs, ys, ws / ws.mean()


def train_probe(x: np.ndarray, y: np.ndarray, area: np.ndarray, cfg: ProbeConfig,
                transition: np.ndarray | None = None) -> CosineProbe:
    """Fit on embeddings ``x [N, D]``, soft labels ``y [N, C]`` and mask areas ``[N]``; masks whose label row
    is all zero carry no supervision and are left out. ``transition [C, C]`` (rows: true class, columns: the
    given label; rows sum to 1): the labels' noise model, fitted through with the forward-corrected loss."""
    if len(x) != len(y) or len(x) != len(area):
        raise DataError(f"probe inputs disagree: {len(x)} embeddings, {len(y)} label rows, {len(area)} areas")
    xs, ys, ws = supervised_rows(x, y, area, "the probe")
    if transition is not None:
        transition = torch.as_tensor(np.asarray(transition), dtype=torch.float32)
        if transition.shape != (ys.shape[1], ys.shape[1]):
            raise DataError(f"noise transition of shape {tuple(transition.shape)} for {ys.shape[1]} classes")
    gen = torch.Generator().manual_seed(cfg.seed)
    start = ys.T @ xs if cfg.init == "prototype" else torch.randn(ys.shape[1], xs.shape[1], generator=gen)
    # a class no mask supports keeps a random direction
    empty = start.norm(dim=-1) == 0
    start[empty] = torch.randn(int(empty.sum()), xs.shape[1], generator=gen)
    weight = F.normalize(start, dim=-1).requires_grad_(True)
    opt = torch.optim.SGD([weight], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = xs.shape[0]
    per_epoch = math.ceil(n / cfg.batch_size)
    total, warmup = cfg.epochs * per_epoch, cfg.warmup_epochs * per_epoch
    step = 0
    with one_thread():
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                for group in opt.param_groups:
                    group["lr"] = learning_rate(step, total, warmup, cfg.lr)
                logits = cfg.scale * xs[idx] @ F.normalize(weight, dim=-1).T
                if transition is not None:
                    loss = forward_corrected_cross_entropy(logits, ys[idx], ws[idx], transition)
                elif cfg.gce_q:
                    loss = generalised_cross_entropy(logits, ys[idx], ws[idx], cfg.gce_q)
                else:
                    loss = soft_cross_entropy(logits, ys[idx], ws[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    return CosineProbe(weight.detach().clone(), cfg.scale)
