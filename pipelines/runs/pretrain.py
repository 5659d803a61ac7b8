"""The pretraining run: world → pseudo-mask cache → the generic Ray Train loop with the S-Seg step →
evaluation, all in one MLflow run."""

from __future__ import annotations

import json
import logging
import os
import math
import time
from pathlib import Path

from pipelines.io.runtime import init_ray
from pipelines.tracking import tracked_run
from pipelines.training.loop import (LoopSettings, data_stage_names, describe_stall, fit_watched, make_trainer,
                                     monitor_snapshot, plan_worker_cpus, start_progress_monitor)
from schemas.configs import PretrainConfig, PseudoMaskJobConfig
from sseg.checkpoints import CHECKPOINT_FILE
from sseg.config import config_hash, flatten
from sseg.data.captions import caption_words_method
from sseg.errors import SsegError

log = logging.getLogger(__name__)
RUN_INFO = "sseg_run.json"


def _run_identity(cfg: PretrainConfig, resume: str | None) -> tuple[str, dict | None]:
    storage = Path(cfg.storage_path).resolve()
    if resume is None:
        return cfg.tracking.run_name or f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}", None
    if resume == "latest":
        infos = sorted(storage.glob(f"*/{RUN_INFO}"), key=lambda p: p.stat().st_mtime)
        if not infos:
            raise SsegError(f"--resume latest: no runs under {storage}")
        info_path = infos[-1]
    else:
        info_path = storage / resume / RUN_INFO
        if not info_path.is_file():
            raise SsegError(f"--resume {resume}: no run of that name under {storage}")
    info = json.loads(info_path.read_text())
    if info.get("config_hash") != config_hash(cfg.model):
        raise SsegError(f"--resume {info['run_name']}: that run used another model config; "
                        "resume with the config it was started with")
    return info["run_name"], info


def _ensure_cache(cfg: PretrainConfig) -> list[str]:
    from pipelines.stages.pseudo_mask_cache import build_pseudo_mask_cache
    from pipelines.io.cache import PseudoMaskCache

    job = PseudoMaskJobConfig(world=None, data=cfg.data, pseudo_masks=cfg.pseudo_masks, pool=cfg.pool,
                              cache_dir=cfg.cache_dir, labeled_split=None, ray=cfg.ray)
    summary = build_pseudo_mask_cache(job, run_name="pretrain-cache")
    if summary["shards_processed"]:
        log.info("pseudo-mask cache built: %s", summary)
    return PseudoMaskCache.for_config(cfg.cache_dir, cfg.pseudo_masks, cfg.data.image_size).files()


