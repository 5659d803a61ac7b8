"""What S-Seg+'s config changes against the paper: the run's ``sseg.deviation`` tag."""

from __future__ import annotations

from schemas.configs import SelfTrainConfig


def self_train_deviations(cfg: SelfTrainConfig, segment: dict) -> list[str]:
    """The choices of this config that differ from the paper (the MLflow tag ``sseg.deviation``);
    ``segment``: the pseudo-labels' inference settings."""
    deviations = []
    if not cfg.model.backbone_checkpoint:
        deviations.append("ViT backbone randomly initialised (no MAE weights given; the paper uses MAE)")
    if cfg.train.class_balance != "none":
        deviations.append(f"class-balanced cross-entropy ({cfg.train.class_balance}; the paper: plain)")
    if segment.get("flip") or list(segment.get("scales", [1.0])) != [1.0]:
        deviations.append(f"pseudo-labels with test-time augmentation (flip={segment.get('flip')}, "
                          f"scales={list(segment.get('scales', [1.0]))})")
    if cfg.train.augment != "mmseg":
        deviations.append("random resized crops, not mmseg's resize/crop/photometric pipeline (train.augment)")
    if not cfg.model.aux_head:
        deviations.append("no auxiliary FCN head (BEiT/MAE's UperNet: weight 0.4; model.aux_head)")
    if cfg.pseudo_labels.confidence_threshold > 0:
        deviations.append(f"pseudo-labels under confidence {cfg.pseudo_labels.confidence_threshold} ignored (paper: 0)")
    m = cfg.model
    if (m.embed_dim, m.depth, m.patch_size, m.image_size) != (768, 12, 16, 512):
        deviations.append(f"ViT {m.embed_dim}x{m.depth}/{m.patch_size} at {m.image_size} px (the paper: ViT-B/16 "
                          "at 512)")
    if m.channels != 768:
        deviations.append(f"UperNet head width {m.channels} (BEiT/MAE's UperNet: 768)")
    if cfg.train.use_gpu and cfg.train.num_workers > 1 and not m.sync_bn:
        deviations.append("batch norm not synchronised over the GPUs (model.sync_bn; the paper: SyncBN)")
    return deviations
