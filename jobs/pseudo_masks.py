"""Build the pseudo-mask Parquet cache from WebDataset shards (DINO/pixel + K-Means on a Ray actor pool).

    python jobs/pseudo_masks.py [--config FILE] [section.field=value ...]

Re-running skips finished shards. Last stdout line: JSON with samples, skips by reason, oracle mIoU,
images/s and the MLflow run id.
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import logging
import os

import sseg  # noqa: F401
from pipelines.build_cache import build_pseudo_mask_cache, oracle_miou
from pipelines.runtime import init_ray, require_gpus
from schemas.configs import PseudoMaskJobConfig
from sseg.cli import job_parser, parse_job_config, run_job
from sseg.config import config_hash, flatten
from sseg.tracking import STAGE_TAG, LINEAGE_TAG, Tracker, emit_result, generated_run_name

log = logging.getLogger("jobs.pseudo_masks")


def run_name(cfg: PseudoMaskJobConfig) -> str:
    """The MLflow run name: tracking.run_name, else ``pseudo-masks-<generator>-<time>``."""
    return cfg.tracking.run_name or generated_run_name("pseudo-masks", cfg.pseudo_masks.generator)


def main(argv=None) -> int:
    args = job_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = parse_job_config(PseudoMaskJobConfig, args)
    if cfg.world is not None:
        from sseg.data.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.pool.gpus_per_actor, "pool.gpus_per_actor")
    tags = {STAGE_TAG: "pseudo_masks", "sseg.generator": cfg.pseudo_masks.generator}
    if cfg.tracking.parent_run_id:
        tags[LINEAGE_TAG] = cfg.tracking.parent_run_id
    if cfg.pseudo_masks.generator == "pixel":
        tags["sseg.note"] = "pixel K-Means baseline (Lab + xy), not DINO: no DINO checkpoint given"
        log.warning("pseudo masks from the pixel K-Means baseline (Lab + xy), not DINO features")
    tracker = Tracker(cfg.tracking.experiment, run_name=run_name(cfg), tags=tags)
    tracker.log_params(flatten(cfg))
    tracker.log_dict(cfg.model_dump(mode="json"), "config.json")
    try:
        result = build_pseudo_mask_cache(cfg, run_name=tracker.run_id or "cache")
        if cfg.labeled_split:
            result.update(oracle_miou(cfg))
        tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))})
        tracker.log_metrics({f"skipped.{k}": v for k, v in result["skipped"].items()})
        tracker.set_tags({"sseg.pseudo_mask_config_hash": config_hash(cfg.pseudo_masks)})
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    result["generator"] = cfg.pseudo_masks.generator
    result["mlflow_run_id"] = tracker.run_id
    emit_result(result)
    return 0


if __name__ == "__main__":
    run_job(main)
