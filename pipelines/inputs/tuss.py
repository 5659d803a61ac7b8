"""TUSS's inputs, all checked before any work (bad input: one-line error, nothing written): the VLM (the S-Seg
parent run or a local CLIP file, loaded once — a file of another model fails here), the world, both splits'
readers and label ids, the class definitions and their prompts, the semi-supervised split, the image-level
labels (captions' mentioned classes or the ground truth's) and the mask source."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.lineage import resolve_parent
from pipelines.tracking import deviation_tags
from schemas.configs import TussConfig
from sseg.errors import ConfigError, DataError

PRETRAIN_EXPERIMENT = "sseg-pretrain"


@dataclass
class Prepared:
    class_names: list[str]
    classes: dict[str, list[str]]  # class → concepts
    vlm: object  # the loaded VLM (driver side: text tower, logit scale)
    vlm_spec: dict  # how actors rebuild it: kind, checkpoint file, clip_model, clip_model_cfg
    masks_spec: dict  # the masks config with resolved paths
    train_keys: list[str]
    val_keys: list[str]
    train_truth: bool  # every training image has a label file
    labeled_keys: set[str] = field(default_factory=set)  # semi: the labelled training images
    split_description: str = ""
    image_labels: dict[str, list[str]] = field(default_factory=dict)  # weak: image key → class names
    parent_run_id: str | None = None
    tags: dict = field(default_factory=dict)


def _vlm(cfg: TussConfig) -> tuple[dict, str | None]:
    if cfg.vlm.kind == "sseg":
        parent = resolve_parent(cfg.vlm.checkpoint, experiment=PRETRAIN_EXPERIMENT, kinds=["sseg-pretrain"],
                                field="vlm.checkpoint", make_with="python jobs/pretrain.py")
        return {"kind": "sseg", "checkpoint": str(parent.checkpoint), "clip_model": cfg.vlm.clip_model,
                "clip_model_cfg": None}, parent.run_id
    return {"kind": "clip", "checkpoint": str(Path(cfg.vlm.checkpoint).resolve()), "clip_model": cfg.vlm.clip_model,
            "clip_model_cfg": cfg.vlm.clip_model_cfg}, None


def _check_labels(reader, keys_with_labels: int) -> None:
    from sseg.data.readers.base import read_label

    n = len(reader.class_names)
    for path in reader.label_paths[:keys_with_labels]:
        values = np.unique(read_label(Path(path)))
        bad = [int(v) for v in values if v != 255 and not 0 <= v < n]
        if bad:
            raise DataError(f"label file {path} holds class id(s) {bad[:5]} outside the {n} classes "
                            f"({', '.join(reader.class_names[:6])}…)")


def _limit(keys: list[str], limit: int | None) -> list[str]:
    return keys if limit is None else keys[:limit]


def world_captions(cfg: TussConfig, keys: list[str]) -> dict[str, str]:
    """The world's caption of each VOC-layout image (rendered again: the layout stores none)."""
    from sseg.world import render_sample

    out = {}
    for key in keys:
        match = re.fullmatch(r"(train|val)_(\d+)", key)
        if match is None:
            raise DataError(f"world image key {key!r} is not <split>_<index>")
        split = "labeled_train" if match.group(1) == "train" else "val"
        out[key] = render_sample(cfg.world.seed, int(match.group(2)), cfg.world, split).caption
    return out


def caption_classes(captions: dict[str, str], classes: dict[str, list[str]], world: bool) -> dict[str, list[str]]:
    """The classes each caption names: the world's own parser (its synonyms, plurals), or else any concept of a
    class appearing as a word (or its plural with -s / -es)."""
    if world:
        from sseg.world import mentioned_classes

        return {k: sorted(mentioned_classes(c)) for k, c in captions.items()}
    words = {}
    for name, concepts in classes.items():
        for concept in concepts:
            for form in (concept, concept + "s", concept + "es"):
                words[form.lower()] = name
    out = {}
    for key, caption in captions.items():
        text = " " + " ".join(re.findall(r"[a-z]+", caption.lower())) + " "
        out[key] = sorted({c for w, c in words.items() if f" {w} " in text})
    return out


