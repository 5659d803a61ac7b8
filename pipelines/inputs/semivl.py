"""SemiVL's inputs, all checked before any work (bad input: one-line error, nothing written): the
labelled/unlabelled split, the label ids, the class definitions, the VLM checkpoint (the S-Seg parent run
or a local CLIP file) and its embedding size, and the model config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.lineage import resolve_parent
from pipelines.tracking import deviation_tags
from schemas.configs import SemiVLConfig
from sseg.errors import CheckpointError, ConfigError, DataError, first_line

PRETRAIN_EXPERIMENT = "sseg-pretrain"


@dataclass
class Prepared:
    """Everything checked before any work starts (bad input: one-line error, nothing written)."""

    class_names: list[str]
    classes: dict[str, list[str]]  # class → concepts the decoder and the evaluation see
    split: object  # sseg.semivl.splits.Split
    labeled_paths: tuple[list[str], list[str]]
    unlabeled_paths: list[str]
    model_config: dict
    vlm_checkpoint: str | None
    parent_run_id: str | None
    tags: dict = field(default_factory=dict)
    label_transform: object = None  # the reader's label-file ids → class ids (Cityscapes labelIds → train ids)
    guide_classes: dict[str, list[str]] | None = None  # what the dense VL guidance sees (None: ``classes``)


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
    from sseg.semivl.concepts import decoder_and_guide_classes
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
    classes, guide_classes = decoder_and_guide_classes(class_names, cfg.data.concepts,
                                                       cfg.components.class_definitions)

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
    check_class_names_encodable(guide_classes, cfg.data.templates, context)
    tags = {"sseg.split": split.description, "sseg.split_official": str(split.official).lower(),
            "sseg.vlm": cfg.vlm.kind,
            "sseg.components": ",".join(k if v is True else f"{k}={v}"
                                        for k, v in cfg.components.model_dump().items() if v) or "none",
            "sseg.supervised_only": str(cfg.train.supervised_only).lower()}
    tags.update(deviation_tags(semivl_deviations(cfg, len(split.unlabeled))))
    if cfg.vlm.kind == "sseg":
        tags["sseg.spatial_params"] = "backbone stride-2 convs + FPN 3x3 output convs (README, SemiVL)"
    return Prepared(class_names, classes, split, labeled_paths, unlabeled_paths, model_config,
                    checkpoint, parent, tags, label_transform=getattr(reader, "label_transform", None),
                    guide_classes=guide_classes)


# The public SemiVL code's Pascal VOC setting (experiments.py, exp 40): model widths, optimisation, data and
# evaluation; every difference is named in the run's sseg.deviation tag.
PAPER_MODEL = {"channels": 128, "text_channels": 128, "up_channels": [64, 32], "skip_channels": [32, 16],
               "clip_skip_blocks": [1, 4], "transformer_heads": 4, "pool_size": 4, "dense_pool": 1}
PAPER_EPOCHS = 80  # of the unlabelled loader


def semivl_deviations(cfg: SemiVLConfig, num_unlabeled: int) -> list[str]:
    """The choices of this config that differ from SemiVL's paper and public code (VOC hyperparameters;
    the learning rates are checked on VOC and the world only: the paper tunes them per dataset)."""
    out = []
    if cfg.vlm.kind != "clip" or cfg.vlm.clip_model not in ("ViT-B-16", "ViT-B-16-quickgelu"):
        out.append(f"VLM {cfg.vlm.kind if cfg.vlm.kind != 'clip' else cfg.vlm.clip_model} (the paper: CLIP ViT-B/16)")
    off = [k for k, v in cfg.components.model_dump().items() if v is False]
    if off:
        out.append(f"components off: {', '.join(off)}")
    if cfg.components.class_definitions == "decoder":
        out.append("class definitions through the decoder in training and evaluation (the paper: the dense VL "
                   "guidance only, the decoder on class names)")
    if cfg.data.templates != "single":
        out.append(f"prompt templates {cfg.data.templates} (the paper: \"a photo of a {{}}.\")")
    if cfg.data.crop_size != 512:
        out.append(f"crop {cfg.data.crop_size} (the paper: 512)")
    if cfg.data.img_scale is None or sorted(cfg.data.img_scale) != [512, 2048] or tuple(cfg.data.scale) != (0.5, 2.0):
        out.append(f"training rescale {list(cfg.data.img_scale) if cfg.data.img_scale else 'the image size'} x "
                   f"{list(cfg.data.scale)} (the "
                   "paper: short side 512 (long ≤ 2048) x [0.5, 2])")
    if (cfg.eval.short_side, cfg.eval.window, cfg.eval.stride) != (512, 512, 426):
        out.append(f"evaluation at short side {cfg.eval.short_side or 'native'}, window {cfg.eval.window} / "
                   f"stride {cfg.eval.stride} (the paper: short side 512, window 512 / stride 426)")
    t = cfg.train
    if t.batch_size * t.num_workers != 8:
        out.append(f"{t.batch_size * t.num_workers} labelled + unlabelled images per step (the paper: 8 + 8)")
    epochs = t.steps * t.batch_size * t.num_workers / max(num_unlabeled, 1)
    if abs(epochs - PAPER_EPOCHS) > 1:
        out.append(f"{t.steps} steps = {epochs:.3g} epochs of the unlabelled set (the paper: {PAPER_EPOCHS}, "
                   f"{PAPER_EPOCHS * (num_unlabeled // 8)} steps here)")
    if cfg.data.dataset in ("voc", "world") and (t.lr, t.backbone_lr_mult, t.head_lr_mult) != (1e-4, 0.01, 10.0):
        out.append(f"lr {t.lr:g}, backbone x{t.backbone_lr_mult:g}, head x{t.head_lr_mult:g} (the paper on VOC: "
                   "1e-4, x0.01, x10)")
    if (t.weight_decay, t.tau, tuple(t.guidance_lambda), t.guidance_threshold, t.warmup_steps, t.grad_clip) != \
            (0.01, 0.95, (0.1, 0.0), 0.9, 0, None):
        out.append(f"weight decay {t.weight_decay:g}, tau {t.tau:g}, guidance lambda {list(t.guidance_lambda)} / "
                   f"threshold {t.guidance_threshold:g}, warm-up {t.warmup_steps}, grad clip {t.grad_clip} (the "
                   "paper: 0.01, 0.95, [0.1, 0], 0.9, 0, none)")
    model = {k: cfg.model.get(k, v) for k, v in PAPER_MODEL.items()}
    if model != PAPER_MODEL:
        diff = ", ".join(f"{k} {model[k]}" for k in PAPER_MODEL if model[k] != PAPER_MODEL[k])
        out.append(f"decoder widths {diff} (the paper: {', '.join(f'{k} {v}' for k, v in PAPER_MODEL.items())})")
    if t.supervised_only:
        out.append("supervised only (labelled images alone)")
    return out
