"""Training pieces shared by every stage (optimizer, schedule) and the S-Seg pretraining step: plain
PyTorch, no Ray. Checkpoints: :mod:`sseg.checkpoints`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from sseg.data.transforms import to_normalized_tensor



def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float]) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, embeddings' scalars and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "logit_scale" in name or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all parameters (CPU and CUDA), the same update as the per-tensor loop
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int,
                       warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)



def poly_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, power: float = 1.0,
                     warmup_ratio: float = 1e-6, min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """mmcv's poly schedule with linear warmup (BEiT's UperNet configs: power 1.0, min_lr 0, warmup_ratio
    1e-6): ``lr(i) = base · [(1 - min) · (1 - i/T)^power + min]``, times ``1 - (1 - i/W)(1 - warmup_ratio)``
    for ``i < W``. A factor of each group's own lr, so layer-wise lr scales are kept."""
    def factor(step: int) -> float:
        progress = min(1.0, step / max(1, total_steps))
        value = (1.0 - min_lr_ratio) * (1.0 - progress) ** power + min_lr_ratio
        if step < warmup_steps:
            value *= 1.0 - (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)
        return value

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def layer_decay_param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float,
                             layer_id, num_layers: int, no_weight_decay=None) -> list[dict]:
    """Parameter groups with layer-wise lr decay (BEiT's ``LayerDecayOptimizerConstructor``): a parameter
    of layer ``layer_id(name)`` in ``[0, num_layers)`` gets ``lr · layer_decay ** (num_layers - 1 - id)``
    (the last layer, the head, the full lr); ``no_weight_decay(name, param)`` (default: 1-D parameters and
    biases) selects the parameters without weight decay. Each group records ``lr_scale`` and ``layer_id``."""
    if no_weight_decay is None:
        no_weight_decay = lambda name, param: param.ndim < 2 or name.endswith(".bias")  # noqa: E731
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = int(layer_id(name))
        if not 0 <= layer < num_layers:
            raise ValueError(f"layer id {layer} of {name} is outside [0, {num_layers})")
        decay = not no_weight_decay(name, param)
        key = (layer, decay)
        if key not in groups:
            scale = layer_decay ** (num_layers - 1 - layer)
            groups[key] = {"params": [], "names": [], "layer_id": layer, "lr_scale": scale, "lr": lr * scale,
                           "weight_decay": weight_decay if decay else 0.0}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


@dataclass
class Batch:
    images: torch.Tensor  # float [B,3,H,W], normalised
    segments: torch.Tensor  # long [B,H,W], ids 0..K-1
    tokens: torch.Tensor  # long [B,L]
    word_tokens: torch.Tensor | None = None  # long [W,L]: one prompt per batch-vocabulary word
    word_labels: torch.Tensor | None = None  # bool [B,W]


def prepare_batch(images: Any, segments: Any, captions: Any, context_length: int,
                  device: torch.device, word_templates: Sequence[str] | None = None,
                  rng: random.Random | None = None) -> Batch:
    """``word_templates``: also build the word-alignment targets (vocabulary prompts and labels)."""
    from sseg.models.text import tokenize

    captions = [str(c) for c in (captions.tolist() if isinstance(captions, np.ndarray) else captions)]
    word_tokens = word_labels = None
    if word_templates:
        from sseg.losses.word_alignment import build_word_targets

        words = build_word_targets(captions, word_templates, rng)
        word_tokens = tokenize(words.prompts, context_length).to(device, non_blocking=True)
        word_labels = words.labels.to(device, non_blocking=True)
    return Batch(
        images=to_normalized_tensor(torch.as_tensor(images)).to(device, non_blocking=True),
        segments=torch.as_tensor(segments).long().to(device, non_blocking=True),
        tokens=tokenize(captions, context_length).to(device, non_blocking=True),
        word_tokens=word_tokens, word_labels=word_labels,
    )