def run_pretrain(cfg: PretrainConfig, resume: str | None = None, callbacks: list[str] | None = None) -> dict:
    """World → pseudo-mask cache → Ray Train fit → evaluation, in one MLflow run. ``callbacks``:
    ``"module:function"`` hooks the training loop calls after every step (see pipelines/training/loop.py)."""
    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    if cfg.eval.labeled_split:  # an evaluation class list the text tower cannot read fails before training
        from sseg.data.datasets import build_dataset
        from sseg.inference import check_class_names_encodable

        reader = build_dataset(cfg.eval.dataset, cfg.eval.labeled_split, "val")
        check_class_names_encodable(list(reader.class_names), cfg.eval.templates, cfg.model.context_length)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    _check_resources(cfg)
    cpus_per_worker = _plan_cpus(cfg)
    run_name, info = _run_identity(cfg, resume)
    run_dir = Path(cfg.storage_path).resolve() / run_name
    run_dir.mkdir(parents=True, exist_ok=True)

    from pipelines.stages import train_data

    if cfg.pseudo_mask_source == "cache":
        files = _ensure_cache(cfg)
        num_samples = train_data.count_cache_rows(files)
        data_seed = cfg.train.seed if cfg.train.deterministic_data else None
        dataset = train_data.cache_dataset(files, cfg.data.image_size, cfg.data.crop_scale,
                                           cfg.data.text, seed=data_seed)
    else:
        from pipelines.io.shards import resolve_shards

        data_seed = None
        shards = resolve_shards(cfg.data.shards)
        num_samples = cfg.world.num_train if cfg.world is not None else None
        dataset = train_data.stream_dataset(shards, cfg.data.image_size, cfg.data.crop_scale,
                                            cfg.pseudo_masks, num_actors=cfg.pool.num_actors,
                                            gpus_per_actor=cfg.pool.gpus_per_actor,
                                            batch_size=cfg.pool.batch_size, text=cfg.data.text)
    total_steps, warmup_steps = _schedule(cfg, num_samples)

    tags = {"sseg.mask_feature_source": cfg.model.mask_feature_source,
            "sseg.pseudo_mask_generator": cfg.pseudo_masks.generator,
            "sseg.caption_words": caption_words_method()}
    deviations = pretrain_deviations(cfg)
    if deviations:
        tags["sseg.deviation"] = "; ".join(deviations)
    if cfg.pseudo_masks.generator == "pixel":
        tags["sseg.note"] = "pseudo masks from the pixel K-Means baseline (no DINO checkpoint given)"
    new_run = info is None
    with tracked_run(cfg.tracking.experiment, stage="pretrain", run_name=run_name,
                     run_id=None if new_run else info["mlflow_run_id"], parent_run_id=cfg.tracking.parent_run_id,
                     tags=tags, params=flatten(cfg) if new_run else None,
                     config=cfg.model_dump(mode="json") if new_run else None) as tracker:
        if new_run:
            (run_dir / RUN_INFO).write_text(json.dumps({
                "run_name": run_name, "mlflow_run_id": tracker.run_id, "config_hash": config_hash(cfg.model),
            }))
            tracker.log_params({"derived.total_steps": total_steps, "derived.warmup_steps": warmup_steps,
                                "derived.num_samples": num_samples})
        print(f"[sseg] run {run_name}: {total_steps} steps of {cfg.train.global_batch_size} images "
              f"on {cfg.train.num_workers} worker(s); MLflow run {tracker.run_id}", flush=True)
        settings = LoopSettings(
            step_builder="pipelines.training.pretrain_step:build_pretrain_step",
            config=cfg.model_dump(mode="json"), total_steps=total_steps, warmup_steps=warmup_steps,
            global_batch_size=cfg.train.global_batch_size, log_every=cfg.train.log_every,
            checkpoint_every=cfg.train.checkpoint_every, shuffle_buffer=cfg.train.shuffle_buffer,
            threads=int(cfg.train.threads_per_worker or max(1, int(cpus_per_worker))),
            mlflow_run_id=tracker.run_id, tracking_uri=tracker.tracking_uri, run_dir=str(run_dir),
            callbacks=list(callbacks or []), data_seed=data_seed)
        if not new_run:
            from pipelines.training.loop import newest_checkpoint

            found = newest_checkpoint(run_dir)
            if found is not None:
                settings.resume_checkpoint = found[0]
                print(f"[sseg] --resume {run_name}: newest checkpoint on disk is step {found[1]} "
                      f"({found[0]})", flush=True)
        summary = fit(settings, dataset, cfg, run_name, run_dir, cpus_per_worker)
        tracker.log_artifact(Path(summary["checkpoint"]) / CHECKPOINT_FILE, "checkpoints/final")
        if cfg.eval.labeled_split:
            from pipelines.runs.pretrain_eval import evaluate_pretraining

            summary.update(evaluate_pretraining(cfg, Path(summary["checkpoint"]), tracker))
        tracker.log_metrics({k: v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)},
                            step=summary["steps"])
    summary["mlflow_run_id"] = tracker.run_id
    return summary


def pretrain_deviations(cfg: PretrainConfig) -> list[str]:
    """The choices of this config that differ from the paper (the MLflow tag ``sseg.deviation``)."""
    deviations = []
    if cfg.model.mask_feature_source != "query":
        deviations.append("mask features pooled from a pixel-feature map under each predicted mask (the "
                          "paper uses the decoder query outputs)")
    if cfg.train.caption_feature == "word_mean":
        deviations.append("caption feature = mean of its words encoded one by one in prompt templates "
                          "(the paper encodes the whole text in one pass)")
    if cfg.train.weight_words > 0:
        deviations.append(f"word-to-mask alignment loss added with weight {cfg.train.weight_words} "
                          "(not in the paper)")
    if cfg.train.mask_loss_size is not None:
        deviations.append(f"mask losses on a {cfg.train.mask_loss_size}-px grid (targets resized down, "
                          "predictions up; the paper follows MaskFormer: the target size)")
    return deviations


