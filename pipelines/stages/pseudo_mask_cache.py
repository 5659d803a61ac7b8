"""Building the pseudo-mask cache: shards → decode → pseudo-mask actor pool → one Parquet file per shard."""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import numpy as np

from pipelines.io import stats
from pipelines.io.cache import PseudoMaskCache, shard_id
from pipelines.stages.pseudo_masks import EncodeCacheRows, add_pseudo_masks
from pipelines.io.shards import DecodeSamples, read_shards, resolve_shards
from schemas.configs import PseudoMaskJobConfig

log = logging.getLogger(__name__)


def build_pseudo_mask_cache(cfg: PseudoMaskJobConfig, run_name: str = "cache") -> dict:
    """Process every unfinished shard; returns counts, skips by reason and images/s."""
    pm_config = cfg.pseudo_masks.model_dump(mode="json")
    cache = PseudoMaskCache.for_config(cfg.cache_dir, cfg.pseudo_masks, cfg.data.image_size)
    shards = resolve_shards(cfg.data.shards)
    todo = [s for s in shards if not cache.is_done(s)]
    log.info("%d shards, %d already in the cache, %d to process", len(shards), len(shards) - len(todo),
             len(todo))
    counter = stats.make_counter(run_name) if todo else None
    written = 0
    started = time.perf_counter()
    for start in range(0, len(todo), cfg.shards_per_pass):
        group = todo[start:start + cfg.shards_per_pass]
        ds = read_shards(group, concurrency=cfg.data.read_concurrency)
        ds = ds.map_batches(DecodeSamples(size=cfg.data.image_size, mode="cache", counter=counter),
                            batch_size=cfg.data.decode_batch_size, batch_format="numpy",
            compute=_decode_compute())
        ds = add_pseudo_masks(ds, cfg.pseudo_masks, num_actors=cfg.pool.num_actors,
                              gpus_per_actor=cfg.pool.gpus_per_actor, batch_size=cfg.pool.batch_size)
        ds = ds.map_batches(EncodeCacheRows(cfg.pseudo_masks.generator, pm_config, cache.config_hash),
                            batch_size=cfg.pool.batch_size, batch_format="numpy", compute=_decode_compute())
        rows_by_shard: dict[str, list[dict]] = defaultdict(list)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                rows_by_shard[row["shard"]].append(row)
        for shard in group:
            written += cache.write_shard(shard, rows_by_shard.pop(shard_id(shard), []))
        log.info("cache: %d/%d shards done, %d samples written", start + len(group), len(todo), written)
    elapsed = time.perf_counter() - started
    skipped = stats.fetch(counter)
    return {
        "shards_total": len(shards), "shards_processed": len(todo), "samples": written,
        "skipped": skipped, "skipped_total": int(sum(skipped.values())),
        "images_per_s": written / elapsed if written else 0.0, "seconds": elapsed,
        "cache_rows": cache.num_rows(), "cache_dir": str(cache.root), "cache_key": cache.config_hash,
    }


def _decode_compute():
    import ray

    return ray.data.TaskPoolStrategy()


def oracle_miou(cfg: PseudoMaskJobConfig) -> dict:
    """Paper Table 1 protocol on a labelled VOC-layout split: each segment takes its majority label."""
    import torch

    from sseg.data.datasets import VOCSegmentation
    from sseg.data.transforms import center_square, center_square_labels
    from sseg.pseudo_masks.generator import build_generator
    from sseg.pseudo_masks.oracle import OracleMIoU

    dataset = VOCSegmentation(cfg.labeled_split, split="val")
    generator = build_generator(cfg.pseudo_masks)
    metric = OracleMIoU(len(dataset.class_names))
    count = min(len(dataset), cfg.oracle_max_images)
    size = cfg.data.image_size
    batch_images, batch_labels = [], []
    for i in range(count):
        _, image, label = dataset[i]
        batch_images.append(center_square(image, size))
        batch_labels.append(center_square_labels(np.asarray(label, np.uint8), size))
        if len(batch_images) == cfg.pool.batch_size or i == count - 1:
            with torch.no_grad():
                segments = generator(torch.as_tensor(np.stack(batch_images))).cpu().numpy()
            for seg, gt in zip(segments, batch_labels):
                metric.update(seg, gt)
            batch_images, batch_labels = [], []
    result = metric.compute()
    return {"oracle_miou": float(result["miou"]), "oracle_images": count}
