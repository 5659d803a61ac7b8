"""SemiVL's inputs, all checked before any work (bad input: one-line error, nothing written): the
labelled/unlabelled split, the label ids, the class definitions, the VLM checkpoint (the S-Seg parent run
or a local CLIP file) and its embedding size, and the model config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.lineage import resolve_parent
from schemas.configs import SemiVLConfig
from sseg.errors import CheckpointError, ConfigError, DataError, first_line

PRETRAIN_EXPERIMENT = "sseg-pretrain"


@dataclass
class Prepared:
    """Everything checked before any work starts (bad input: one-line error, nothing written)."""

    class_names: list[str]
    classes: dict[str, list[str]]  # class → concepts (one concept per class without class definitions)
    split: object  # sseg.semivl.splits.Split
    labeled_paths: tuple[list[str], list[str]]
    unlabeled_paths: list[str]
    model_config: dict
    vlm_checkpoint: str | None
    parent_run_id: str | None
    tags: dict = field(default_factory=dict)
    label_transform: object = None  # the reader's label-file ids → class ids (Cityscapes labelIds → train ids)


def _resolve_sseg(cfg: SemiVLConfig) -> tuple[str | None, dict, str | None]:
    """(checkpoint file, S-Seg model config, parent run id) of the embedded VLM."""
    from sseg.checkpoints import upgrade_model_config
    from sseg.models.config import ModelConfig
    from sseg.models.registry import load_model_config

    if cfg.vlm.checkpoint is None and not cfg.components.vl_init:
        return None, load_model_config("sseg_tiny")[1], None
    parent = resolve_parent(cfg.vlm.checkpoint, experiment=PRETRAIN_EXPERIMENT, kinds=["sseg-pretrain"],
                            field="vlm.checkpoint", make_with="python jobs/pretrain.py")
    config = upgrade_model_config("sseg", parent.state["model_config"], str(parent.checkpoint))
    if ModelConfig.model_validate(config).mask_feature_source != "pooled":  # the VLM's own check, before Ray
        raise ConfigError(f"{parent.checkpoint}: the S-Seg VLM needs a model with mask_feature_source=pooled "
                          "(its semantic pixel map gives the dense features)")
    return str(parent.checkpoint), config, parent.run_id


def _check_embed_dim(cfg: SemiVLConfig, found: int, source: str) -> None:
    if cfg.vlm.embed_dim is not None and found != cfg.vlm.embed_dim:
        raise CheckpointError(f"VL checkpoint {source} has embedding size {found}, the config expects "
                              f"vlm.embed_dim={cfg.vlm.embed_dim}")


def _check_clip(cfg: SemiVLConfig):
    """The CLIP weights (``sseg.clip_weights.ClipWeights``; None without VL init), checked."""
    from sseg.clip_weights import read_clip_weights

    if not cfg.components.vl_init:
        return None
    weights = read_clip_weights(cfg.vlm.checkpoint)
    state = weights.state
    proj, text_proj = state.get("visual.proj"), state.get("text_projection")
    if proj is None or text_proj is None:
        raise CheckpointError(f"{cfg.vlm.checkpoint} is not an open_clip CLIP ViT state dict "
                              "(no visual.proj / text_projection)")
    if proj.shape[1] != text_proj.shape[1]:
        raise CheckpointError(f"VL checkpoint {cfg.vlm.checkpoint}: image embedding {proj.shape[1]} != text "
                              f"embedding {text_proj.shape[1]}")
    _check_embed_dim(cfg, int(proj.shape[1]), cfg.vlm.checkpoint)
    return weights


def check_labels(label_paths: list[str], num_classes: int, transform=None) -> None:
    """Every labelled mask holds only class ids < num_classes or 255 (ignore)."""
    from sseg.data.readers.base import read_label

    for path in label_paths:
        label = read_label(Path(path))
        if transform is not None:
            label = transform(label)
        values = np.unique(label)
        bad = [int(v) for v in values if v != 255 and not 0 <= v < num_classes]
        if bad:
            raise DataError(f"labelled mask {path} holds class id(s) {bad[:5]} outside the {num_classes} "
                            "classes of the dataset")


def prepare(cfg: SemiVLConfig) -> Prepared:
    """Every input checked, the VLM first; generates the world (when configured) once its parent is found."""
    from pipelines.stages.semivl_data import resolve_paths
    from sseg.data.datasets import build_dataset
    from sseg.inference import check_class_names_encodable
    from sseg.semivl.concepts import as_mapping, class_definitions
    from sseg.semivl.config import SemiVLModelConfig
    from sseg.semivl.splits import check_split, resolve_split

    if cfg.vlm.kind == "sseg":  # the parent first: its absence is reported before the world is generated
        checkpoint, sseg_config, parent = _resolve_sseg(cfg)
        _check_embed_dim(cfg, int(sseg_config.get("embed_dim", 0)), str(checkpoint))
        vlm_fields = {"vlm": "sseg", "sseg": sseg_config}
    else:
        from sseg.clip_weights import clip_architecture

        weights = _check_clip(cfg)
        checkpoint, parent = cfg.vlm.checkpoint, None
        clip_model, clip_cfg = clip_architecture(cfg.vlm.clip_model, cfg.vlm.clip_model_cfg, weights)
        vlm_fields = {"vlm": "clip", "clip_model": clip_model, "clip_model_cfg": clip_cfg}
    if cfg.world is not None:
        import os

        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    reader = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split, require_labels=False)
    build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
    class_names = list(reader.class_names)
    split = resolve_split(cfg.data.dataset, cfg.data.split_dir, cfg.data.num_labeled, reader.keys,
                          cfg.data.split_seed)
    check_split(split, reader.keys, f"{cfg.data.root} ({cfg.data.train_split})")
    labeled_paths = resolve_paths(reader, split.labeled)
    unlabeled_paths = resolve_paths(reader, split.unlabeled, labeled=False)[0]
    check_labels(labeled_paths[1], len(class_names), getattr(reader, "label_transform", None))
    use_definitions = cfg.components.class_definitions and cfg.data.concepts is not None
    classes = as_mapping(class_definitions(class_names, cfg.data.concepts if use_definitions else None))

    reserved = {"vlm", "sseg", "clip_model", "clip_model_cfg", "decoder", "num_classes"} & set(cfg.model)
    if reserved:
        raise ConfigError(f"model.{sorted(reserved)[0]} is set by the run (vlm.*, components.language_decoder)")
    try:
        model_config = SemiVLModelConfig(
            **vlm_fields, decoder="language" if cfg.components.language_decoder else "deeplab",
            num_classes=None if cfg.components.language_decoder else len(class_names),
            image_size=cfg.data.crop_size, **cfg.model).model_dump(mode="json")
    except ValueError as exc:
        raise ConfigError(f"model: {first_line(exc)}") from None
    context = SemiVLModelConfig.model_validate(model_config).context_length
    check_class_names_encodable(classes, cfg.data.templates, context)
    tags = {"sseg.split": split.description, "sseg.split_official": str(split.official).lower(),
            "sseg.vlm": cfg.vlm.kind,
            "sseg.components": ",".join(k for k, v in cfg.components.model_dump().items() if v) or "none",
            "sseg.supervised_only": str(cfg.train.supervised_only).lower()}
    if cfg.vlm.kind == "sseg":
        tags["sseg.spatial_params"] = "backbone stride-2 convs + FPN 3x3 output convs (README, SemiVL)"
    return Prepared(class_names, classes, split, labeled_paths, unlabeled_paths, model_config,
                    checkpoint, parent, tags, label_transform=getattr(reader, "label_transform", None))
