"""The S-Seg+ self-training run (seed 004, sec. 3.3.4): S-Seg checkpoint → pseudo-labels of the target's
train images (resumable cache) → UperNet-ViT trained on them with the generic Ray Train loop → both models
evaluated on the target's labelled split with the same protocol, all in one MLflow run whose lineage tag
``sseg.parent_run_id`` is the pretraining run."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from pipelines.io.pseudo_label_cache import PseudoLabelCache, pseudo_label_identity
from pipelines.io.runtime import init_ray, require_gpus
from pipelines.tracking import resolve_checkpoint, resolve_tracking_uri, tracked_run
from pipelines.training.loop import LoopSettings
from schemas.configs import SelfTrainConfig
from sseg.checkpoints import CHECKPOINT_FILE, PRETRAIN_KIND, load_checkpoint
from sseg.config import flatten
from sseg.errors import CheckpointError, ConfigError, DataError, SsegError

log = logging.getLogger(__name__)
RUN_INFO = "sseg_run.json"


# ----------------------------------------------------------------------------- inputs


def newest_pretraining_run(experiment: str, tracking_uri: str | None = None) -> str | None:
    """The newest FINISHED run of ``experiment`` that holds a final checkpoint, or None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=50):
        if any(a.path.endswith(CHECKPOINT_FILE) for a in client.list_artifacts(run.info.run_id, "checkpoints/final")):
            return run.info.run_id
    return None


def resolve_parent(cfg: SelfTrainConfig) -> tuple[str, str | None]:
    """(local checkpoint file or directory, MLflow run id of the pretraining run if known)."""
    import re

    spec = cfg.checkpoint
    if spec is None:
        spec = newest_pretraining_run(cfg.pretrain_experiment)
        if spec is None:
            from pipelines.runs.pretrain import run_pretrain
            from schemas.configs import PretrainConfig
            from sseg.config import load_config

            what = cfg.pretrain_config or "the embedded default"
            print(f"[sseg] no finished run in experiment '{cfg.pretrain_experiment}': training an S-Seg first "
                  f"({what}, as python jobs/pretrain.py)", flush=True)
            pretrain = load_config(PretrainConfig, cfg.pretrain_config,
                                   [f"tracking.experiment={cfg.pretrain_experiment}"])
            spec = run_pretrain(pretrain)["mlflow_run_id"]
        print(f"[sseg] S-Seg checkpoint: newest finished '{cfg.pretrain_experiment}' run {spec}", flush=True)
    checkpoint = resolve_checkpoint(spec)
    run_id = spec if re.fullmatch(r"[0-9a-f]{32}", spec) else None
    return checkpoint, run_id


def check_class_list(requested: list[str] | None, dataset_names: list[str]) -> list[str]:
    """The class list of the S-Seg+ model: the dataset's; a given list must equal it (the pseudo-label ids
    are dataset ids), else a one-line error naming the first difference."""
    names = list(dataset_names)
    if requested is None:
        return names
    if list(requested) != names:
        missing = [n for n in names if n not in requested]
        extra = [n for n in requested if n not in names]
        detail = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") + \
                 (f"not in the dataset: {', '.join(extra)}" if extra else "")
        raise ConfigError(f"target.classes does not match the dataset's class list "
                          f"({detail or 'same names in another order'}; the dataset has: {', '.join(names)})")
    return names


def _segment_settings(dataset: str, overrides: dict) -> dict:
    from pipelines.runs.evaluate import WORLD_DEFAULT_SEGMENT

    segment = dict(WORLD_DEFAULT_SEGMENT) if dataset == "world" else {}
    segment.update(overrides)
    return segment


def _pseudo_label_segment(cfg: SelfTrainConfig, background_index: int | None) -> dict:
    """Inference settings of the pseudo-labels: the evaluation's; with background by GroupViT's rule when
    the dataset has a background class (the labels then use the dataset's ids)."""
    from pipelines.stages.evaluate_protocols import background_threshold
    from sseg.inference import SegmentConfig

    segment = _segment_settings(cfg.target.dataset, cfg.pseudo_labels.segment)
    if background_index is None:
        segment["bg_mode"] = "none"
    else:
        segment["bg_mode"] = "threshold"
        segment["bg_thresh"] = background_threshold(cfg.target.dataset, segment)[0]
    try:
        return SegmentConfig.model_validate(segment).model_dump(mode="json")
    except ValueError as exc:
        raise ConfigError(f"pseudo_labels.segment: {str(exc).splitlines()[0]}") from None


