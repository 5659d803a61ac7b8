"""TagCLIP's inputs, all checked before any work (bad input: one-line error, nothing written): the VLM (the
S-Seg parent run or a local CLIP file) and its embedding size, the seen / unseen split against the dataset's
classes, the label ids, the training text (seen names only) and the model config."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipelines.inputs.semivl import check_labels
from pipelines.lineage import resolve_parent
from pipelines.tracking import deviation_tags
from schemas.configs import TagCLIPConfig
from sseg.errors import CheckpointError, ConfigError, first_line

PRETRAIN_EXPERIMENT = "sseg-pretrain"
LABELS_CHECKED = 500  # label files read up front (all of VOC aug or COCO would take minutes)
RUN_SET = ("vlm", "sseg", "clip_model", "clip_model_cfg", "seen_classes", "image_size")


@dataclass
class Prepared:
    class_names: list[str]  # the dataset's, in label order
    split: object  # sseg.tagclip.splits.ClassSplit: what is evaluated as seen / unseen
    train_split: object  # what is trained on (all classes seen for the upper-bound row)
    train_paths: tuple[list[str], list[str]]
    model_config: dict
    vlm_checkpoint: str | None
    parent_run_id: str | None
    training_text: list[str]
    tags: dict = field(default_factory=dict)
    label_transform: object = None


def _check_embed_dim(cfg: TagCLIPConfig, found: int, source: str) -> None:
    if cfg.vlm.embed_dim is not None and found != cfg.vlm.embed_dim:
        raise CheckpointError(f"VL checkpoint {source} has embedding size {found}, the config expects "
                              f"vlm.embed_dim={cfg.vlm.embed_dim}")


def _vlm_fields(cfg: TagCLIPConfig) -> tuple[dict, str | None, str | None]:
    """(model-config fields of the VLM, checkpoint, parent run id); the VLM's weights checked."""
    if cfg.vlm.kind == "sseg":
        from sseg.checkpoints import upgrade_model_config
        from sseg.models.config import ModelConfig

        parent = resolve_parent(cfg.vlm.checkpoint, experiment=PRETRAIN_EXPERIMENT, kinds=["sseg-pretrain"],
                                field="vlm.checkpoint", make_with="python jobs/pretrain.py")
        config = upgrade_model_config("sseg", parent.state["model_config"], str(parent.checkpoint))
        if ModelConfig.model_validate(config).mask_feature_source != "pooled":
            raise ConfigError(f"{parent.checkpoint}: the S-Seg VLM needs a model with mask_feature_source=pooled "
                              "(its semantic pixel map gives the patch embeddings)")
        _check_embed_dim(cfg, int(config.get("embed_dim", 0)), str(parent.checkpoint))
        return {"vlm": "sseg", "sseg": config}, str(parent.checkpoint), parent.run_id
    from sseg.clip_weights import clip_architecture, read_clip_weights

    weights = read_clip_weights(cfg.vlm.checkpoint)  # a missing or wrong file: one line
    proj, text_proj = weights.state["visual.proj"], weights.state["text_projection"]
    if proj.shape[1] != text_proj.shape[1]:
        raise CheckpointError(f"VL checkpoint {cfg.vlm.checkpoint}: image embedding {proj.shape[1]} != text "
                              f"embedding {text_proj.shape[1]}")
    _check_embed_dim(cfg, int(proj.shape[1]), cfg.vlm.checkpoint)
    name, clip_cfg = clip_architecture(cfg.vlm.clip_model, cfg.vlm.clip_model_cfg, weights)
    return {"vlm": "clip", "clip_model": name, "clip_model_cfg": clip_cfg}, cfg.vlm.checkpoint, None


def check_training_text(prompts: list[str], unseen: tuple[str, ...]) -> None:
    """No unseen class name may occur (as whole words) in the text the model trains with."""
    for name in unseen:
        pattern = re.compile(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])")
        for prompt in prompts:
            if pattern.search(prompt.lower()):
                raise ConfigError(f"unseen class {name!r} occurs in the training text ({prompt!r}): unseen "
                                  "names must never enter training")


def _class_names(cfg: TagCLIPConfig):
    """(the dataset's class names, its background index, the train reader or None before the world exists)."""
    from sseg.data.datasets import build_dataset

    if cfg.world is not None and cfg.data.dataset == "world":
        from sseg.world import WORLD_CLASSES

        return list(WORLD_CLASSES), None, None
    reader = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split)
    return list(reader.class_names), reader.background_index, reader