def fit(settings: LoopSettings, dataset, cfg: PretrainConfig, run_name: str, run_dir: Path,
        cpus_per_worker: float | None = None) -> dict:
    """Run the Ray Train fit; one-line errors for a failed run, a stall, a NaN stop or a missing checkpoint."""
    import uuid

    import ray

    monitor = None
    if cfg.train.stall_timeout_s:
        settings.progress_actor = f"sseg-progress-{run_name}-{uuid.uuid4().hex[:8]}"
        monitor = start_progress_monitor(settings.progress_actor)
    trainer = make_trainer(settings, dataset, run_name=run_name, storage_path=cfg.storage_path,
                           num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                           cpus_per_worker=cpus_per_worker or cfg.train.cpus_per_worker,
                           max_failures=cfg.train.max_failures, checkpoints_to_keep=cfg.train.checkpoints_to_keep,
                           placement_strategy=cfg.train.placement_strategy)
    worker_resources = {"CPU": cpus_per_worker or cfg.train.cpus_per_worker or 1.0,
                        **({"GPU": 1} if cfg.train.use_gpu else {})}
    stages = data_stage_names(dataset)

    def describe(snapshot: dict) -> str:
        return describe_stall(snapshot, cfg.train.stall_timeout_s, data_stages=stages,
                              num_workers=cfg.train.num_workers, worker_resources=worker_resources)

    started = time.perf_counter()
    try:
        result = fit_watched(trainer, monitor_snapshot(monitor) if monitor is not None else None,
                             cfg.train.stall_timeout_s, describe)
    except SsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors; keep the first line
        raise SsegError(f"training failed: {_first_line(exc)} (checkpoints kept in {run_dir})") from None
    finally:
        if monitor is not None:
            ray.kill(monitor)
    metrics = result.metrics or {}
    if metrics.get("nan_stop"):
        raise SsegError(f"training stopped: non-finite loss at step {int(metrics.get('step', -1))}; "
                        f"last good checkpoint: {result.checkpoint.path if result.checkpoint else 'none'}")
    if result.checkpoint is None:
        raise SsegError("training finished without a checkpoint")
    return {"run_name": run_name, "steps": int(metrics.get("step", settings.total_steps)),
            "train_seconds": time.perf_counter() - started, "checkpoint": str(Path(result.checkpoint.path)),
            "final_loss": metrics.get("loss"), "final_query_collapse": metrics.get("query_collapse"),
            "train_images_per_s": metrics.get("images_per_s")}


def _schedule(cfg: PretrainConfig, num_samples: int | None) -> tuple[int, int]:
    steps_per_epoch = (num_samples // cfg.train.global_batch_size) if num_samples else None
    if cfg.train.steps is not None:
        total = cfg.train.steps
    elif steps_per_epoch:
        total = max(1, math.ceil(cfg.train.epochs * steps_per_epoch))
    else:
        raise SsegError("train.steps must be set when the number of samples is unknown (stream source)")
    if cfg.train.warmup_steps is not None:
        warmup = cfg.train.warmup_steps
    else:
        warmup = int(cfg.train.warmup_epochs * (steps_per_epoch or 0))
    if steps_per_epoch == 0:
        raise SsegError(f"only {num_samples} training samples: fewer than train.global_batch_size="
                        f"{cfg.train.global_batch_size}")
    return total, min(warmup, total)


def _plan_cpus(cfg: PretrainConfig) -> float:
    """CPUs per training worker leaving ``train.data_cpus`` (plus the CPU pseudo-mask actors of the stream
    source) to the data stages; a one-line error when an explicit ``train.cpus_per_worker`` leaves none.
    An autoscaling cluster may add nodes, so there the request stands as given."""
    import os

    import ray

    if os.environ.get("SSEG_AUTOSCALING_CLUSTER", "0") == "1":
        return cfg.train.cpus_per_worker or 1.0
    data_cpus = cfg.train.data_cpus
    if cfg.pseudo_mask_source == "stream" and not cfg.pool.gpus_per_actor:
        data_cpus += cfg.pool.num_actors  # each CPU pseudo-mask actor holds one CPU while training runs
    cpus, note = plan_worker_cpus(cfg.train.num_workers, cfg.train.cpus_per_worker, data_cpus,
                                  float(ray.cluster_resources().get("CPU", 0)))
    if note:
        print(f"[sseg] {note}", flush=True)
    return cpus


def _check_resources(cfg: PretrainConfig) -> None:
    from pipelines.io.runtime import require_gpus

    require_gpus(1 if cfg.train.use_gpu else 0, "train.use_gpu")
    if cfg.pseudo_mask_source == "stream":
        require_gpus(cfg.pool.gpus_per_actor, "pool.gpus_per_actor")


def _first_line(exc: BaseException) -> str:
    """The root cause of a (Ray-wrapped) exception as one line, e.g. ``TypeError: ...``."""
    import re

    text = str(exc)
    causes = re.findall(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt)): (.+)$", text, re.M)
    causes = [c for c in causes if c[0] not in ("WorkerGroupError", "TrainingFailedError", "UserCodeException")]
    if causes:
        name, message = causes[-1]
        return f"{name}: {message.strip()}"[:400]
    for line in text.splitlines():
        if line.strip() and not line.startswith("Traceback"):
            return line.strip()[:400]
    return type(exc).__name__
