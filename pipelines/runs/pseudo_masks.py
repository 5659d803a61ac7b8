"""The pseudo-mask run: world (if embedded) → pseudo-mask cache on a Ray actor pool → oracle mIoU, one
MLflow run."""

from __future__ import annotations

import logging
import os

from pipelines.io.runtime import init_ray, require_gpus
from pipelines.stages.pseudo_mask_cache import build_pseudo_mask_cache, oracle_miou
from pipelines.tracking import generated_run_name, tracked_run
from schemas.configs import PseudoMaskJobConfig
from sseg.config import flatten

log = logging.getLogger(__name__)


def run_name(cfg: PseudoMaskJobConfig) -> str:
    """The MLflow run name: tracking.run_name, else ``pseudo-masks-<generator>-<time>``."""
    return cfg.tracking.run_name or generated_run_name("pseudo-masks", cfg.pseudo_masks.generator)


def run_pseudo_masks(cfg: PseudoMaskJobConfig) -> dict:
    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.pool.gpus_per_actor, "pool.gpus_per_actor")
    tags = {"sseg.generator": cfg.pseudo_masks.generator}
    if cfg.pseudo_masks.generator == "pixel":
        tags["sseg.note"] = "pixel K-Means baseline (Lab + xy), not DINO: no DINO checkpoint given"
        log.warning("pseudo masks from the pixel K-Means baseline (Lab + xy), not DINO features")
    with tracked_run(cfg.tracking.experiment, stage="pseudo_masks", run_name=run_name(cfg),
                     parent_run_id=cfg.tracking.parent_run_id, tags=tags, params=flatten(cfg),
                     config=cfg.model_dump(mode="json")) as tracker:
        result = build_pseudo_mask_cache(cfg, run_name=tracker.run_id or "cache")
        if cfg.labeled_split:
            result.update(oracle_miou(cfg))
        tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
        tracker.log_metrics({f"skipped.{k}": v for k, v in result["skipped"].items()})
        tracker.set_tags({"sseg.pseudo_mask_cache_key": result["cache_key"]})
    result["generator"] = cfg.pseudo_masks.generator
    result["mlflow_run_id"] = tracker.run_id
    return result