def prepare(cfg: TagCLIPConfig) -> Prepared:
    """Every input checked, the VLM first, then the split, the training text and the model; the world is
    generated (when configured) only after, then the label files are checked."""
    from pipelines.stages.tagclip_data import labelled_paths
    from sseg.data.datasets import build_dataset
    from sseg.inference import check_class_names_encodable
    from sseg.prompts import resolve_templates
    from sseg.tagclip.config import TagCLIPModelConfig
    from sseg.tagclip.splits import resolve_split

    vlm_fields, checkpoint, parent = _vlm_fields(cfg)
    reserved = sorted(set(RUN_SET) & set(cfg.model))
    if reserved:
        raise ConfigError(f"model.{reserved[0]} is set by the run (vlm.*, data.split, data.crop_size)")
    class_names, background, reader = _class_names(cfg)
    split = resolve_split(cfg.data.split, class_names)
    if split.ignored and split.ignored != ((background,) if background is not None else ()):
        raise ConfigError(f"split {split.name!r}: only the dataset's background class can be ignored "
                          f"(it ignores {', '.join(class_names[i] for i in split.ignored)})")
    train_split = split.all_seen() if cfg.train.all_classes else split
    templates = resolve_templates(cfg.data.templates)
    training_text = [t.format(n) for n in train_split.seen_names for t in templates]
    check_training_text(training_text, train_split.unseen_names)
    try:
        model_config = TagCLIPModelConfig(**vlm_fields, seen_classes=train_split.seen_names,
                                          image_size=cfg.data.crop_size, **cfg.model).model_dump(mode="json")
    except ValueError as exc:
        raise ConfigError(f"model: {first_line(exc)}") from None
    typed = TagCLIPModelConfig.model_validate(model_config)
    dim = int(vlm_fields["sseg"]["embed_dim"]) if typed.vlm == "sseg" else None
    if dim is not None and dim % typed.heads:
        raise ConfigError(f"the VLM's embedding size {dim} is not divisible by model.heads={typed.heads}")
    check_class_names_encodable([class_names[i] for i in split.evaluated], cfg.data.templates, typed.context_length)
    if cfg.world is not None:
        import os

        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    reader = reader or build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split)
    if list(reader.class_names) != class_names:
        raise ConfigError(f"{cfg.data.root} does not hold the world's classes (world_dir={cfg.world_dir})")
    build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
    train_paths = labelled_paths(reader)
    transform = getattr(reader, "label_transform", None)
    check_labels(train_paths[1][:LABELS_CHECKED], len(class_names), transform)
    variant = typed.variant if typed.inference_weighting or not typed.trusty_token else f"{typed.variant}_no_weighting"
    tags = {"sseg.split": f"{split.name}: unseen {', '.join(split.unseen_names)}", "sseg.vlm": cfg.vlm.kind,
            "sseg.variant": variant, "sseg.trained_on": "all classes" if cfg.train.all_classes else "seen classes",
            **deviation_tags(tagclip_deviations(cfg))}
    return Prepared(class_names, split, train_split, train_paths, model_config, checkpoint, parent, training_text,
                    tags, label_transform=transform)


# the paper's inductive settings (dvlab-research/TagCLIP configs/voc12 and coco_stuff): iterations per dataset
PAPER_STEPS = {"voc": 20000, "coco_stuff": 80000}
PAPER_MODEL = {"prompt_tokens": 10, "prompt_layers": None, "layers": 3, "heads": 8, "trusty_token": True,
               "trusty_learner": True, "inference_weighting": True, "seen_bias": 0.1,
               "query_init": "xavier", "zero_shot_ensemble": 0.0}
PAPER_TRAIN = {"batch_size": 16, "lr": 2e-5, "weight_decay": 0.01, "head_lr_mult": 10.0, "prompt_lr_mult": 10.0,
               "vision_lr_mult": 0.0, "warmup_steps": 1500, "poly_power": 0.9, "min_lr": 1e-6, "weight_focal": 20.0,
               "weight_dice": 1.0, "weight_trusty": 10.0}


def tagclip_deviations(cfg: TagCLIPConfig) -> list[str]:
    """The choices of this config that differ from TagCLIP's paper and public code (the MLflow tag
    ``sseg.deviation``). The trusty loss is not one: focal is the public code's, dice the paper's text."""
    out = []
    if cfg.vlm.kind != "clip" or cfg.vlm.clip_model not in ("ViT-B-16", "ViT-B-16-quickgelu"):
        out.append(f"VLM {cfg.vlm.kind if cfg.vlm.kind != 'clip' else cfg.vlm.clip_model} (the paper: CLIP ViT-B/16)")
    model = {k: cfg.model.get(k, v) for k, v in PAPER_MODEL.items()}
    if cfg.vlm.kind != "clip":
        model.pop("prompt_tokens"), model.pop("prompt_layers")  # visual prompts exist for CLIP only
    diff = [k for k, v in model.items() if v != PAPER_MODEL[k]]
    if diff:
        out.append("model " + ", ".join(f"{k} {model[k]} (the paper: {PAPER_MODEL[k]})" for k in diff))
    if cfg.train.all_classes:
        out.append("trained on every class, unseen included (the fully supervised upper bound)")
    d = cfg.data
    if d.templates != "a photo of a {}.":
        out.append(f"prompt templates {d.templates} (the paper: \"a photo of a {{}}.\")")
    if d.crop_size != 512 or tuple(d.scale) != (0.5, 2.0):
        out.append(f"crop {d.crop_size} after a rescale x {list(d.scale)} (the paper: 512 after x [0.5, 2])")
    e = cfg.eval
    if (e.short_side, e.window, e.stride) != (512, 512, 426):
        out.append(f"evaluation at short side {e.short_side or 'native'}, window {e.window} / stride {e.stride} "
                   "(the paper: short side 512, window 512 / stride 426)")
    t = cfg.train
    steps = PAPER_STEPS.get(d.dataset)
    if steps is not None and t.steps != steps:
        out.append(f"{t.steps} iterations (the paper on {d.dataset}: {steps})")
    train = {k: getattr(t, k) for k in PAPER_TRAIN}
    diff = [k for k in PAPER_TRAIN if train[k] != PAPER_TRAIN[k]]
    if diff:
        out.append("train " + ", ".join(f"{k} {train[k]:g} (the paper: {PAPER_TRAIN[k]:g})" for k in diff))
    return out