# ----------------------------------------------------------------------------- the run


def run_self_train(cfg: SelfTrainConfig, resume: str | None = None, callbacks: list[str] | None = None) -> dict:
    started = time.perf_counter()
    if cfg.world is not None:
        import os

        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    from sseg.data.datasets import build_dataset

    train_reader = build_dataset(cfg.target.dataset, cfg.target.root, cfg.target.train_split)
    val_reader = build_dataset(cfg.target.dataset, cfg.target.root, cfg.target.val_split)
    keys = train_reader.keys[:cfg.target.max_train_images] if cfg.target.max_train_images else train_reader.keys
    if not keys:
        raise DataError(f"the target's train split '{cfg.target.train_split}' under {cfg.target.root} has no images")
    class_names = check_class_list(cfg.target.classes, list(train_reader.class_names))
    if cfg.model.backbone_checkpoint and not Path(cfg.model.backbone_checkpoint).is_file():
        raise CheckpointError(f"model.backbone_checkpoint not found: {cfg.model.backbone_checkpoint}")
    if cfg.train.global_batch_size % cfg.train.num_workers:
        raise ConfigError("train.global_batch_size must be a multiple of train.num_workers")
    if cfg.train.global_batch_size // cfg.train.num_workers < 2:
        raise ConfigError("each training worker needs at least 2 images per batch (the head's batch norm)")

    parent_checkpoint, parent_run_id = resolve_parent(cfg)
    state = load_checkpoint(parent_checkpoint, kinds=[PRETRAIN_KIND])  # missing / other kind: one line
    parent_run_id = parent_run_id or (state.get("extra") or {}).get("mlflow_run_id")
    parent_file = Path(parent_checkpoint) / CHECKPOINT_FILE if Path(parent_checkpoint).is_dir() \
        else Path(parent_checkpoint)
    segment = _pseudo_label_segment(cfg, train_reader.background_index)
    from sseg.inference import check_class_names_encodable

    text_classes = [n for n in class_names if n.lower() != "background"]
    check_class_names_encodable(text_classes, segment["templates"], int(state["model_config"]["context_length"]))
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"class_names": class_names})})

    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.pseudo_labels.gpus_per_actor, "pseudo_labels.gpus_per_actor")
    require_gpus(1 if cfg.train.use_gpu else 0, "train.use_gpu")
    require_gpus(cfg.eval.gpus_per_actor, "eval.gpus_per_actor")

    identity = pseudo_label_identity(checkpoint_file=parent_file, class_names=class_names, segment=segment,
                                     dataset=cfg.target.dataset, split=cfg.target.train_split, keys=list(keys),
                                     chunk_size=cfg.pseudo_labels.chunk_size)
    cache_root = cfg.pseudo_labels.cache_dir or PseudoLabelCache.default_root(cfg.storage_path, identity)
    cache = PseudoLabelCache(cache_root, identity).open()  # a foreign cache: refused here, naming the difference

    run_name, info = _run_identity(cfg, resume)
    run_dir = Path(cfg.storage_path).resolve() / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    new_run = info is None
    tags = {"sseg.dataset": cfg.target.dataset, "sseg.pseudo_label_cache": cache.key,
            "sseg.note": "S-Seg+: UperNet-ViT trained on S-Seg pseudo-labels (seed 004 sec. 3.3.4)"}
    deviations = []
    if not cfg.model.backbone_checkpoint:
        deviations.append("ViT backbone randomly initialised (no MAE weights given; the paper uses MAE)")
    if cfg.train.class_balance != "none":
        deviations.append(f"class-balanced cross-entropy ({cfg.train.class_balance}; the paper: plain)")
    if segment.get("flip") or list(segment.get("scales", [1.0])) != [1.0]:
        deviations.append(f"pseudo-labels with test-time augmentation (flip={segment.get('flip')}, "
                          f"scales={list(segment.get('scales', [1.0]))})")
    if deviations:
        tags["sseg.deviation"] = "; ".join(deviations)
    with tracked_run(cfg.tracking.experiment, stage="self-train", run_name=run_name,
                     run_id=None if new_run else info["mlflow_run_id"], parent_run_id=parent_run_id, tags=tags,
                     params=flatten(cfg) if new_run else None,
                     config=cfg.model_dump(mode="json") if new_run else None) as tracker:
        if new_run:
            (run_dir / RUN_INFO).write_text(json.dumps({"run_name": run_name, "mlflow_run_id": tracker.run_id,
                                                         "cache_key": cache.key}))
        result = _run_stages(cfg, tracker, cache, parent_checkpoint, class_names, segment, train_reader,
                             val_reader, run_name, run_dir, callbacks, resuming=not new_run)
        result.update(parent_run_id=parent_run_id, parent_checkpoint=str(parent_checkpoint), run_name=run_name,
                      seconds=time.perf_counter() - started)
        tracker.log_metrics({"seconds": result["seconds"]})
    result["mlflow_run_id"] = tracker.run_id
    return result