class TrainStep:
    """forward → losses → backward → clip → optimizer/scheduler step → clamp temperature."""

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, num_segments: int, grad_clip: float | None, world_size: int = 1,
                 bf16: bool = False, caption_feature: str = "sequence"):
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.num_segments = num_segments
        self.grad_clip = grad_clip
        self.world_size = world_size
        self.bf16 = bf16
        if caption_feature not in ("sequence", "word_mean"):
            raise ValueError(f"caption_feature must be 'sequence' or 'word_mean', got {caption_feature!r}")
        self.caption_feature = caption_feature

    @property
    def core(self) -> nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def __call__(self, batch: Batch) -> dict[str, float]:
        from sseg.losses.criterion import pseudo_masks_to_targets
        from sseg.models.diagnostics import query_collapse

        self.model.train()
        device_type = batch.images.device.type
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.caption_feature == "word_mean":
                if batch.word_tokens is None or batch.word_labels is None:
                    raise ValueError("caption_feature=word_mean needs the batch's word prompts and labels")
                outputs = self.model(batch.images, None, batch.word_tokens, caption_words=batch.word_labels)
            else:
                outputs = self.model(batch.images, batch.tokens, batch.word_tokens)
        outputs = _to_float(outputs)
        targets = pseudo_masks_to_targets(batch.segments, self.num_segments)
        losses = self.criterion(outputs, targets, world_size=self.world_size, word_labels=batch.word_labels)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = None
        if self.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.core.clamp_logit_scale_()
        metrics = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.ndim == 0}
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics["temperature"] = float(outputs["logit_scale"].detach())
        metrics["query_collapse"] = float(query_collapse(outputs["mask_features"].detach()))
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        return metrics


def _to_float(tree):
    if torch.is_tensor(tree):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: _to_float(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_to_float(v) for v in tree]
    return tree


class TrainingStep(Protocol):
    """What the generic training loop (pipelines/training/loop.py) drives, for any stage.

    ``model`` is the unwrapped model (the loop may replace it with a DDP wrapper); ``run`` takes one
    numpy batch as the stage's dataset yields it and returns scalar metrics, "loss" among them.
    """

    kind: str  # checkpoint kind, e.g. "sseg-pretrain"
    model_name: str  # registry name (sseg.models.registry)
    model_config: dict
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    progress_keys: tuple[tuple[str, str], ...]  # (metric, label) pairs for the progress line

    def run(self, batch: dict) -> dict[str, float]: ...


class SSegPretrainStep:
    """S-Seg pretraining: numpy batch (image, segments, caption) → :class:`Batch` → :class:`TrainStep`."""

    kind = "sseg-pretrain"
    model_name = "sseg"
    progress_keys = (("loss_mask", "mask"), ("loss_contrastive", "con"), ("loss_words", "words"),
                     ("temperature", "T"), ("query_collapse", "collapse"))

    def __init__(self, train_step: TrainStep, model_config: dict, context_length: int, device: torch.device,
                 word_templates: Sequence[str] | None = None, seed: int = 0):
        self.train_step = train_step
        self.model_config = model_config
        self.context_length = context_length
        self.device = device
        self.word_templates = word_templates
        self.seed = seed

    @property
    def model(self) -> nn.Module:
        return self.train_step.model

    @model.setter
    def model(self, value: nn.Module) -> None:
        self.train_step.model = value

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.train_step.optimizer

    @property
    def scheduler(self):
        return self.train_step.scheduler

    def run(self, batch: dict) -> dict[str, float]:
        # the template draws of a step follow from (seed, step): a run resumed from a checkpoint (which
        # restores the scheduler's step count) draws what the uninterrupted run drew
        step = int(getattr(self.train_step.scheduler, "last_epoch", 0))
        rng = random.Random(self.seed * 1_000_003 + step)
        data = prepare_batch(batch["image"], batch["segments"], batch["caption"], self.context_length,
                             self.device, self.word_templates, rng)
        return self.train_step(data)
