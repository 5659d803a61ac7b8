"""The step builder of SemiVL fine-tuning for the generic loop: the run's resolved config → SemiVLStep.

``config`` = {"job": SemiVLConfig as JSON, "resolved": {...}} where the run (pipelines/runs/semivl.py)
has resolved the VLM checkpoint path, the full model config and the class definitions.
"""

from __future__ import annotations

import torch


def build_semivl_step(config: dict, *, device: torch.device, rank: int, world_size: int,
                      total_steps: int, warmup_steps: int):
    from schemas.configs import SemiVLConfig
    from sseg.semivl.model import build_semivl_model
    from sseg.semivl.step import SemiVLStep, SemiVLStepSettings

    cfg = SemiVLConfig.model_validate(config["job"])
    resolved = config["resolved"]
    torch.manual_seed(cfg.train.seed)
    model = build_semivl_model(resolved["model_config"], resolved["vlm_kind"], resolved["vlm_checkpoint"],
                               cfg.components.vl_init)
    t = cfg.train
    guidance = cfg.components.guidance and not t.supervised_only
    settings = SemiVLStepSettings(
        total_steps=total_steps, semi=not t.supervised_only, tau=t.tau, guidance=guidance,
        guidance_lambda=tuple(t.guidance_lambda), guidance_threshold=t.guidance_threshold,
        guidance_scale=t.guidance_scale, grad_clip=t.grad_clip, seed=t.seed)
    return SemiVLStep.create(model, resolved["model_config"], resolved["classes"], cfg.data.templates,
                             device=device, spatial_ft=cfg.components.spatial_ft, guidance=guidance, lr=t.lr,
                             head_lr_mult=t.head_lr_mult, backbone_lr_mult=t.backbone_lr_mult,
                             weight_decay=t.weight_decay, total_steps=total_steps, warmup_steps=warmup_steps,
                             poly_power=t.poly_power, settings=settings, rank=rank,
                             guide_classes=resolved.get("guide_classes"))
