"""The step builder of S-Seg+ self-training for the generic loop: SelfTrainConfig → SSegPlusStep."""

from __future__ import annotations

import torch


def build_self_train_step(config: dict, *, device: torch.device, rank: int, world_size: int,
                          total_steps: int, warmup_steps: int):
    from schemas.configs import SelfTrainConfig
    from sseg.self_training import SSegPlusStep

    cfg = SelfTrainConfig.model_validate(config)
    if not cfg.model.class_names:
        raise ValueError("model.class_names is empty: the self-training run sets it from the target dataset")
    torch.manual_seed(cfg.train.seed)
    bf16 = cfg.train.bf16 == "on" or (cfg.train.bf16 == "auto" and device.type == "cuda")
    step = SSegPlusStep.create(cfg.model.model_dump(mode="json"), device=device, lr=cfg.train.lr,
                               weight_decay=cfg.train.weight_decay, betas=tuple(cfg.train.betas),
                               layer_decay=cfg.train.layer_decay, total_steps=total_steps,
                               warmup_steps=warmup_steps, poly_power=cfg.train.poly_power,
                               grad_clip=cfg.train.grad_clip, bf16=bf16, class_weights=cfg.train.class_weights)
    from sseg.models.upernet import synchronise_batch_norm

    step.model = synchronise_batch_norm(step.model, world_size, device)  # model.sync_bn; before the loop's DDP wrap
    return step
