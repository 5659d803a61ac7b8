"""Hungarian matching of predicted masks to (pseudo) target masks, MaskFormer-style, no class cost."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from sseg.errors import DataError
from sseg.losses.mask_losses import pairwise_dice_cost, pairwise_sigmoid_focal_cost

MatchIndices = tuple[torch.Tensor, torch.Tensor]  # (prediction indices, target indices), int64


def resize_targets(targets: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[K,H,W] bool/float → float [K,h,w] by nearest-neighbour resizing."""
    masks = targets.float()
    if masks.shape[-2:] != tuple(size):
        masks = F.interpolate(masks[:, None], size=size, mode="nearest")[:, 0]
    return masks


class HungarianMatcher(nn.Module):
    """cost = cost_focal · (per-pixel focal) + cost_dice · dice, targets resized to the predictions."""

    def __init__(self, cost_focal: float = 20.0, cost_dice: float = 1.0) -> None:
        super().__init__()
        if cost_focal < 0 or cost_dice < 0 or cost_focal + cost_dice == 0:
            raise ValueError("matcher costs must be >= 0 and not both 0")
        self.cost_focal = cost_focal
        self.cost_dice = cost_dice

    def cost_matrix(self, pred_masks: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
        """pred_masks [...,N,h,w] logits, target_masks [...,K,H,W] → cost [...,N,K] (float32); leading
        dims (a batch) must agree."""
        lead = target_masks.shape[:-3]
        targets = resize_targets(target_masks.reshape(-1, *target_masks.shape[-2:]), tuple(pred_masks.shape[-2:]))
        targets = targets.reshape(*lead, target_masks.shape[-3], -1)
        logits = pred_masks.float().flatten(-2)
        return (self.cost_focal * pairwise_sigmoid_focal_cost(logits, targets)
                + self.cost_dice * pairwise_dice_cost(logits, targets))

    @torch.no_grad()
    def forward(self, pred_masks: torch.Tensor, targets: Sequence[torch.Tensor]) -> list[MatchIndices]:
        """pred_masks [B,N,h,w]; targets: B tensors [K_i,H,W]. One (pred_idx, tgt_idx) per image."""
        if pred_masks.ndim != 4:
            raise DataError(f"pred_masks must be [B,N,h,w], got {tuple(pred_masks.shape)}")
        if len(targets) != pred_masks.shape[0]:
            raise DataError(f"{pred_masks.shape[0]} predictions but {len(targets)} target sets")
        for b, target in enumerate(targets):
            if target.ndim != 3:
                raise DataError(f"target masks of image {b} must be [K,H,W], got {tuple(target.shape)}")
        shapes = {tuple(t.shape[-2:]) for t in targets}
        if len(shapes) == 1:
            costs = self._batched_costs(pred_masks, targets)
        else:  # targets of different sizes: one image at a time
            costs = [self.cost_matrix(pred_masks[b], t.to(pred_masks.device)).cpu().numpy() if len(t) else None
                     for b, t in enumerate(targets)]
        indices: list[MatchIndices] = []
        for cost in costs:
            if cost is None:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            rows, cols = linear_sum_assignment(np.nan_to_num(cost, nan=1e6, posinf=1e6, neginf=-1e6))
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def _batched_costs(self, pred_masks: torch.Tensor, targets: Sequence[torch.Tensor]) -> list:
        """Every image's [N,K_i] cost in one batched computation: targets zero-padded to the largest K
        (the padded columns are cut off again), so the cost of a pair is what cost_matrix gives."""
        counts = [int(t.shape[0]) for t in targets]
        most = max(counts)
        if most == 0:
            return [None] * len(targets)
        padded = pred_masks.new_zeros((len(targets), most, *targets[0].shape[-2:]), dtype=torch.float32)
        for b, target in enumerate(targets):
            if counts[b]:
                padded[b, :counts[b]] = target.to(device=pred_masks.device, dtype=torch.float32)
        cost = self.cost_matrix(pred_masks, padded).cpu().numpy()
        return [cost[b, :, :k] if k else None for b, k in enumerate(counts)]