def _run_stages(cfg, tracker, cache, parent_checkpoint, class_names, segment, train_reader, val_reader,
                run_name, run_dir, callbacks, resuming: bool = False) -> dict:
    from pipelines.runs.pretrain import fit
    from pipelines.stages.pseudo_labels import build_pseudo_label_cache, pseudo_label_statistics
    from pipelines.stages.self_train_data import count_rows, self_train_dataset

    dataset = {"name": cfg.target.dataset, "root": cfg.target.root, "split": cfg.target.train_split}
    labelled = build_pseudo_label_cache(cache, parent_checkpoint, dataset, class_names, segment,
                                        num_actors=cfg.pseudo_labels.num_actors,
                                        gpus_per_actor=cfg.pseudo_labels.gpus_per_actor,
                                        threads=cfg.pseudo_labels.threads_per_actor)
    files = cache.files()
    stats = pseudo_label_statistics(files, class_names, cfg.pseudo_labels.confidence_threshold, dataset)
    _log_pseudo_label_stats(tracker, labelled, stats, class_names)

    num_samples = count_rows(files)
    if num_samples < cfg.train.global_batch_size:
        raise DataError(f"only {num_samples} pseudo-labelled images: fewer than train.global_batch_size="
                        f"{cfg.train.global_batch_size}")
    total_steps, warmup_steps = cfg.train.steps, min(cfg.train.warmup_steps, cfg.train.steps)
    if cfg.train.class_balance != "none":
        from sseg.self_training import balanced_class_weights

        weights = balanced_class_weights([stats["class_histogram_kept"][name] for name in class_names])
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"class_weights": weights})})
        tracker.log_params({"derived.class_weights": json.dumps([round(w, 3) for w in weights])})
        print("[sseg] class weights (" + cfg.train.class_balance + "): "
              + ", ".join(f"{n} {w:.2f}" for n, w in zip(class_names, weights)), flush=True)
    data = self_train_dataset(files, cfg.train.crop_size or cfg.model.image_size, cfg.train.crop_scale,
                              cfg.pseudo_labels.confidence_threshold, cfg.train.hflip)
    settings = LoopSettings(
        step_builder="pipelines.training.self_train_step:build_self_train_step",
        config=cfg.model_dump(mode="json"), total_steps=total_steps, warmup_steps=warmup_steps,
        global_batch_size=cfg.train.global_batch_size, log_every=cfg.train.log_every,
        checkpoint_every=cfg.train.checkpoint_every, shuffle_buffer=cfg.train.shuffle_buffer,
        threads=int(cfg.train.threads_per_worker or max(1, int(cfg.train.cpus_per_worker))),
        mlflow_run_id=tracker.run_id, tracking_uri=tracker.tracking_uri, run_dir=str(run_dir),
        callbacks=list(callbacks or []))
    if resuming:  # --resume: the newest checkpoint on disk, in case Ray Train never registered it
        from pipelines.training.loop import newest_checkpoint

        found = newest_checkpoint(run_dir)
        if found is not None:
            settings.resume_checkpoint = found[0]
            print(f"[sseg] --resume {run_name}: newest checkpoint on disk is step {found[1]}", flush=True)
    tracker.log_params({"derived.total_steps": total_steps, "derived.warmup_steps": warmup_steps,
                        "derived.num_samples": num_samples})
    print(f"[sseg] self-training {run_name}: {total_steps} steps of {cfg.train.global_batch_size} images on "
          f"{num_samples} pseudo-labelled images; MLflow run {tracker.run_id}", flush=True)
    summary = fit(settings, data, cfg, run_name, run_dir)
    checkpoint = Path(summary["checkpoint"])
    tracker.log_artifact(checkpoint / CHECKPOINT_FILE, "checkpoints/final")

    evaluation = evaluate_pair(cfg, tracker, checkpoint, Path(parent_checkpoint), val_reader)
    result = {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
              "train_images_per_s": summary["train_images_per_s"], "final_loss": summary["final_loss"],
              "checkpoint": str(checkpoint), "pseudo_label_miou": stats.get("miou"),
              "pseudo_label_miou_kept": stats.get("miou_kept"),
              "pseudo_label_mean_confidence": stats["mean_confidence"],
              "pseudo_label_kept_fraction": stats["kept_fraction"], "pseudo_label_images": stats["images"],
              "pseudo_label_images_per_s": labelled["images_per_s"], "pseudo_label_cache": labelled["cache_dir"],
              "pseudo_label_chunks_labelled": labelled["chunks_labelled"], **evaluation}
    tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                         and v is not None}, step=summary["steps"])
    return result


