"""The evaluation run: open-vocabulary mIoU of any segmenting checkpoint, both protocols, one MLflow run."""

from __future__ import annotations

from pipelines.evaluation.report import background_classes_of, evaluate_protocols, segment_settings
from pipelines.io.runtime import init_ray, require_gpus
from pipelines.lineage import resolve_checkpoint
from pipelines.stages.evaluate_protocols import background_threshold
from pipelines.tracking import generated_run_name, tracked_run
from schemas.configs import EvaluateConfig
from sseg.config import flatten
from sseg.errors import CheckpointError, ConfigError
from sseg.inference import SegmentConfig, check_class_names_encodable


def model_entry_check(state: dict, checkpoint: str) -> None:
    """Refuse, in one line, a checkpoint whose model cannot segment with class names."""
    from sseg.models.registry import model_entry

    if not model_entry(state["model_name"]).segments:
        raise CheckpointError(f"checkpoint {checkpoint} holds a '{state['model_name']}' model, which cannot segment")


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
    segment = segment_settings(cfg.dataset, cfg.segment)
    checked = SegmentConfig.model_validate({**segment, "bg_mode": "none"})  # validate fields early
    check_class_names_encodable(list(reader.class_names), checked.templates,
                                int(state["model_config"].get("context_length", 77)))
    bg_thresh, bg_source = background_threshold(cfg.dataset, segment)
    segment["bg_thresh"] = bg_thresh
    background_classes = background_classes_of(cfg.dataset, cfg.background_classes)
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
    for name in cfg.protocols:  # one protocol at a time: each line printed as soon as it is measured
        report = evaluate_protocols(
            tracker, [("model", checkpoint, "eval")], {"name": cfg.dataset, "root": cfg.root, "split": cfg.split},
            reader, [name], segment, background_classes=background_classes, max_images=cfg.max_images,
            num_actors=cfg.num_actors, gpus_per_actor=cfg.gpus_per_actor, batch_size=cfg.batch_size,
            pictures=cfg.pictures)["model"][name]
        result[f"miou_{name}"] = report["miou"]
        result[f"pixel_accuracy_{name}"] = report["pixel_accuracy"]
        result.update(images=report["images"], skipped=report["skipped"], images_per_s=report["images_per_s"])
        if "bg_clamped_images" in report:
            result["bg_clamped_images"] = report["bg_clamped_images"]
        print(f"[sseg] {cfg.dataset} {name}: mIoU {100 * report['miou']:.1f} "
              f"({report['images']} images, {report['images_per_s']:.1f} img/s)", flush=True)
