"""S-Seg+ self-training step: UperNet-ViT trained with cross-entropy on S-Seg's pseudo-labels (plain PyTorch).

S-Seg paper (Lai, "Exploring Simple Open-Vocabulary Semantic Segmentation"), sec. 3.3.4 / A.2 / Table 6:
AdamW (lr 1e-4, wd 0.05, betas .9/.999), batch 16, poly decay with 1.5k warmup iterations, layer-wise lr
decay 0.7. The pseudo-labels arrive with low-confidence pixels already
set to the ignore index (``pipelines/stages/self_train_data.py``); the step normalises the images, runs the
model and the loss; the update is :class:`sseg.training.StageStep`'s. Used by the generic loop
(``pipelines/training/loop.py``) through ``pipelines/training/self_train_step.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sseg.data.transforms import to_normalized_tensor
from sseg.models.upernet import IGNORE_INDEX, UperNetViT, decode_and_aux_loss
from sseg.training import StageStep, adamw, layer_decay_param_groups, poly_with_warmup

SSEG_PLUS_KIND = "sseg-plus"
SSEG_PLUS_MODEL = "upernet_vit"


def sseg_plus_param_groups(model: UperNetViT, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """BEiT-style layer-decay groups (embeddings → blocks → neck + head)."""
    return layer_decay_param_groups(model, lr, weight_decay, layer_decay, model.layer_id, model.num_layers,
                                    model.no_weight_decay)


def build_sseg_plus_optimizer(model: UperNetViT, lr: float, weight_decay: float, betas: tuple[float, float],
                              layer_decay: float) -> torch.optim.AdamW:
    """AdamW over :func:`sseg_plus_param_groups`."""
    return adamw(sseg_plus_param_groups(model, lr, weight_decay, layer_decay), lr, betas)


def balanced_class_weights(pixel_counts: list[int], max_weight: float = 10.0) -> list[float]:
    """Inverse-square-root frequency weights (milder than SegNet's median-frequency balancing):
    w_c ∝ f_c^-1/2, scaled so that the pixel-weighted mean Σ f_c·w_c is 1 (the loss keeps its size),
    capped at ``max_weight``; a class without pixels gets the cap (it adds nothing to the loss anyway)."""
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("no labelled pixel to weight classes by")
    freq = counts / counts.sum()
    raw = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    weights = raw / float((freq * raw).sum())
    weights = np.where(freq > 0, np.minimum(weights, max_weight), max_weight)
    return [float(w) for w in weights]


class SSegPlusStep(StageStep):
    """numpy batch {"image" uint8 [B,H,W,3], "label" uint8 [B,H,W] (255 = ignore)} → cross-entropy → one update."""

    kind = SSEG_PLUS_KIND
    model_name = SSEG_PLUS_MODEL
    progress_keys = (("labelled_fraction", "labelled"), ("lr", "lr"))
    param_groups = staticmethod(sseg_plus_param_groups)

    def __init__(self, model: UperNetViT, optimizer: torch.optim.Optimizer, scheduler: Any, model_config: dict,
                 device: torch.device, grad_clip: float | None = None, bf16: bool = False,
                 class_weights: list[float] | None = None):
        super().__init__(model, optimizer, scheduler, model_config, grad_clip=grad_clip, bf16=bf16)
        self.class_weights = (None if class_weights is None
                              else torch.tensor(class_weights, dtype=torch.float32, device=device))
        self.device = device

    @classmethod
    def create(cls, model_config: dict, *, device: torch.device, lr: float, weight_decay: float,
               betas: tuple[float, float], layer_decay: float, total_steps: int, warmup_steps: int,
               poly_power: float = 1.0, grad_clip: float | None = None, bf16: bool = False,
               class_weights: list[float] | None = None) -> "SSegPlusStep":
        from sseg.models.registry import create_model

        model = create_model(SSEG_PLUS_MODEL, model_config).to(device)
        optimizer = build_sseg_plus_optimizer(model, lr, weight_decay, betas, layer_decay)
        scheduler = poly_with_warmup(optimizer, total_steps, warmup_steps, power=poly_power, warmup="mmcv")
        return cls(model, optimizer, scheduler, model_config, device, grad_clip, bf16, class_weights)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images = to_normalized_tensor(torch.as_tensor(np.asarray(batch["image"]))).to(self.device, non_blocking=True)
        labels = torch.as_tensor(np.asarray(batch["label"])).long().to(self.device, non_blocking=True)
        self.model.train()
        with self.autocast(images.device.type):
            logits, aux_logits = self.model(images, with_aux=True)
        loss, parts = decode_and_aux_loss(logits, aux_logits, labels, self.core.cfg.aux_weight, IGNORE_INDEX,
                                          self.class_weights)
        return loss, {"labelled_fraction": float((labels != IGNORE_INDEX).float().mean()), **parts}

    def learning_rate(self) -> float:
        """The largest group lr (the head's; the embeddings' is decayed by layer_decay^(layers - 1))."""
        return max(group["lr"] for group in self.optimizer.param_groups)