def prepare(cfg: TussConfig, kinds: tuple[str, ...] | None = None) -> Prepared:
    """Every input checked, the VLM first (a missing parent is reported before the world is generated).
    ``kinds``: the supervision kinds the run needs (default: ``supervision.kind``; the table: all four)."""
    import os

    from sseg.data.datasets import build_dataset
    from sseg.inference import check_class_names_encodable
    from sseg.semivl.concepts import as_mapping, class_definitions
    from sseg.tuss.vlm import load_vlm

    vlm_spec, parent_run_id = _vlm(cfg)
    vlm = load_vlm(vlm_spec["kind"], vlm_spec["checkpoint"], vlm_spec["clip_model"], vlm_spec["clip_model_cfg"])
    masks_spec = cfg.masks.model_dump(mode="json")
    if cfg.masks.source == "sseg" and cfg.masks.checkpoint is not None:
        masks_spec["checkpoint"] = str(resolve_parent(cfg.masks.checkpoint, experiment=PRETRAIN_EXPERIMENT,
                                                      kinds=["sseg-pretrain"], field="masks.checkpoint",
                                                      make_with="python jobs/pretrain.py").checkpoint)
    if cfg.masks.source == "sseg" and cfg.vlm.kind == "sseg" and cfg.masks.checkpoint is None:
        masks_spec["checkpoint"] = None  # the VLM itself
    if cfg.masks.source == "files":
        if not Path(cfg.masks.files_dir).is_dir():
            raise ConfigError(f"masks.files_dir {cfg.masks.files_dir} is not a directory")
        masks_spec["files_dir"] = str(Path(cfg.masks.files_dir).resolve())
        masks_spec["files_sha256"] = _listing_digest(Path(cfg.masks.files_dir))
    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    train = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split, require_labels=False)
    val = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
    if list(train.class_names) != list(val.class_names):
        raise DataError(f"{cfg.data.train_split} and {cfg.data.val_split} have different class lists")
    train_keys, val_keys = _limit(train.keys, cfg.data.max_train_images), _limit(val.keys, cfg.data.max_val_images)
    train_truth = all(Path(p).is_file() for p in train.label_paths[:len(train_keys)])
    _check_labels(val, len(val_keys))
    if train_truth:
        _check_labels(train, len(train_keys))
    sup = cfg.supervision
    kinds = kinds or (sup.kind,)
    if {"full", "semi"} & set(kinds) and not train_truth:
        raise DataError(f"supervision.kind={'full' if 'full' in kinds else 'semi'} needs label files for the "
                        f"training images ({cfg.data.root}, {cfg.data.train_split})")
    if cfg.classifier.tune and {"semi", "weak"} & set(kinds) and not train_truth:
        raise ConfigError("choosing GLCC's hyperparameters needs the training images' labels (a held-out slice): "
                          "give them, or classifier.tune=false")
    class_names = list(train.class_names)
    classes = as_mapping(class_definitions(class_names, cfg.data.concepts))
    check_class_names_encodable(classes, cfg.data.templates, int(vlm.context_length))
    prep = Prepared(class_names, classes, vlm, vlm_spec, masks_spec, train_keys, val_keys, train_truth,
                    parent_run_id=parent_run_id,
                    tags={"sseg.vlm": cfg.vlm.kind, "sseg.masks": cfg.masks.source, "sseg.embed": cfg.embed.method,
                          "sseg.supervision": ",".join(kinds)})
    if "semi" in kinds:
        from sseg.semivl.splits import check_split, resolve_split

        split = resolve_split(cfg.data.dataset, sup.split_dir, sup.num_labeled, train_keys, sup.split_seed)
        check_split(split, train_keys, f"{cfg.data.root} ({cfg.data.train_split})")
        prep.labeled_keys, prep.split_description = set(split.labeled), split.description
        prep.tags["sseg.split"] = split.description
    if "weak" in kinds:
        prep.image_labels = _image_labels(cfg, prep, train)
        prep.tags["sseg.image_labels"] = sup.image_labels
    prep.tags.update(deviation_tags(tuss_deviations(cfg)))
    return prep


