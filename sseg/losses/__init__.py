"""S-Seg losses: Hungarian matcher, focal/dice mask losses, all-workers contrastive loss, criterion."""

from sseg.losses.contrastive import ContrastiveLoss, ContrastiveOutput, distributed_world
from sseg.losses.criterion import SSegCriterion, pseudo_masks_to_targets
from sseg.losses.mask_losses import dice_loss, sigmoid_focal_loss
from sseg.losses.matcher import HungarianMatcher

__all__ = [
    "ContrastiveLoss",
    "ContrastiveOutput",
    "HungarianMatcher",
    "SSegCriterion",
    "dice_loss",
    "distributed_world",
    "pseudo_masks_to_targets",
    "sigmoid_focal_loss",
]