def _log_pseudo_label_stats(tracker, labelled: dict, stats: dict, class_names: list[str]) -> None:
    import matplotlib.pyplot as plt

    metrics = {"pseudo_labels.mean_confidence": stats["mean_confidence"],
               "pseudo_labels.kept_fraction": stats["kept_fraction"], "pseudo_labels.images": stats["images"],
               "pseudo_labels.images_per_s": labelled["images_per_s"],
               "pseudo_labels.chunks_labelled": labelled["chunks_labelled"]}
    if "miou" in stats:
        metrics.update({"pseudo_labels.miou": stats["miou"], "pseudo_labels.miou_kept": stats["miou_kept"],
                        "pseudo_labels.pixel_accuracy": stats["pixel_accuracy"]})
        metrics.update({f"pseudo_labels.iou.{n}": v for n, v in zip(class_names, stats["per_class_iou"])
                        if not math.isnan(v)})
    tracker.log_metrics(metrics)
    tracker.log_dict({**stats, "cache": labelled}, "pseudo_labels/statistics.json")
    pixels = max(1, sum(stats["class_histogram"].values()))
    figure, axis = plt.subplots(figsize=(max(6, 0.45 * len(class_names)), 3.5))
    axis.bar(class_names, [stats["class_histogram"][n] / pixels for n in class_names], label="all pixels")
    axis.bar(class_names, [stats["class_histogram_kept"][n] / pixels for n in class_names],
             label=f"confidence ≥ {stats['confidence_threshold']:g}")
    axis.set_ylabel("share of pixels")
    axis.set_title("pseudo-label class histogram")
    axis.tick_params(axis="x", rotation=60)
    axis.legend()
    figure.tight_layout()
    tracker.log_figure(figure, "pseudo_labels/class_histogram.png")
    plt.close(figure)
    line = (f"[sseg] pseudo-labels: {stats['images']} images, mean confidence {stats['mean_confidence']:.3f}, "
            f"{100 * stats['kept_fraction']:.1f}% of pixels kept at {stats['confidence_threshold']:g}")
    if "miou" in stats:
        line += f", mIoU vs the train split's truth {100 * stats['miou']:.1f} (kept pixels {100 * stats['miou_kept']:.1f})"
    print(line, flush=True)


# ----------------------------------------------------------------------------- evaluation


def headline_protocol(cfg: SelfTrainConfig, background_index: int | None) -> str:
    if cfg.eval.headline is not None:
        return cfg.eval.headline
    return "all_classes" if background_index is None else "with_background"


