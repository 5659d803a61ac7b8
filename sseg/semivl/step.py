"""The SemiVL training step for the generic loop (pipelines/training/loop.py): one batch of labelled and
unlabelled images → UniMatch consistency + dense VL guidance → the :class:`sseg.training.StageStep` update.
Its parameter groups (:func:`semivl_param_groups`) and :meth:`SemiVLStep.create` build the rest. Plain PyTorch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sseg.semivl import losses as L
from sseg.semivl.augment import cutmix, cutmix_box, strong_view
from sseg.semivl.model import dense_class_similarity
from sseg.training import StageStep, adamw, poly_with_warmup


@dataclass
class TextTargets:
    embeddings: torch.Tensor  # [K, D] unit concept embeddings (frozen text tower)
    concept_to_class: torch.Tensor  # long [K]
    num_classes: int


@dataclass
class SemiVLStepSettings:
    total_steps: int
    semi: bool = True  # False: the supervised-only row (labelled images alone)
    tau: float = 0.95
    guidance: bool = False
    guidance_lambda: tuple[float, float] = (0.1, 0.0)
    guidance_threshold: float = 0.9
    guidance_scale: float = 100.0
    grad_clip: float | None = None
    seed: int = 0


def _normalise(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _unit(images: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def semivl_param_groups(model: nn.Module, lr: float, head_mult: float, backbone_mult: float,
                        weight_decay: float) -> list[dict]:
    """AdamW groups: head (lr × head_mult), trainable vision parameters (lr × backbone_mult); the text
    tower is frozen (lr multiplier 0). No weight decay on biases and norms."""
    groups = []
    for params, mult in ((model.head_parameters(), head_mult), (model.vlm.vision_parameters(), backbone_mult)):
        trainable = [(n, p) for n, p in params if p.requires_grad]
        if mult == 0:
            for _, p in trainable:
                p.requires_grad_(False)
            continue
        decay = [p for n, p in trainable if p.ndim >= 2]
        no_decay = [p for n, p in trainable if p.ndim < 2]
        groups += [{"params": decay, "lr": lr * mult, "weight_decay": weight_decay},
                   {"params": no_decay, "lr": lr * mult, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class SemiVLStep(StageStep):
    kind = "semivl"
    model_name = "semivl"
    progress_keys = (("loss_x", "sup"), ("loss_u", "unsup"), ("loss_guidance", "guide"),
                     ("confident", "conf"), ("guided", "guided"))
    param_groups = staticmethod(semivl_param_groups)

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, model_config: dict,
                 text: TextTargets, settings: SemiVLStepSettings, device: torch.device,
                 guide_vlm: nn.Module | None = None, rank: int = 0, guide_text: TextTargets | None = None):
        super().__init__(model, optimizer, scheduler, model_config, grad_clip=settings.grad_clip)
        self.text = text
        self.guide_text = guide_text or text  # the guidance's concepts (SemiVL: the class definitions)
        self.settings = settings
        self.device = device
        self.guide_vlm = guide_vlm
        self.rng = np.random.default_rng(settings.seed * 1009 + rank)
        if settings.guidance and guide_vlm is None:
            raise ValueError("guidance needs the frozen initial VLM")

    @classmethod
    def create(cls, model: nn.Module, model_config: dict, classes, templates, *, device: torch.device,
               spatial_ft: bool, guidance: bool, lr: float, head_lr_mult: float, backbone_lr_mult: float,
               weight_decay: float, total_steps: int, warmup_steps: int, poly_power: float,
               settings: SemiVLStepSettings, rank: int = 0, guide_classes=None) -> "SemiVLStep":
        """The step around a built SemiVL ``model`` (:func:`sseg.semivl.model.build_semivl_model`): trainable
        parameters set (``spatial_ft``), the frozen guide copied from the initial VLM (``guidance``), the class
        texts encoded once (``classes`` for the decoder, ``guide_classes`` for the guidance; None: the same),
        AdamW over :func:`semivl_param_groups` and the poly schedule (linear warm-up)."""
        from sseg.inference import build_text_classifier

        # channels-last: the decoder runs every concept's map through 8-16-channel convolutions at up to
        # 32x32 (B*K maps); oneDNN's NHWC kernels run those 2.5-3.6x faster than NCHW on CPU, the step 1.4x
        model = model.to(device, memory_format=torch.channels_last)
        model.set_trainable(spatial_only=spatial_ft)
        guide = None
        if guidance:
            guide = copy.deepcopy(model.vlm).eval()
            for p in guide.parameters():
                p.requires_grad_(False)
        classifier = build_text_classifier(model, classes, templates, device=device)
        text = TextTargets(classifier.embeddings.detach(), classifier.concept_to_class, classifier.num_classes)
        guide_text = None
        if guide_classes is not None and guide_classes != classes:
            g = build_text_classifier(model, guide_classes, templates, device=device)
            guide_text = TextTargets(g.embeddings.detach(), g.concept_to_class, g.num_classes)
        optimizer = adamw(semivl_param_groups(model, lr, head_lr_mult, backbone_lr_mult, weight_decay), lr,
                          (0.9, 0.999))
        scheduler = poly_with_warmup(optimizer, total_steps, warmup_steps, poly_power, warmup="linear")
        return cls(model, optimizer, scheduler, model_config, text, settings, device, guide_vlm=guide, rank=rank,
                   guide_text=guide_text)

    def clip_parameters(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _forward(self, images: torch.Tensor, fp_range: tuple[int, int] | None = None) -> torch.Tensor:
        return self.model(images, self.text.embeddings, self.text.concept_to_class, self.text.num_classes,
                          fp_range=fp_range)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        s = self.settings
        x = _normalise(_unit(batch["image_l"], self.device))
        y = torch.as_tensor(np.asarray(batch["label_l"])).to(self.device).long()
        metrics: dict[str, float] = {}
        if not s.semi:
            self.core.train()
            loss = L.supervised_loss(self._forward(x), y)
            metrics["loss_x"] = float(loss.detach())
            return loss, metrics

        u01 = _unit(batch["image_u"], self.device)
        ignore = torch.as_tensor(np.asarray(batch["ignore_u"])).to(self.device).long()
        b, _, h, w = u01.shape
        s1 = torch.stack([strong_view(img, self.rng) for img in u01])
        s2 = torch.stack([strong_view(img, self.rng) for img in u01])
        box1 = torch.stack([cutmix_box(h, self.rng) for _ in range(b)]).to(self.device)
        box2 = torch.stack([cutmix_box(h, self.rng) for _ in range(b)]).to(self.device)
        # the CutMix partner of image i is image i-1 of the batch (UniMatch draws a second unlabelled batch)
        s1 = _normalise(cutmix(s1, s1.roll(1, 0), box1))
        s2 = _normalise(cutmix(s2, s2.roll(1, 0), box2))
        u = _normalise(u01)

        with torch.no_grad():
            self.core.eval()
            conf_w, mask_w = L.pseudo_labels(self.core(u, self.text.embeddings, self.text.concept_to_class,
                                                       self.text.num_classes))
            if s.guidance:
                sim = dense_class_similarity(self.guide_vlm, u, self.guide_text.embeddings,
                                             self.guide_text.concept_to_class, self.guide_text.num_classes)
                guide = L.guidance_targets(sim, (h, w), ignore, s.guidance_scale, s.guidance_threshold)
        self.core.train()
        nx = x.shape[0]
        preds = self._forward(torch.cat([x, u, s1, s2]), fp_range=(nx, nx + b))
        pred_x, pred_fp, pred_s1, pred_s2 = preds.split([nx, b, b, b])

        def mixed(t: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
            return cutmix(t, t.roll(1, 0), box)

        loss_x = L.supervised_loss(pred_x, y)
        loss_fp = L.confident_loss(pred_fp, mask_w, conf_w, ignore, s.tau)
        loss_s1 = L.confident_loss(pred_s1, mixed(mask_w, box1), mixed(conf_w, box1), mixed(ignore, box1), s.tau)
        loss_s2 = L.confident_loss(pred_s2, mixed(mask_w, box2), mixed(conf_w, box2), mixed(ignore, box2), s.tau)
        loss, loss_u = L.unimatch_total(loss_x, loss_fp, loss_s1, loss_s2)
        metrics.update(loss_x=float(loss_x.detach()), loss_u=float(loss_u.detach()),
                       loss_fp=float(loss_fp.detach()), loss_s1=float(loss_s1.detach()),
                       loss_s2=float(loss_s2.detach()),
                       confident=float(L.confidence_mask(conf_w, ignore, s.tau).float().mean()))
        if s.guidance:
            lam = L.guidance_lambda(self.scheduler.last_epoch, s.total_steps, *s.guidance_lambda)
            g = L.guidance_total(L.guidance_loss(pred_s1, mixed(guide, box1)),
                                 L.guidance_loss(pred_s2, mixed(guide, box2)),
                                 L.guidance_loss(pred_fp, guide), lam)
            loss = loss + g
            metrics.update(loss_guidance=float(g.detach()), guidance_lambda=lam,
                           guided=float((guide != L.IGNORE).float().mean()))
        return loss, metrics
