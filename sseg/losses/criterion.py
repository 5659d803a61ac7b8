"""S-Seg training loss: Hungarian-matched mask loss (every decoder layer) + image-text contrastive loss.

loss = weight_mask · Σ_layers (weight_focal · focal + weight_dice · dice) + weight_contrastive · InfoNCE
       [+ weight_words · word-to-mask alignment, a deviation from the paper: sseg.losses.word_alignment].
Unmatched queries get no mask loss (no "no-object" term, no class cost). The mask losses are
divided by the number of target masks averaged over workers (all-reduced, clamped ≥ 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from sseg.errors import DataError, SsegError
from sseg.losses.contrastive import ContrastiveLoss
from sseg.losses.mask_losses import dice_loss, sigmoid_focal_loss
from sseg.losses.matcher import HungarianMatcher, MatchIndices, resize_targets
from sseg.losses.word_alignment import WordAlignmentLoss


def pseudo_masks_to_targets(segments: torch.Tensor, num_segments: int) -> list[torch.Tensor]:
    """Label maps [B,H,W] (ids 0..num_segments-1; negative = unlabelled) → per-image bool masks
    [K_i,H,W], one per segment id present (empty segments dropped), in increasing id order."""
    if segments.ndim != 3 or segments.dtype.is_floating_point or segments.dtype == torch.bool:
        raise DataError(f"segments must be an integer label map [B,H,W], got {tuple(segments.shape)} "
                        f"{segments.dtype}")
    if num_segments < 1:
        raise DataError(f"num_segments must be >= 1, got {num_segments}")
    if segments.numel() and int(segments.max()) >= num_segments:
        raise DataError(f"segment id {int(segments.max())} >= num_segments {num_segments}")
    ids = torch.arange(num_segments, device=segments.device)
    one_hot = segments[:, None] == ids[None, :, None, None]  # [B,K,H,W]
    present = one_hot.flatten(2).any(-1)  # [B,K]
    return [one_hot[b][present[b]] for b in range(segments.shape[0])]


def _average_num_masks(targets: Sequence[torch.Tensor], device: torch.device,
                       world_size: int | None) -> torch.Tensor:
    num_masks = torch.tensor(float(sum(int(t.shape[0]) for t in targets)), device=device)
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        group_size = dist.get_world_size()
        if world_size is not None and world_size != group_size:
            raise SsegError(f"criterion got world_size={world_size} but the process group has {group_size}")
        dist.all_reduce(num_masks)
        num_masks = num_masks / group_size
    elif world_size not in (None, 1):
        raise SsegError(f"criterion got world_size={world_size} but torch.distributed is not initialised")
    return num_masks.clamp(min=1.0)


class SSegCriterion(nn.Module):
    def __init__(self, weight_focal: float = 20.0, weight_dice: float = 1.0, weight_mask: float = 1.0,
                 weight_contrastive: float = 1.0, contrastive: ContrastiveLoss | None = None,
                 matcher: HungarianMatcher | None = None, weight_words: float = 0.0,
                 mask_loss_size: int | None = None) -> None:
        super().__init__()
        if mask_loss_size is not None and mask_loss_size < 1:
            raise ValueError(f"mask_loss_size must be >= 1 or None, got {mask_loss_size}")
        self.mask_loss_size = mask_loss_size
        self.weight_focal = weight_focal
        self.weight_dice = weight_dice
        self.weight_mask = weight_mask
        self.weight_contrastive = weight_contrastive
        self.weight_words = weight_words
        self.word_alignment = WordAlignmentLoss()
        self.contrastive = contrastive if contrastive is not None else ContrastiveLoss()
        self.matcher = matcher if matcher is not None else HungarianMatcher(weight_focal, weight_dice)

    def _loss_resolution(self, targets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Targets larger than mask_loss_size are brought down to it (nearest): the mask losses are then
        computed at that size (the predictions upsampled to it) instead of the full target size."""
        size = self.mask_loss_size
        if size is None or not targets or max(targets[0].shape[-2:]) <= size:
            return list(targets)
        height, width = targets[0].shape[-2:]
        scale = size / max(height, width)
        out_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return [resize_targets(t, out_size) > 0.5 for t in targets]

    def layer_mask_losses(self, pred_masks: torch.Tensor, targets: Sequence[torch.Tensor],
                          num_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[MatchIndices]]:
        """Match one layer's masks [B,N,h,w] to the targets; (focal, dice, indices)."""
        indices = self.matcher(pred_masks, targets)
        device = pred_masks.device
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)]).to(device)
        pred_idx = torch.cat([src for src, _ in indices]).to(device)
        if pred_idx.numel() == 0:
            zero = pred_masks.sum() * 0.0  # keeps the graph (DDP) without contributing
            return zero, zero, indices
        matched_pred = pred_masks[batch_idx, pred_idx]  # [M,h,w]
        matched_targets = torch.cat([t[tgt.to(t.device)] for t, (_, tgt) in zip(targets, indices)])
        matched_targets = matched_targets.to(device=device, dtype=matched_pred.dtype)
        focal = sigmoid_focal_loss(matched_pred, matched_targets, num_masks)
        dice = dice_loss(matched_pred, matched_targets, num_masks)
        return focal, dice, indices

    def forward(self, outputs: dict[str, Any], targets: Sequence[torch.Tensor],
                world_size: int | None = None, word_labels: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """outputs: SSegModel.forward's dict; targets: per-image bool masks [K_i,H,W];
        word_labels: bool [B,W] for outputs["word_features"] (needed when weight_words > 0)."""
        pred_masks = outputs["pred_masks"]
        shapes = {tuple(t.shape[-2:]) for t in targets}
        if len(shapes) > 1:
            raise DataError(f"all target masks of a batch must share one size, got {sorted(shapes)}")
        num_masks = _average_num_masks(targets, pred_masks.device, world_size)
        targets = self._loss_resolution(targets)

        focal, dice, _ = self.layer_mask_losses(pred_masks, targets, num_masks)
        losses: dict[str, torch.Tensor] = {"loss_focal_final": focal.detach(), "loss_dice_final": dice.detach()}
        for aux in outputs.get("aux_outputs", []):
            aux_focal, aux_dice, _ = self.layer_mask_losses(aux["pred_masks"], targets, num_masks)
            focal = focal + aux_focal
            dice = dice + aux_dice
        loss_mask = self.weight_focal * focal + self.weight_dice * dice

        contrastive = self.contrastive(outputs["image_features"], outputs["text_features"],
                                       outputs["logit_scale"])
        total = self.weight_mask * loss_mask + self.weight_contrastive * contrastive.loss
        if self.weight_words > 0:
            if word_labels is None or "word_features" not in outputs:
                raise SsegError("weight_words > 0 needs word features (word_tokens) and word labels")
            words = self.word_alignment(outputs["mask_features"], outputs["word_features"], word_labels,
                                        outputs["logit_scale"])
            total = total + self.weight_words * words.loss
            losses.update(loss_words=words.loss, word_accuracy=words.accuracy)
        losses.update(loss=total, loss_mask=loss_mask, loss_focal=focal, loss_dice=dice,
                      loss_contrastive=contrastive.loss, contrastive_accuracy=contrastive.accuracy,
                      num_masks=num_masks.detach())
        return losses