def evaluate_pair(cfg: SelfTrainConfig, tracker, plus_checkpoint: Path, parent_checkpoint: Path, reader) -> dict:
    """S-Seg+ and its S-Seg parent on the target's labelled split, every protocol, the same settings;
    S-Seg+ logs ``eval.*``, S-Seg ``parent_eval.*`` (both in this run: the compare view shows the pair)."""
    from pipelines.runs.pretrain_eval import log_pictures
    from pipelines.stages.batch_inference import run_evaluation
    from pipelines.stages.evaluate_protocols import background_threshold, build_protocol

    headline = headline_protocol(cfg, reader.background_index)
    protocols = list(dict.fromkeys([headline, *cfg.eval.protocols]))
    segment = _segment_settings(cfg.target.dataset, cfg.eval.segment)
    bg_thresh, bg_source = background_threshold(cfg.target.dataset, segment)
    background_classes = cfg.target.background_classes
    if background_classes is None and cfg.target.dataset == "world":
        from sseg.world import STUFF_CLASSES

        background_classes = list(STUFF_CLASSES)
    tracker.log_params({"eval.headline": headline, "eval.bg_thresh": bg_thresh, "eval.bg_thresh_source": bg_source})
    result: dict = {"eval_protocol": headline}
    names = list(reader.class_names)
    for name in protocols:
        if name == "all_classes":
            if reader.background_index is not None:
                raise ConfigError("protocol all_classes needs a dataset without a background class")
            protocol = build_protocol("without_background", names, None, None)
        else:
            protocol = build_protocol(name, names, reader.background_index, background_classes)
        seg = {**segment, "bg_mode": protocol.bg_mode, "bg_thresh": bg_thresh}
        for model_key, checkpoint, prefix in (("sseg_plus", plus_checkpoint, "eval"),
                                              ("sseg", parent_checkpoint, "parent_eval")):
            out = run_evaluation(
                checkpoint, {"name": cfg.target.dataset, "root": cfg.target.root, "split": cfg.target.val_split,
                             "label_map": protocol.label_map},
                seg, protocol.text_classes, background_index=protocol.background_index,
                max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors,
                gpus_per_actor=cfg.eval.gpus_per_actor, batch_size=cfg.eval.batch_size,
                keep_predictions=cfg.eval.pictures, mask_quality=False)
            metrics = out["confusion"].compute(exclude=protocol.exclude)
            result[f"{model_key}_miou_{name}"] = metrics["miou"]
            tracker.log_metrics({f"{prefix}.miou_{name}": metrics["miou"],
                                 f"{prefix}.pixel_accuracy_{name}": metrics["pixel_accuracy"],
                                 f"{prefix}.images_per_s_{name}": out["images_per_s"]})
            tracker.log_metrics({f"{prefix}.{name}.iou.{n}": v for n, v in
                                 zip(protocol.report_names, metrics["per_class_iou"]) if not math.isnan(v)})
            tracker.log_dict({"class_names": protocol.report_names,
                              "per_class_iou": [None if math.isnan(v) else v for v in metrics["per_class_iou"]],
                              "confusion": out["confusion"].matrix.tolist()}, f"{prefix}/{name}.json")
            log_pictures(tracker, out["examples"], protocol.report_names, metrics["per_class_iou"],
                         f"{prefix}/{name}")
            if model_key == "sseg_plus":
                result["eval_images"] = out["images"]
                result["sseg_plus_eval_images_per_s"] = out["images_per_s"]
        gain = result[f"sseg_plus_miou_{name}"] - result[f"sseg_miou_{name}"]
        result[f"gain_{name}"] = gain
        tracker.log_metrics({f"gain_{name}": gain})
        print(f"[sseg] {cfg.target.dataset} {name}: S-Seg {100 * result[f'sseg_miou_{name}']:.1f} → S-Seg+ "
              f"{100 * result[f'sseg_plus_miou_{name}']:.1f} mIoU ({100 * gain:+.1f})", flush=True)
    result.update(sseg_miou=result[f"sseg_miou_{headline}"], sseg_plus_miou=result[f"sseg_plus_miou_{headline}"],
                  gain=result[f"gain_{headline}"])
    tracker.log_metrics({"sseg_miou": result["sseg_miou"], "sseg_plus_miou": result["sseg_plus_miou"],
                         "gain": result["gain"]})
    return result


# ----------------------------------------------------------------------------- resume


def _run_identity(cfg: SelfTrainConfig, resume: str | None) -> tuple[str, dict | None]:
    """A new run name, or (``--resume latest|NAME``) the stopped run's name and MLflow run (Ray Train picks
    up its latest checkpoint under ``storage_path/NAME``)."""
    storage = Path(cfg.storage_path).resolve()
    if resume is None:
        return cfg.tracking.run_name or f"self-train-{time.strftime('%Y%m%d-%H%M%S')}", None
    if resume == "latest":
        infos = [p for p in storage.glob(f"*/{RUN_INFO}") if p.parent.name.startswith("self-train")
                 or json.loads(p.read_text()).get("cache_key")]
        if not infos:
            raise SsegError(f"--resume latest: no self-training runs under {storage}")
        info_path = max(infos, key=lambda p: p.stat().st_mtime)
    else:
        info_path = storage / resume / RUN_INFO
        if not info_path.is_file():
            raise SsegError(f"--resume {resume}: no run of that name under {storage}")
    return info_path.parent.name, json.loads(info_path.read_text())
