"""Training pieces shared by every stage — the step base class, the optimizer, the schedules, layer-wise lr
decay — and the S-Seg pretraining step. Plain PyTorch, no Ray. Checkpoints: :mod:`sseg.checkpoints`."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from sseg.data.transforms import to_normalized_tensor


class TrainingStep(Protocol):
    """What the generic training loop (pipelines/training/loop.py) drives, for any stage.

    ``model`` is the unwrapped model until the loop wraps it (:meth:`StageStep.wrap_model`, DDP);
    ``core`` is always the unwrapped one. ``run`` takes one numpy batch as the stage's dataset yields it
    and returns scalar metrics, "loss" among them. ``state_dict`` / ``load_state_dict``: what a
    checkpoint keeps to resume (model, optimizer, scheduler).
    """

    kind: str  # checkpoint kind, e.g. "sseg-pretrain"
    model_name: str  # registry name (sseg.models.registry)
    model_config: dict
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    progress_keys: tuple[tuple[str, str], ...]  # (metric, label) pairs for the progress line

    @property
    def core(self) -> nn.Module: ...

    def wrap_model(self, wrap: Callable[[nn.Module], nn.Module]) -> None: ...

    def run(self, batch: dict) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class StageStep:
    """One optimizer step of a training stage; a stage's step subclasses it and supplies only its loss
    (:meth:`loss`) and its parameter groups (a ``param_groups`` function it builds its optimizer from).

    The base owns what every stage does the same way: the update (zero_grad → backward → gradient clip
    at ``grad_clip`` → optimizer step → scheduler step → :meth:`after_update`), bf16 autocast
    (:meth:`autocast`), the DDP wrap and unwrap (:meth:`wrap_model`, :attr:`core`) and the checkpoint
    state (:meth:`state_dict`). ``run(batch) = update(*loss(batch))``; the metrics get "loss", "lr" and,
    with clipping, "grad_norm" (the norm before clipping).
    """

    kind: str = ""
    model_name: str = ""
    progress_keys: tuple[tuple[str, str], ...] = ()

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, model_config: dict, *,
                 grad_clip: float | None = None, bf16: bool = False):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.model_config = model_config
        self.grad_clip = grad_clip
        self.bf16 = bf16

    # -- the model, wrapped or not
    @property
    def core(self) -> nn.Module:
        """The model without its DDP wrapper."""
        return self.model.module if hasattr(self.model, "module") else self.model

    def wrap_model(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """``model = wrap(core)``: the loop's DDP wrapping (``core`` stays the plain model)."""
        self.model = wrap(self.core)

    def autocast(self, device_type: str):
        """bf16 autocast when the step was built with ``bf16`` (a no-op context otherwise)."""
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=self.bf16)

    # -- what a stage supplies
    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise for one batch and the stage's own metrics."""
        raise NotImplementedError

    def after_update(self) -> None:
        """Called after the optimizer and scheduler steps (e.g. to clamp a parameter)."""

    def clip_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters whose gradient norm is clipped (and reported as ``grad_norm``)."""
        return self.model.parameters()

    def learning_rate(self) -> float:
        """The ``lr`` metric: the first parameter group's learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    # -- the update
    def run(self, batch: Any) -> dict[str, float]:
        loss, metrics = self.loss(batch)
        return self.update(loss, metrics)

    def update(self, loss: torch.Tensor, metrics: dict[str, float]) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            metrics["grad_norm"] = float(nn.utils.clip_grad_norm_(self.clip_parameters(), self.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        self.after_update()
        metrics["loss"] = float(loss.detach())
        metrics["lr"] = self.learning_rate()
        return metrics

    # -- checkpoint state
    def state_dict(self) -> dict:
        return {"model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Model, optimizer and scheduler state (the scheduler's step count sets the learning rate)."""
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


# ----------------------------------------------------------------------------- optimizer and schedules


def adamw(groups: list[dict], lr: float, betas: tuple[float, float], fused: bool = False) -> torch.optim.AdamW:
    """AdamW over parameter groups; ``fused``: one kernel over all parameters (CPU and CUDA), the same
    update as the per-tensor loop up to rounding."""
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight decay on matrices, none on biases, norms, embeddings' scalars and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "logit_scale" in name or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float]) -> torch.optim.AdamW:
    """The S-Seg optimizer: fused AdamW over :func:`decay_param_groups`."""
    return adamw(decay_param_groups(model, weight_decay), lr, betas, fused=True)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int,
                       warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def poly_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, power: float = 1.0,
                     *, warmup: Literal["mmcv", "linear"] = "mmcv", warmup_ratio: float = 1e-6,
                     min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """The poly schedule ``lr(i) = base · [(1 - min) · (1 - i/T)^power + min]`` (0 after ``T``), a factor of
    each group's own lr so layer-wise lr scales are kept, with one of two linear warm-ups over ``W`` steps:

    * ``"mmcv"`` (mmcv's ``PolyLrUpdaterHook``, warmup="linear", as BEiT's UperNet configs use it: power
      1.0, min_lr 0, warmup_ratio 1e-6; S-Seg+): the poly value times ``1 - (1 - i/W)(1 - warmup_ratio)``;
    * ``"linear"`` (SemiVL / UniMatch): ``(i + 1)/W`` in place of the poly value while ``i < W``.
    """
    if warmup not in ("mmcv", "linear"):
        raise ValueError(f"warmup must be 'mmcv' or 'linear', got {warmup!r}")

    def factor(step: int) -> float:
        if warmup == "linear" and step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, step / max(1, total_steps))
        value = (1.0 - min_lr_ratio) * (1.0 - progress) ** power + min_lr_ratio
        if warmup == "mmcv" and step < warmup_steps:
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


class TrainStep(StageStep):
    """The S-Seg update on a prepared :class:`Batch`: MaskFormer + text tower → :class:`SSegCriterion` losses;
    after the update the temperature is clamped (CLIP)."""

    kind = "sseg-pretrain"
    model_name = "sseg"
    progress_keys = (("loss_mask", "mask"), ("loss_contrastive", "con"), ("loss_words", "words"),
                     ("temperature", "T"), ("query_collapse", "collapse"))
    param_groups = staticmethod(decay_param_groups)

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, num_segments: int, grad_clip: float | None, world_size: int = 1,
                 bf16: bool = False, caption_feature: str = "sequence", model_config: dict | None = None):
        super().__init__(model, optimizer, scheduler, model_config or {}, grad_clip=grad_clip, bf16=bf16)
        self.criterion = criterion
        self.num_segments = num_segments
        self.world_size = world_size
        if caption_feature not in ("sequence", "word_mean"):
            raise ValueError(f"caption_feature must be 'sequence' or 'word_mean', got {caption_feature!r}")
        self.caption_feature = caption_feature

    def __call__(self, batch: Batch) -> dict[str, float]:
        return self.run(batch)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        from sseg.losses.criterion import pseudo_masks_to_targets
        from sseg.models.diagnostics import query_collapse

        self.model.train()
        with self.autocast(batch.images.device.type):
            if self.caption_feature == "word_mean":
                if batch.word_tokens is None or batch.word_labels is None:
                    raise ValueError("caption_feature=word_mean needs the batch's word prompts and labels")
                outputs = self.model(batch.images, None, batch.word_tokens, caption_words=batch.word_labels)
            else:
                outputs = self.model(batch.images, batch.tokens, batch.word_tokens)
        outputs = _to_float(outputs)
        targets = pseudo_masks_to_targets(batch.segments, self.num_segments)
        losses = self.criterion(outputs, targets, world_size=self.world_size, word_labels=batch.word_labels)
        metrics = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.ndim == 0}
        metrics["temperature"] = float(outputs["logit_scale"].detach())
        metrics["query_collapse"] = float(query_collapse(outputs["mask_features"].detach()))
        return losses["loss"], metrics

    def after_update(self) -> None:
        self.core.clamp_logit_scale_()


