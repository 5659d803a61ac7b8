"""The SemiVL training step for the generic loop (pipelines/training/loop.py): one batch of labelled and
unlabelled images → UniMatch consistency + dense VL guidance → one optimizer step. Plain PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sseg.semivl import losses as L
from sseg.semivl.augment import cutmix, cutmix_box, strong_view
from sseg.semivl.model import dense_class_similarity


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


def poly_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                     power: float = 0.9) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, 1.0 - step / max(1, total_steps)) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _normalise(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def _unit(images: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class SemiVLStep:
    kind = "semivl"
    model_name = "semivl"
    progress_keys = (("loss_x", "sup"), ("loss_u", "unsup"), ("loss_guidance", "guide"),
                     ("confident", "conf"), ("guided", "guided"))

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, model_config: dict,
                 text: TextTargets, settings: SemiVLStepSettings, device: torch.device,
                 guide_vlm: nn.Module | None = None, rank: int = 0):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.model_config = model_config
        self.text = text
        self.settings = settings
        self.device = device
        self.guide_vlm = guide_vlm
        self.rng = np.random.default_rng(settings.seed * 1009 + rank)
        if settings.guidance and guide_vlm is None:
            raise ValueError("guidance needs the frozen initial VLM")

    @property
    def core(self) -> nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    def _forward(self, images: torch.Tensor, fp_range: tuple[int, int] | None = None) -> torch.Tensor:
        return self.model(images, self.text.embeddings, self.text.concept_to_class, self.text.num_classes,
                          fp_range=fp_range)

    def run(self, batch: dict) -> dict[str, float]:
        s = self.settings
        x = _normalise(_unit(batch["image_l"], self.device))
        y = torch.as_tensor(np.asarray(batch["label_l"])).to(self.device).long()
        metrics: dict[str, float] = {}
        if not s.semi:
            self.core.train()
            loss = L.supervised_loss(self._forward(x), y)
            metrics["loss_x"] = float(loss.detach())
            return self._update(loss, metrics)

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
                sim = dense_class_similarity(self.guide_vlm, u, self.text.embeddings, self.text.concept_to_class,
                                             self.text.num_classes)
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
        return self._update(loss, metrics)

    def _update(self, loss: torch.Tensor, metrics: dict[str, float]) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        metrics["loss"] = float(loss.detach())
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        return metrics
