"""Per-mask losses (MaskFormer): sigmoid focal loss and dice loss, and their pairwise cost forms.

Loss forms take matched pairs: logits [M,h,w] and targets [M,H,W]; the logits are upsampled
(bilinear) to the target size. Both are summed over masks and divided by ``num_masks``.
Cost forms (for Hungarian matching) give an [N,K] matrix between every prediction and target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sseg.errors import DataError

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def _match_resolution(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 3 or targets.ndim != 3 or logits.shape[0] != targets.shape[0]:
        raise DataError(f"mask loss needs logits [M,h,w] and targets [M,H,W] with equal M, got "
                        f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    logits = logits.float()  # losses in fp32 also under bf16 autocast
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits[:, None], size=targets.shape[-2:], mode="bilinear",
                               align_corners=False)[:, 0]
    return logits.flatten(1), targets.flatten(1).to(logits.dtype)


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float | torch.Tensor,
                       alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """RetinaNet focal loss, mean over pixels, summed over masks, / num_masks."""
    logits, targets = _match_resolution(logits, targets)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float | torch.Tensor) -> torch.Tensor:
    """1 − (2·|p∩t| + 1) / (|p| + |t| + 1) per mask, summed, / num_masks."""
    logits, targets = _match_resolution(logits, targets)
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def pairwise_sigmoid_focal_cost(logits: torch.Tensor, targets: torch.Tensor,
                                alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """logits [...,N,P], targets [...,K,P] → [...,N,K] focal loss of every prediction vs every target,
    averaged over the P pixels (so that it is on the dice cost's scale); leading dims are a batch."""
    pixels = logits.shape[-1]
    prob = logits.sigmoid()
    focal_pos = (1 - prob) ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none")
    focal_neg = prob ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none")
    if alpha >= 0:
        focal_pos = focal_pos * alpha
        focal_neg = focal_neg * (1 - alpha)
    cost = focal_pos @ targets.transpose(-1, -2) + focal_neg @ (1 - targets).transpose(-1, -2)
    return cost / pixels


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [...,N,P], targets [...,K,P] → [...,N,K] dice loss (+1 smoothing) of every pair."""
    prob = logits.sigmoid()
    numerator = 2 * prob @ targets.transpose(-1, -2)
    denominator = prob.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)
