"""The pretraining run: world → pseudo-mask cache → the trainer with the S-Seg step → evaluation, all in
one MLflow run."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from pipelines.io.runtime import init_ray, require_gpus
from pipelines.tracking import deviation_tags
from pipelines.training import trainer
from pipelines.training.loop import DataStageCpus
from pipelines.training.pretrain_step import build_pretrain_step
from schemas.configs import PretrainConfig, PseudoMaskJobConfig
from sseg.data.captions import caption_words_method
from sseg.errors import SsegError

log = logging.getLogger(__name__)
STAGE = "pretrain"


def _ensure_cache(cfg: PretrainConfig) -> list[str]:
    from pipelines.stages.pseudo_mask_cache import build_pseudo_mask_cache
    from pipelines.io.cache import PseudoMaskCache

    job = PseudoMaskJobConfig(world=None, data=cfg.data, pseudo_masks=cfg.pseudo_masks, pool=cfg.pool,
                              cache_dir=cfg.cache_dir, labeled_split=None, ray=cfg.ray)
    summary = build_pseudo_mask_cache(job, run_name="pretrain-cache")
    if summary["shards_processed"]:
        log.info("pseudo-mask cache built: %s", summary)
    return PseudoMaskCache.for_config(cfg.cache_dir, cfg.pseudo_masks, cfg.data.image_size).files()


def run_pretrain(cfg: PretrainConfig, resume: str | None = None, callbacks=()) -> dict:
    """World → pseudo-mask cache → Ray Train fit → evaluation, in one MLflow run. ``callbacks``: functions
    the training loop calls after every step (see pipelines/training/loop.py)."""
    run = trainer.run_identity(STAGE, cfg, resume)
    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    if cfg.eval.labeled_split:  # an evaluation class list the text tower cannot read fails before training
        from sseg.data.datasets import build_dataset
        from sseg.inference import check_class_names_encodable

        reader = build_dataset(cfg.eval.dataset, cfg.eval.labeled_split, "val")
        check_class_names_encodable(list(reader.class_names), cfg.eval.templates, cfg.model.context_length)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    trainer.check_gpus(cfg.train)
    stream = cfg.pseudo_mask_source == "stream"
    if stream:
        require_gpus(cfg.pool.gpus_per_actor, "pool.gpus_per_actor")
    # each CPU pseudo-mask actor of the stream source holds one CPU while training runs
    cpu_actors = cfg.pool.num_actors if stream and not cfg.pool.gpus_per_actor else 0
    cpus_per_worker = trainer.plan_cpus(cfg.train, cpu_actors, stages=data_stages(stream, cpu_actors))

    from pipelines.stages import train_data

    if not stream:
        files = _ensure_cache(cfg)
        num_samples = train_data.count_cache_rows(files)
        seed = trainer.data_seed(cfg.train)
        dataset = train_data.cache_dataset(files, cfg.data.image_size, cfg.data.crop_scale, cfg.data.text,
                                           seed=seed)
    else:
        from pipelines.io.shards import resolve_shards

        seed = None
        num_samples = cfg.world.num_train if cfg.world is not None else None
        dataset = train_data.stream_dataset(resolve_shards(cfg.data.shards), cfg.data.image_size,
                                            cfg.data.crop_scale, cfg.pseudo_masks, num_actors=cfg.pool.num_actors,
                                            gpus_per_actor=cfg.pool.gpus_per_actor,
                                            batch_size=cfg.pool.batch_size, text=cfg.data.text)
    total_steps, warmup_steps = _schedule(cfg, num_samples)

    tags = {"sseg.mask_feature_source": cfg.model.mask_feature_source,
            "sseg.pseudo_mask_generator": cfg.pseudo_masks.generator,
            "sseg.caption_words": caption_words_method()}
    tags.update(deviation_tags(pretrain_deviations(cfg)))
    if cfg.pseudo_masks.generator == "pixel":
        tags["sseg.note"] = "pseudo masks from the pixel K-Means baseline (no DINO checkpoint given)"
    with trainer.open_run(run, cfg, parent_run_id=cfg.tracking.parent_run_id, tags=tags) as tracker:
        tracker.log_params({"derived.num_samples": num_samples})
        print(f"[sseg] run {run.name}: {total_steps} steps of {cfg.train.global_batch_size} images "
              f"on {cfg.train.num_workers} worker(s); MLflow run {tracker.run_id}", flush=True)
        summary = trainer.train(build_pretrain_step, cfg.model_dump(mode="json"), dataset, runtime=cfg.train,
                                run=run, tracker=tracker, storage_path=cfg.storage_path, total_steps=total_steps,
                                warmup_steps=warmup_steps, global_batch_size=cfg.train.global_batch_size,
                                cpus_per_worker=cpus_per_worker, seed=seed, callbacks=callbacks)
        summary["final_query_collapse"] = summary.pop("final_metrics").get("query_collapse")
        if cfg.eval.labeled_split:
            from pipelines.evaluation.pretraining import evaluate_pretraining

            summary.update(evaluate_pretraining(cfg, Path(summary["checkpoint"]), tracker))
        tracker.log_metrics({k: v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)},
                            step=summary["steps"])
    summary["mlflow_run_id"] = tracker.run_id
    return summary


def data_stages(stream: bool, cpu_actors: int) -> list[DataStageCpus]:
    """The Ray Data stages that hold CPU while pretraining trains (Ray Data's names)."""
    if not stream:
        return [DataStageCpus("the cache's read and crop tasks (ReadParquet → MapBatches(CropCachedSamples))", 1.0)]
    stages = [DataStageCpus("the shard read tasks (ReadTolerantWebDataset → MapBatches(DecodeSamples))", 1.0)]
    if cpu_actors:
        stages.insert(0, DataStageCpus(f"{cpu_actors} CPU pseudo-mask actor(s) (MapBatches(PseudoMaskStage))",
                                       float(cpu_actors), held=True))
    return stages


def pretrain_deviations(cfg: PretrainConfig) -> list[str]:
    """The choices of this config that differ from the paper (the MLflow tag ``sseg.deviation``)."""
    deviations = []
    if cfg.pseudo_masks.generator != "dino":
        deviations.append(f"pseudo masks from the {cfg.pseudo_masks.generator} generator (the paper: DINO "
                          "ViT-S/8 features + K-Means)")
    if cfg.model.backbone != "swin_small_patch4_window7_224":
        deviations.append(f"backbone {cfg.model.backbone} (the paper: Swin-S)")
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
