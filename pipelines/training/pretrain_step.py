"""The step builder of S-Seg pretraining for the generic loop: PretrainConfig → SSegPretrainStep."""

from __future__ import annotations

import torch


def build_pretrain_step(config: dict, *, device: torch.device, rank: int, world_size: int,
                        total_steps: int, warmup_steps: int):
    from schemas.configs import PretrainConfig
    from sseg.losses.contrastive import ContrastiveLoss
    from sseg.losses.criterion import SSegCriterion
    from sseg.models.registry import create_model
    from sseg.prompts import resolve_templates
    from sseg.training import SSegPretrainStep, build_optimizer, cosine_with_warmup

    cfg = PretrainConfig.model_validate(config)
    bf16 = cfg.train.bf16 == "on" or (cfg.train.bf16 == "auto" and device.type == "cuda")
    torch.manual_seed(cfg.train.seed)
    model = create_model("sseg", cfg.model).to(device)
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay, tuple(cfg.train.betas))
    scheduler = cosine_with_warmup(optimizer, total_steps, warmup_steps)
    criterion = SSegCriterion(
        weight_focal=cfg.train.weight_focal, weight_dice=cfg.train.weight_dice,
        weight_mask=cfg.train.weight_mask, weight_contrastive=cfg.train.weight_contrastive,
        contrastive=ContrastiveLoss(), weight_words=cfg.train.weight_words,
        mask_loss_size=cfg.train.mask_loss_size)
    needs_words = cfg.train.weight_words > 0 or cfg.train.caption_feature == "word_mean"
    word_templates = resolve_templates(cfg.train.word_templates) if needs_words else None
    return SSegPretrainStep(model, criterion, optimizer, scheduler, model_config=cfg.model.model_dump(mode="json"),
                            num_segments=cfg.pseudo_masks.num_segments, grad_clip=cfg.train.grad_clip,
                            context_length=cfg.model.context_length, device=device, world_size=world_size,
                            bf16=bf16, caption_feature=cfg.train.caption_feature, word_templates=word_templates,
                            seed=cfg.train.seed * 1009 + rank)
