"""The step builder of SemiVL fine-tuning for the generic loop: the run's resolved config → SemiVLStep.

``config`` = {"job": SemiVLConfig as JSON, "resolved": {...}} where the run (pipelines/runs/semivl.py)
has resolved the VLM checkpoint path, the full model config and the class definitions.
"""

from __future__ import annotations

import copy

import torch


def build_vlm_model(resolved: dict, vl_init: bool):
    """The SemiVL model (random init), with the VLM weights loaded when ``vl_init``."""
    from sseg.models.registry import create_model

    model = create_model("semivl", resolved["model_config"])
    if vl_init:
        if resolved["vlm_kind"] == "sseg":
            from sseg.checkpoints import load_checkpoint

            state = load_checkpoint(resolved["vlm_checkpoint"], kinds=["sseg-pretrain"])
            model.vlm.load_pretrained(state["model"])
        else:
            from sseg.semivl.vlm import read_clip_state

            model.vlm.load_pretrained(read_clip_state(resolved["vlm_checkpoint"]))
    return model


def param_groups(model, lr: float, head_mult: float, backbone_mult: float, weight_decay: float) -> list[dict]:
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


def build_semivl_step(config: dict, *, device: torch.device, rank: int, world_size: int,
                      total_steps: int, warmup_steps: int):
    from schemas.configs import SemiVLConfig
    from sseg.inference import build_text_classifier
    from sseg.semivl.step import SemiVLStep, SemiVLStepSettings, TextTargets, poly_with_warmup

    cfg = SemiVLConfig.model_validate(config["job"])
    resolved = config["resolved"]
    torch.manual_seed(cfg.train.seed)
    model = build_vlm_model(resolved, cfg.components.vl_init).to(device)
    model.set_trainable(spatial_only=cfg.components.spatial_ft)
    guide = None
    if cfg.components.guidance and not cfg.train.supervised_only:
        guide = copy.deepcopy(model.vlm).eval()
        for p in guide.parameters():
            p.requires_grad_(False)
    classifier = build_text_classifier(model, resolved["classes"], cfg.data.templates, device=device)
    text = TextTargets(classifier.embeddings.detach(), classifier.concept_to_class, classifier.num_classes)
    t = cfg.train
    optimizer = torch.optim.AdamW(param_groups(model, t.lr, t.head_lr_mult, t.backbone_lr_mult, t.weight_decay),
                                  lr=t.lr, betas=(0.9, 0.999))
    scheduler = poly_with_warmup(optimizer, total_steps, warmup_steps, t.poly_power)
    settings = SemiVLStepSettings(
        total_steps=total_steps, semi=not t.supervised_only, tau=t.tau, guidance=guide is not None,
        guidance_lambda=tuple(t.guidance_lambda), guidance_threshold=t.guidance_threshold,
        guidance_scale=t.guidance_scale, grad_clip=t.grad_clip, seed=t.seed)
    return SemiVLStep(model, optimizer, scheduler, resolved["model_config"], text, settings, device,
                      guide_vlm=guide, rank=rank)
