"""The TagCLIP training step for the generic loop: one batch of labelled crops (dataset label ids) -> seen
labels + trusty target -> focal + dice + trusty loss -> the :class:`sseg.training.StageStep` update.

Only the seen class names are ever encoded (:meth:`TagCLIPStep.create`): unseen names never enter
training, and unseen pixels enter only as ignored pixels of the class maps and positives of the trusty map.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sseg.tagclip.losses import LossWeights, count_masks, tagclip_loss
from sseg.tagclip.splits import ClassSplit
from sseg.tagclip.targets import seen_labels, seen_lookup, trusty_target
from sseg.training import StageStep, adamw, poly_with_warmup


def tagclip_param_groups(model: nn.Module, lr: float, weight_decay: float, head_mult: float = 10.0,
                         prompt_mult: float = 10.0, vision_mult: float = 0.0) -> list[dict]:
    """AdamW groups as the public config: decoder (lr x head_mult) and visual prompts (lr x prompt_mult);
    the VLM is frozen (text tower lr x 0) unless its vision tower was unfrozen (lr x vision_mult). No weight
    decay on 1-D parameters (norms, biases)."""
    groups = []
    mults = {"head": head_mult, "prompts": prompt_mult, "vision": vision_mult}
    for name, params in model.trainable_parameters().items():
        params = [p for p in params if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr * mults[name], "weight_decay": weight_decay if decay else 0.0,
                               "group": name})
    return groups


def _images(images: Any, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


class TagCLIPStep(StageStep):
    kind = "tagclip"
    model_name = "tagclip"
    progress_keys = (("loss_focal", "focal"), ("loss_dice", "dice"), ("loss_trusty", "trusty"))
    param_groups = staticmethod(tagclip_param_groups)

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, model_config: dict, *,
                 text: torch.Tensor, split: ClassSplit, device: torch.device,
                 weights: LossWeights = LossWeights(), grad_clip: float | None = None, bf16: bool = False):
        super().__init__(model, optimizer, scheduler, model_config, grad_clip=grad_clip, bf16=bf16)
        if text.shape[0] != len(split.seen):
            raise ValueError(f"{text.shape[0]} text embeddings for {len(split.seen)} seen classes")
        self.text = text.to(device)
        self.split = split
        self.device = device
        self.weights = weights
        self.lookup = seen_lookup(len(split.class_names), split.seen)

    @classmethod
    def create(cls, model: nn.Module, model_config: dict, split: ClassSplit, templates: str | Sequence[str], *,
               device: torch.device, lr: float, weight_decay: float, head_mult: float, prompt_mult: float,
               total_steps: int, warmup_steps: int, poly_power: float, min_lr: float = 0.0,
               weights: LossWeights = LossWeights(), grad_clip: float | None = None, bf16: bool = False,
               tokenizer: Callable | None = None, vision_mult: float = 0.0) -> "TagCLIPStep":
        """The step around a built TagCLIP ``model``: the *seen* class names encoded once by the frozen text
        tower, AdamW over :func:`tagclip_param_groups`, poly decay to ``min_lr`` with mmcv's linear warm-up.
        ``vision_mult`` > 0: the VLM's vision tower trains at lr x vision_mult."""
        from sseg.inference import build_text_classifier

        model = model.to(device)
        if vision_mult > 0:
            model.unfreeze_vision()
        classifier = build_text_classifier(model, list(split.seen_names), templates, tokenizer, device)
        optimizer = adamw(tagclip_param_groups(model, lr, weight_decay, head_mult, prompt_mult, vision_mult), lr,
                          (0.9, 0.999))
        scheduler = poly_with_warmup(optimizer, total_steps, warmup_steps, poly_power, warmup="mmcv",
                                     min_lr_ratio=min_lr / lr if lr > 0 else 0.0)
        return cls(model, optimizer, scheduler, model_config, text=classifier.embeddings.detach(), split=split,
                   device=device, weights=weights, grad_clip=grad_clip, bf16=bf16)

    def clip_parameters(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _num_masks(self, labels: torch.Tensor) -> float:
        """Masks present in the batch, averaged over workers (the public criterion's normaliser)."""
        count = count_masks(labels, len(self.split.seen)).sum().float().view(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            count /= dist.get_world_size()
        return float(count.clamp(min=1.0))

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        images = _images(batch["image"], self.device)
        raw = torch.as_tensor(np.asarray(batch["label"])).to(self.device).long()
        labels = seen_labels(raw, self.lookup)
        trusty = trusty_target(raw, self.split.unseen) if self.split.unseen else torch.zeros_like(raw, dtype=torch.float32)
        self.core.train()
        with self.autocast(self.device.type):
            out = self.model(images, self.text)
        loss, parts = tagclip_loss(out["class_logits"], out["trusty_logits"], labels, trusty, self.weights,
                                   num_masks=self._num_masks(labels))
        parts["unseen_pixels"] = float(trusty.mean())
        return loss, parts
