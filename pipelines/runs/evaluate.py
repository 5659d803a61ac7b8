"""The evaluation run: open-vocabulary mIoU of any segmenting checkpoint, both protocols, one MLflow run."""

from __future__ import annotations

import math

from pipelines.runs.pretrain_eval import log_pictures
from pipelines.io.runtime import init_ray, require_gpus
from pipelines.stages.batch_inference import run_evaluation
from pipelines.stages.evaluate_protocols import background_threshold, build_protocol
from pipelines.tracking import generated_run_name, resolve_checkpoint, tracked_run
from schemas.configs import EvaluateConfig
from sseg.config import flatten
from sseg.errors import CheckpointError, ConfigError
from sseg.inference import SegmentConfig, check_class_names_encodable


def model_entry_check(state: dict, checkpoint: str) -> None:
    """Refuse, in one line, a checkpoint whose model cannot segment with class names."""
    from sseg.models.registry import model_entry

    if not model_entry(state["model_name"]).segments:
        raise CheckpointError(f"checkpoint {checkpoint} holds a '{state['model_name']}' model, which cannot segment")


WORLD_DEFAULT_SEGMENT = {"short_side": 64, "sliding": False, "window": 64, "stride": 64, "templates": "clip7"}


def run_evaluate(cfg: EvaluateConfig) -> dict:
    """Both protocols (or those configured) on one dataset, in one MLflow run; returns the result."""
    if not cfg.checkpoint:
        raise ConfigError("config field 'checkpoint' is required (a checkpoint path or an MLflow run id)")
    from sseg.data.datasets import build_dataset

    reader = build_dataset(cfg.dataset, cfg.root, cfg.split)  # fails early, one line, on a bad layout
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    from sseg.checkpoints import load_checkpoint

    state = load_checkpoint(checkpoint)
    model_entry_check(state, checkpoint)
    segment = dict(WORLD_DEFAULT_SEGMENT) if cfg.dataset == "world" else {}
    segment.update(cfg.segment)
    checked = SegmentConfig.model_validate({**segment, "bg_mode": "none"})  # validate fields early
    check_class_names_encodable(list(reader.class_names), checked.templates,
                                int(state["model_config"].get("context_length", 77)))
    bg_thresh, bg_source = background_threshold(cfg.dataset, segment)
    segment["bg_thresh"] = bg_thresh
    background_classes = cfg.background_classes
    if background_classes is None and cfg.dataset == "world":
        from sseg.world import STUFF_CLASSES

        background_classes = list(STUFF_CLASSES)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.gpus_per_actor, "gpus_per_actor")
    parent = (state.get("extra") or {}).get("mlflow_run_id")
    result: dict = {"dataset": cfg.dataset, "checkpoint": checkpoint, "checkpoint_kind": state["kind"]}
    with tracked_run(cfg.tracking.experiment, stage="evaluate", parent_run_id=parent,
                     run_name=cfg.tracking.run_name or generated_run_name("evaluate", cfg.dataset),
                     tags={"sseg.dataset": cfg.dataset}, params=flatten(cfg)) as tracker:
        _evaluate_protocols(cfg, tracker, result, reader, checkpoint, segment, checked, bg_thresh, bg_source,
                            background_classes)
    result["mlflow_run_id"] = tracker.run_id
    return result


def _evaluate_protocols(cfg, tracker, result, reader, checkpoint, segment, checked, bg_thresh, bg_source,
                        background_classes) -> None:
    if "with_background" in cfg.protocols:
        tracker.log_params({"eval.bg_thresh": bg_thresh, "eval.bg_thresh_source": bg_source,
                            "eval.bg_clamp": checked.bg_clamp})
        result.update(bg_thresh=bg_thresh, bg_thresh_source=bg_source)
        clamp = ", clamped per image to its best foreground probability" if checked.bg_clamp else ""
        print(f"[sseg] {cfg.dataset} with_background: background threshold {bg_thresh:g} "
              f"({bg_source}){clamp}", flush=True)
    for name in cfg.protocols:
        protocol = build_protocol(name, list(reader.class_names), reader.background_index,
                                  background_classes)
        seg = {**segment, "bg_mode": protocol.bg_mode}
        out = run_evaluation(
            checkpoint, {"name": cfg.dataset, "root": cfg.root, "split": cfg.split,
                         "label_map": protocol.label_map},
            seg, protocol.text_classes, background_index=protocol.background_index,
            max_images=cfg.max_images, num_actors=cfg.num_actors, gpus_per_actor=cfg.gpus_per_actor,
            batch_size=cfg.batch_size, keep_predictions=cfg.pictures, mask_quality=False)
        metrics = out["confusion"].compute(exclude=protocol.exclude)
        result[f"miou_{name}"] = metrics["miou"]
        result[f"pixel_accuracy_{name}"] = metrics["pixel_accuracy"]
        result["images"] = out["images"]
        result["skipped"] = out["skipped"]
        result["images_per_s"] = out["images_per_s"]
        if protocol.bg_mode == "threshold":
            result["bg_clamped_images"] = out["bg_clamped"]
            tracker.log_metrics({f"eval.bg_clamped_images_{name}": out["bg_clamped"]})
        tracker.log_metrics({f"eval.miou_{name}": metrics["miou"],
                             f"eval.pixel_accuracy_{name}": metrics["pixel_accuracy"],
                             "eval.images_per_s": out["images_per_s"]})
        tracker.log_metrics({f"eval.{name}.iou.{n}": v for n, v in
                             zip(protocol.report_names, metrics["per_class_iou"]) if not math.isnan(v)})
        tracker.log_dict({"class_names": protocol.report_names,
                          "per_class_iou": [None if math.isnan(v) else v for v in metrics["per_class_iou"]],
                          "confusion": out["confusion"].matrix.tolist()}, f"eval/{name}.json")
        log_pictures(tracker, out["examples"], protocol.report_names, metrics["per_class_iou"],
                     f"eval/{name}")
        print(f"[sseg] {cfg.dataset} {name}: mIoU {100 * metrics['miou']:.1f} "
              f"({out['images']} images, {out['images_per_s']:.1f} img/s)", flush=True)