def _to_float(tree):
    if torch.is_tensor(tree):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: _to_float(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_to_float(v) for v in tree]
    return tree


class SSegPretrainStep(TrainStep):
    """S-Seg pretraining for the loop: numpy batch (image, segments, caption) → :class:`Batch` → the
    :class:`TrainStep` update."""

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler, *,
                 model_config: dict, num_segments: int, grad_clip: float | None, context_length: int,
                 device: torch.device, world_size: int = 1, bf16: bool = False, caption_feature: str = "sequence",
                 word_templates: Sequence[str] | None = None, seed: int = 0):
        super().__init__(model, criterion, optimizer, scheduler, num_segments, grad_clip, world_size=world_size,
                         bf16=bf16, caption_feature=caption_feature, model_config=model_config)
        self.context_length = context_length
        self.device = device
        self.word_templates = word_templates
        self.seed = seed

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        # the template draws of a step follow from (seed, step): a run resumed from a checkpoint (which
        # restores the scheduler's step count) draws what the uninterrupted run drew
        step = int(getattr(self.scheduler, "last_epoch", 0))
        rng = random.Random(self.seed * 1_000_003 + step)
        data = prepare_batch(batch["image"], batch["segments"], batch["caption"], self.context_length,
                             self.device, self.word_templates, rng)
        return super().loss(data)
