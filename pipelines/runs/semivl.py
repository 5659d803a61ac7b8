"""The SemiVL run: checks → split → Ray Data rows (labelled + unlabelled) → the generic Ray Train loop
with the SemiVL step → sliding-window evaluation, in one MLflow run whose lineage tag is the S-Seg run
the VLM comes from. ``run_ablation``: the rows of SemiVL's Table 6 + supervised-only, one MLflow run
each under one parent run, and the comparison table."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.io.runtime import init_ray
from pipelines.tracking import tracked_run
from pipelines.training.loop import LoopSettings
from schemas.configs import SemiVLConfig
from sseg.checkpoints import CHECKPOINT_FILE
from sseg.config import flatten
from sseg.errors import CheckpointError, ConfigError, DataError, first_line

log = logging.getLogger(__name__)
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


def newest_pretrain_run(tracking_uri: str | None = None) -> str:
    """The run id of the newest FINISHED run of the ``sseg-pretrain`` experiment."""
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    experiment = client.get_experiment_by_name(PRETRAIN_EXPERIMENT)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"],
        max_results=1)
    if not runs:
        raise CheckpointError(f"vlm.checkpoint not given and no finished '{PRETRAIN_EXPERIMENT}' run in MLflow: "
                              "run jobs/pretrain.py first or give a checkpoint path / run id")
    return runs[0].info.run_id


def _resolve_sseg(cfg: SemiVLConfig) -> tuple[str | None, dict, str | None]:
    """(checkpoint file, S-Seg model config, parent run id) of the embedded VLM."""
    import re

    from pipelines.tracking import resolve_checkpoint
    from sseg.checkpoints import load_checkpoint, upgrade_model_config
    from sseg.models.registry import load_model_config

    spec = cfg.vlm.checkpoint
    if spec is None and not cfg.components.vl_init:
        return None, load_model_config("sseg_tiny")[1], None
    spec = spec or newest_pretrain_run()
    path = Path(resolve_checkpoint(spec))
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    state = load_checkpoint(path, kinds=["sseg-pretrain"])
    run_id = spec if re.fullmatch(r"[0-9a-f]{32}", spec) else (state.get("extra") or {}).get("mlflow_run_id")
    return str(path), upgrade_model_config("sseg", state["model_config"], str(path)), run_id


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
    from pipelines.stages.semivl_data import resolve_paths
    from sseg.data.datasets import build_dataset
    from sseg.inference import check_class_names_encodable
    from sseg.semivl.concepts import as_mapping, class_definitions
    from sseg.semivl.config import SemiVLModelConfig
    from sseg.semivl.splits import check_split, random_split, read_split

    reader = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split)
    build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
    class_names = list(reader.class_names)
    if cfg.data.split_dir:
        split = read_split(cfg.data.split_dir)
    else:
        split = random_split(reader.keys, cfg.data.num_labeled, cfg.data.split_seed)
    check_split(split, reader.keys, f"{cfg.data.root} ({cfg.data.train_split})")
    labeled_paths = resolve_paths(reader, split.labeled)
    unlabeled_paths = resolve_paths(reader, split.unlabeled)[0]
    check_labels(labeled_paths[1], len(class_names), getattr(reader, "label_transform", None))
    use_definitions = cfg.components.class_definitions and cfg.data.concepts is not None
    classes = as_mapping(class_definitions(class_names, cfg.data.concepts if use_definitions else None))

    if cfg.vlm.kind == "sseg":
        checkpoint, sseg_config, parent = _resolve_sseg(cfg)
        _check_embed_dim(cfg, int(sseg_config.get("embed_dim", 0)), str(checkpoint))
        vlm_fields = {"vlm": "sseg", "sseg": sseg_config}
    else:
        from sseg.clip_weights import clip_architecture

        weights = _check_clip(cfg)
        checkpoint, parent = cfg.vlm.checkpoint, None
        clip_model, clip_cfg = clip_architecture(cfg.vlm.clip_model, cfg.vlm.clip_model_cfg, weights)
        vlm_fields = {"vlm": "clip", "clip_model": clip_model, "clip_model_cfg": clip_cfg}
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
                    checkpoint, parent, tags)


def run_semivl(cfg: SemiVLConfig, *, extra_tags: dict | None = None, prepared: Prepared | None = None,
               callbacks: list[str] | None = None) -> dict:
    from pipelines.runs.pretrain import fit
    from pipelines.stages.semivl_data import semivl_dataset
    from sseg.semivl.splits import write_split

    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    prep = prepared or prepare(cfg)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    from pipelines.io.runtime import require_gpus

    require_gpus(1 if cfg.train.use_gpu else 0, "train.use_gpu")
    run_name = cfg.tracking.run_name or f"semivl-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.storage_path).resolve() / run_name
    with tracked_run(cfg.tracking.experiment, stage="semivl", run_name=run_name,
                     parent_run_id=cfg.tracking.parent_run_id or prep.parent_run_id,
                     tags={**prep.tags, **(extra_tags or {})}, params=flatten(cfg),
                     config=cfg.model_dump(mode="json")) as tracker:
        run_dir.mkdir(parents=True, exist_ok=True)
        split_dir = write_split(prep.split, run_dir / "splits" / cfg.data.dataset / str(len(prep.split.labeled)))
        tracker.log_artifact(split_dir / "labeled.txt", "splits")
        tracker.log_artifact(split_dir / "unlabeled.txt", "splits")
        tracker.log_dict(prep.classes, "class_definitions.json")
        tracker.log_params({"derived.num_labeled": len(prep.split.labeled),
                            "derived.num_unlabeled": len(prep.split.unlabeled),
                            "derived.vlm_checkpoint": str(prep.vlm_checkpoint)})
        dataset = semivl_dataset(prep.labeled_paths, prep.unlabeled_paths, crop=cfg.data.crop_size,
                                 scale=cfg.data.scale, num_classes=len(prep.class_names), seed=cfg.train.seed,
                                 deterministic=cfg.train.deterministic_data)
        print(f"[sseg] SemiVL run {run_name}: {cfg.train.steps} steps of {cfg.train.batch_size} labelled + "
              f"{cfg.train.batch_size} unlabelled images ({len(prep.split.labeled)} labelled, "
              f"{len(prep.split.unlabeled)} unlabelled); MLflow run {tracker.run_id}", flush=True)
        resolved = {"model_config": prep.model_config, "vlm_kind": cfg.vlm.kind,
                    "vlm_checkpoint": prep.vlm_checkpoint, "classes": prep.classes}
        settings = LoopSettings(
            step_builder="pipelines.training.semivl_step:build_semivl_step",
            config={"job": cfg.model_dump(mode="json"), "resolved": resolved},
            total_steps=cfg.train.steps, warmup_steps=cfg.train.warmup_steps,
            global_batch_size=cfg.train.batch_size * cfg.train.num_workers, log_every=cfg.train.log_every,
            checkpoint_every=cfg.train.checkpoint_every, shuffle_buffer=cfg.train.shuffle_buffer,
            threads=int(cfg.train.threads_per_worker or max(1, int(cfg.train.cpus_per_worker))),
            mlflow_run_id=tracker.run_id, tracking_uri=tracker.tracking_uri, run_dir=str(run_dir),
            callbacks=list(callbacks or []),
            data_seed=cfg.train.seed if cfg.train.deterministic_data else None)
        summary = fit(settings, dataset, cfg, run_name, run_dir)
        tracker.log_artifact(Path(summary["checkpoint"]) / CHECKPOINT_FILE, "checkpoints/final")
        summary.update(evaluate_semivl(cfg, prep, Path(summary["checkpoint"]), tracker))
        tracker.log_metrics({k: v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=summary["steps"])
    summary["mlflow_run_id"] = tracker.run_id
    return summary


def segment_settings(cfg: SemiVLConfig, class_names: list[str]) -> dict:
    background = "background" in [c.lower() for c in class_names]
    return {"templates": cfg.data.templates, "bg_mode": "class" if background else "none",
            "short_side": cfg.eval.short_side, "sliding": True, "window": cfg.eval.window,
            "stride": cfg.eval.stride}


def evaluate_semivl(cfg: SemiVLConfig, prep: Prepared, checkpoint_dir: Path, tracker) -> dict:
    from pipelines.runs.pretrain_eval import log_pictures, thing_stuff_summary
    from pipelines.stages.batch_inference import run_evaluation

    dataset = {"name": cfg.data.dataset, "root": cfg.data.root, "split": cfg.data.val_split}
    result = run_evaluation(checkpoint_dir, dataset, segment_settings(cfg, prep.class_names), prep.classes,
                            max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors,
                            batch_size=cfg.eval.batch_size, keep_predictions=8, mask_quality=False)
    metrics = result["confusion"].compute()
    out = {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
           "eval_images": result["images"], "eval_images_per_s": result["images_per_s"]}
    if cfg.data.dataset == "world":
        out.update(thing_stuff_summary(prep.class_names, metrics["per_class_iou"]))
    tracker.log_metrics({f"eval.{k}": v for k, v in out.items() if isinstance(v, (int, float))})
    tracker.log_metrics({f"eval.iou.{n}": float(v) for n, v in zip(prep.class_names, metrics["per_class_iou"])
                         if np.isfinite(v)})
    tracker.log_dict({"class_names": prep.class_names, "per_class_iou": metrics["per_class_iou"],
                      "confusion": result["confusion"].matrix.tolist()}, "eval/val.json")
    log_pictures(tracker, result["examples"], prep.class_names, metrics["per_class_iou"], "eval")
    return out


# ----------------------------------------------------------------------------- ablation (paper Table 6)

ABLATION_ROWS: list[tuple[str, dict, bool]] = [
    # (row, components, supervised_only)
    ("UniMatch baseline", dict(vl_init=False, spatial_ft=False, language_decoder=False, guidance=False,
                               class_definitions=False), False),
    ("+ VL init", dict(vl_init=True, spatial_ft=False, language_decoder=False, guidance=False,
                       class_definitions=False), False),
    ("+ spatial FT", dict(vl_init=True, spatial_ft=True, language_decoder=False, guidance=False,
                          class_definitions=False), False),
    ("+ language decoder", dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=False,
                                class_definitions=False), False),
    ("+ guidance", dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=True,
                        class_definitions=False), False),
    ("+ class definitions (SemiVL)", dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=True,
                                          class_definitions=True), False),
    ("supervised only (SemiVL model, labelled images alone)",
     dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=False, class_definitions=True), True),
]


def ablation_table(rows: list[dict]) -> str:
    lines = ["| row | mIoU | thing mIoU | stuff mIoU | train s | MLflow run |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def pct(key):
            v = r.get(key)
            return "" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"
        lines.append(f"| {r['row']} | {pct('miou')} | {pct('miou_things')} | {pct('miou_stuff')} | "
                     f"{r.get('train_seconds', 0):.0f} | `{r['mlflow_run_id'][:8]}…` |")
    return "\n".join(lines)


def run_ablation(cfg: SemiVLConfig) -> dict:
    """Every row of ABLATION_ROWS as its own MLflow run (``mlflow.parentRunId`` = one parent run), the
    zero-shot mIoU of the VLM the rows start from, and the comparison table (printed, logged)."""
    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    configs = []
    for name, components, supervised in ABLATION_ROWS:
        row_cfg = cfg.model_copy(deep=True)
        row_cfg.components = row_cfg.components.model_validate(components)
        row_cfg.train.supervised_only = supervised
        configs.append((name, row_cfg, prepare(row_cfg)))  # every row's input checked before the first runs
    base = configs[-2][2]
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tracked_run(cfg.tracking.experiment, stage="semivl-ablation", run_name=f"semivl-ablation-{stamp}",
                     parent_run_id=base.parent_run_id, tags=base.tags, params=flatten(cfg),
                     config=cfg.model_dump(mode="json")) as parent:
        rows = []
        if cfg.vlm.kind == "sseg" and base.vlm_checkpoint:
            zero = zero_shot_miou(cfg, base)
            parent.log_metrics({"zero_shot_miou": zero})
            rows.append({"row": "zero-shot S-Seg (the VLM the rows start from, its own inference)",
                         "miou": zero, "mlflow_run_id": base.parent_run_id or "-" * 8})
        for i, (name, row_cfg, prep) in enumerate(configs):
            row_cfg.tracking.run_name = f"semivl-ablation-{stamp}-{i}"
            result = run_semivl(row_cfg, prepared=prep,
                                extra_tags={"mlflow.parentRunId": parent.run_id, "sseg.ablation_row": name})
            rows.append({"row": name, **{k: result.get(k) for k in ("miou", "miou_things", "miou_stuff",
                                                                     "train_seconds", "mlflow_run_id")}})
            parent.log_metrics({f"row{i}.miou": result["miou"]})
            print(f"[sseg] ablation row {i}: {name}: mIoU {100 * result['miou']:.1f}", flush=True)
        table = ablation_table(rows)
        print(table, flush=True)
        out = Path(cfg.storage_path).resolve() / f"semivl-ablation-{stamp}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.md").write_text(table + "\n")
        (out / "ablation.json").write_text(json.dumps(rows, indent=1, default=float))
        parent.log_artifact(out / "ablation.md")
        parent.log_artifact(out / "ablation.json")
    return {"rows": rows, "mlflow_run_id": parent.run_id, "table": str(out / "ablation.md")}


def zero_shot_miou(cfg: SemiVLConfig, prep: Prepared) -> float:
    """Open-vocabulary mIoU of the S-Seg checkpoint itself (mask-classification inference) on the same
    val split, class names and templates as the SemiVL rows."""
    from pipelines.stages.batch_inference import run_evaluation

    dataset = {"name": cfg.data.dataset, "root": cfg.data.root, "split": cfg.data.val_split}
    names = {n: [n] for n in prep.class_names}
    result = run_evaluation(prep.vlm_checkpoint, dataset, segment_settings(cfg, prep.class_names), names,
                            max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors,
                            batch_size=cfg.eval.batch_size, mask_quality=False)
    return float(result["confusion"].compute()["miou"])