def _image_labels(cfg: TussConfig, prep: Prepared, reader) -> dict[str, list[str]]:
    from sseg.tuss.supervision import image_labels_from_label_map

    if cfg.supervision.image_labels == "ground_truth":
        if not prep.train_truth:
            raise DataError("supervision.image_labels=ground_truth needs the training images' label files")
        out = {}
        for i, key in enumerate(prep.train_keys):
            present = image_labels_from_label_map(reader[i][2], len(prep.class_names))
            out[key] = [n for n, p in zip(prep.class_names, present) if p]
        return out
    if cfg.data.dataset == "world" and cfg.world is not None:
        captions = world_captions(cfg, prep.train_keys)
    elif cfg.supervision.captions_file:
        captions = json.loads(Path(cfg.supervision.captions_file).read_text())
        missing = [k for k in prep.train_keys if k not in captions]
        if missing:
            raise DataError(f"{cfg.supervision.captions_file} has no caption for {len(missing)} training image(s), "
                            f"e.g. {missing[0]!r}")
    else:
        raise ConfigError("supervision.image_labels=captions needs supervision.captions_file (JSON {image key: "
                          "caption}) outside the embedded world")
    return caption_classes({k: captions[k] for k in prep.train_keys}, prep.classes, cfg.data.dataset == "world")


def _listing_digest(directory: Path) -> str:
    import hashlib

    listing = sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in directory.glob("*.png"))
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


# the paper's VOC settings (configs/tuss_voc.yaml): geometry of the embeddings and GLCC's probe / graph
PAPER_EMBED = {"short_side": 448, "sliding": True, "window": 224, "stride": 112, "gsw": True}
PAPER_PROBE = {"scale": 100.0, "lr": 0.02, "momentum": 0.9, "batch_size": 512, "epochs": 90, "warmup_epochs": 10}
PAPER_ORDER = ("probe", "propagation", "probe", "propagation")


def tuss_deviations(cfg: TussConfig) -> list[str]:
    """The choices of this config that differ from the paper (the MLflow tag ``sseg.deviation``). The mask
    embedding method is not one when it is a row of the paper's table (MaskCLIP pooling, DBA); the
    supervision kind and GLCC's searched hyperparameters (k, α) are the experiment, not deviations."""
    out = []
    if cfg.vlm.kind != "clip" or cfg.vlm.clip_model not in ("ViT-B-16", "ViT-B-16-quickgelu"):
        out.append(f"VLM {cfg.vlm.kind if cfg.vlm.kind != 'clip' else cfg.vlm.clip_model} (the paper: CLIP ViT-B/16)")
    if cfg.embed.method == "pooled_dba":
        out.append("pooled_dba: affinity-restricted DBA analogue on S-Seg's semantic map")
    if cfg.masks.source != "files":
        out.append(f"masks from {cfg.masks.source} (the paper: SAM masks, given as files)")
    if cfg.data.templates != "clip":
        out.append(f"prompt templates {cfg.data.templates} (the paper: CLIP's 80)")
    embed = {k: getattr(cfg.embed, k) for k in PAPER_EMBED}
    diff = [k for k in PAPER_EMBED if embed[k] != PAPER_EMBED[k]]
    if diff:
        out.append("embedding " + ", ".join(f"{k} {embed[k]} (the paper: {PAPER_EMBED[k]})" for k in diff))
    glcc = cfg.classifier.glcc
    probe = {k: getattr(glcc.probe, k) for k in PAPER_PROBE}
    diff = [k for k in PAPER_PROBE if probe[k] != PAPER_PROBE[k]]
    if diff:
        out.append("probe " + ", ".join(f"{k} {probe[k]:g} (the paper: {PAPER_PROBE[k]:g})" for k in diff))
    if tuple(glcc.order) != PAPER_ORDER:
        out.append(f"GLCC order {' → '.join(glcc.order)} (the paper: two rounds of probe → propagation)")
    return out
