"""Symmetric image-text InfoNCE with every worker's negatives (open_clip ``ClipLoss`` semantics).

Features are L2-normalised here. With torch.distributed initialised (world size > 1) the
features of all ranks are gathered:
  * ``gather_with_grad=True``: ``torch.distributed.nn.all_gather`` (gradients flow to every rank);
  * otherwise a plain all_gather whose local slot is replaced by the local tensor (grad kept).
``local_loss=True``: logits = scale · local × gathered^T, labels = arange(n) + n·rank.
``local_loss=False``: every rank builds the full global matrix (labels = arange(n·world)).
Loss = (CE(image→text) + CE(text→image)) / 2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_autograd
import torch.nn.functional as F
from torch import nn

from sseg.errors import DataError


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    accuracy: torch.Tensor  # image→text top-1 accuracy over the logits rows computed here (detached)


def distributed_world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(image_features: torch.Tensor, text_features: torch.Tensor, rank: int,
                    world_size: int, local_loss: bool, gather_with_grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    if gather_with_grad:
        with warnings.catch_warnings():
            # deprecated in favour of a private API in torch 2.1x; still the autograd-aware gather
            warnings.simplefilter("ignore", FutureWarning)
            all_images = torch.cat(dist_autograd.all_gather(image_features), dim=0)
            all_texts = torch.cat(dist_autograd.all_gather(text_features), dim=0)
        return all_images, all_texts
    images = [torch.zeros_like(image_features) for _ in range(world_size)]
    texts = [torch.zeros_like(text_features) for _ in range(world_size)]
    dist.all_gather(images, image_features.contiguous())
    dist.all_gather(texts, text_features.contiguous())
    if not local_loss:
        images[rank] = image_features
        texts[rank] = text_features
    return torch.cat(images, dim=0), torch.cat(texts, dim=0)


class ContrastiveLoss(nn.Module):
    def __init__(self, local_loss: bool = False, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor | float) -> ContrastiveOutput:
        """image_features, text_features: [n, D] (this rank's pairs; any norm)."""
        if (image_features.ndim != 2 or image_features.shape != text_features.shape
                or image_features.shape[0] == 0):
            raise DataError(f"contrastive loss needs image and text features of one shape [n>0,D], got "
                            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
        images = F.normalize(image_features, dim=-1)
        texts = F.normalize(text_features, dim=-1)
        rank, world_size = distributed_world()
        n = images.shape[0]
        if world_size > 1:
            all_images, all_texts = gather_features(images, texts, rank, world_size,
                                                    self.local_loss, self.gather_with_grad)
            if all_images.shape[0] != n * world_size:
                raise DataError("every worker must pass the same number of image-text pairs")
            if self.local_loss:
                logits_per_image = logit_scale * images @ all_texts.T
                logits_per_text = logit_scale * texts @ all_images.T
                labels = torch.arange(n, device=images.device) + n * rank
            else:
                logits_per_image = logit_scale * all_images @ all_texts.T
                logits_per_text = logits_per_image.T
                labels = torch.arange(n * world_size, device=images.device)
        else:
            logits_per_image = logit_scale * images @ texts.T
            logits_per_text = logit_scale * texts @ images.T
            labels = torch.arange(n, device=images.device)
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        with torch.no_grad():
            accuracy = (logits_per_image.argmax(dim=-1) == labels).float().mean()
        return ContrastiveOutput(loss=loss, accuracy=accuracy)
