"""TagCLIP's loss: 20 * focal + 1 * dice on the seen-class maps + gamma * (focal | dice) on the trusty map.

Conventions of the public ZegCLIP / TagCLIP criterion (only the last decoder layer is supervised):

* focal (alpha 0.25, gamma 2) on every seen class's map; its target is the class's pixels of the
  *masked* label, so ignored pixels (unseen, void, padding) are negatives of every class; each map's
  loss is its mean over pixels;
* dice (+1 smoothing) only on the classes present in each image's masked label;
* the trusty map: focal (default; the paper writes dice) against the trusty target, mean over pixels;
* every term is summed over maps and divided by the number of masks present in the batch (the classes
  present per image, summed over images; averaged over workers under DDP, at least 1).

Predictions are bilinearly upsampled to the label size first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from sseg.tagclip.targets import IGNORE_INDEX


@dataclass(frozen=True)
class LossWeights:
    focal: float = 20.0
    dice: float = 1.0
    trusty: float = 10.0
    trusty_loss: Literal["focal", "dice"] = "focal"
    alpha: float = 0.25
    gamma: float = 2.0


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                  gamma: float = 2.0) -> torch.Tensor:
    """Focal loss per row: logits, targets [N, P] -> [N] (mean over the P pixels)."""
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = logits.sigmoid()
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(dim=1)


def dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss per row with +1 smoothing: [N, P] -> [N]."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def count_masks(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """bool [B, C]: which seen classes occur in each image's masked label."""
    b = labels.shape[0]
    flat = labels.reshape(b, -1).long()
    valid = flat != ignore_index
    present = torch.zeros(b, num_classes + 1, dtype=torch.bool, device=labels.device)
    present.scatter_(1, torch.where(valid, flat, num_classes), True)
    return present[:, :num_classes]


def tagclip_loss(class_logits: torch.Tensor, trusty_logits: torch.Tensor | None, labels: torch.Tensor,
                 trusty: torch.Tensor | None, weights: LossWeights = LossWeights(),
                 num_masks: float | None = None, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, dict]:
    """class_logits [B, S, h, w] over the seen classes, trusty_logits [B, 1, h, w] or None, labels long
    [B, H, W] (seen index or ignore), trusty float [B, H, W] (the trusty target) -> (loss, parts).

    ``num_masks``: the normaliser (default: the masks present in this batch); the step passes the value
    averaged over workers."""
    b, s = class_logits.shape[:2]
    size = labels.shape[-2:]
    logits = F.interpolate(class_logits.float(), size=size, mode="bilinear", align_corners=False).flatten(2)
    present = count_masks(labels, s, ignore_index)
    if num_masks is None:
        num_masks = float(present.sum())
    num_masks = max(float(num_masks), 1.0)
    flat = labels.reshape(b, -1).long()
    classes = torch.arange(s, device=labels.device).view(1, s, 1)
    targets = (flat.unsqueeze(1) == classes).float()  # [B, S, P]; ignored pixels: negatives of every class
    focal = sigmoid_focal(logits.reshape(b * s, -1), targets.reshape(b * s, -1), weights.alpha,
                          weights.gamma).sum() / num_masks
    rows = present.reshape(-1)
    dice_loss = dice(logits.reshape(b * s, -1)[rows], targets.reshape(b * s, -1)[rows]).sum() / num_masks
    loss = weights.focal * focal + weights.dice * dice_loss
    parts = {"loss_focal": float(focal.detach()), "loss_dice": float(dice_loss.detach()), "masks": num_masks}
    if trusty_logits is not None:
        if trusty is None:
            raise ValueError("the trusty map needs its target")
        t_logits = F.interpolate(trusty_logits.float(), size=size, mode="bilinear", align_corners=False)
        t_logits, t_target = t_logits.reshape(b, -1), trusty.reshape(b, -1).float()
        if weights.trusty_loss == "focal":
            t_loss = sigmoid_focal(t_logits, t_target, weights.alpha, weights.gamma).sum() / num_masks
        else:
            t_loss = dice(t_logits, t_target).sum() / num_masks
        loss = loss + weights.trusty * t_loss
        parts["loss_trusty"] = float(t_loss.detach())
    return loss, parts
