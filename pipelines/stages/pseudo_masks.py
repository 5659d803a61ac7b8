"""The pseudo-mask stage as a Ray Data actor pool, and the Parquet cache it can be materialised to."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import ray
from PIL import Image

from sseg.data.shards import encode_jpeg


class PseudoMaskStage:
    """map_batches callable class: adds ``segments`` (uint8 [B,H,W], ids 0..K-1) to image batches.

    One generator (DINO + K-Means, or the pixel baseline) per actor, built once in the actor.
    """

    def __init__(self, config: dict):
        import sseg  # noqa: F401 - torchvision fix before timm in this worker process
        import torch

        from sseg.pseudo_masks.generator import PseudoMaskConfig, build_generator

        torch.set_num_threads(max(1, int(os.environ.get("SSEG_ACTOR_THREADS", "1"))))
        self.generator = build_generator(PseudoMaskConfig.model_validate(config))

    def __call__(self, batch: dict) -> dict:
        import torch

        images = batch["image"]
        if len(images) == 0:
            batch["segments"] = np.zeros(images.shape[:3], np.uint8)
            return batch
        with torch.no_grad():
            segments = self.generator(torch.as_tensor(np.ascontiguousarray(images)))
        batch["segments"] = segments.cpu().numpy().astype(np.uint8)
        return batch


def add_pseudo_masks(ds: ray.data.Dataset, pm_config, *, num_actors: int, gpus_per_actor: float,
                     batch_size: int) -> ray.data.Dataset:
    return ds.map_batches(
        PseudoMaskStage,
        fn_constructor_kwargs={"config": pm_config.model_dump(mode="json")},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors),
        num_gpus=gpus_per_actor,
        num_cpus=0 if gpus_per_actor else 1,
        batch_size=batch_size,
        batch_format="numpy",
    )


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# The cache's images: quality 95, 4:2:0 (the bytes the cache has always held; CACHE_FORMAT names them).
CACHE_JPEG_QUALITY = 95
CACHE_JPEG_SUBSAMPLING = 2


class EncodeCacheRows:
    """map_batches function: decoded sample + segments → rows of the pseudo-mask cache schema."""

    def __init__(self, generator_name: str, pm_config: dict, cache_key: str):
        self.generator_name = generator_name
        self.hash = cache_key  # the rows' config_hash column: the key of the cache they are written to
        self.num_segments = int(pm_config["num_segments"])

    def __call__(self, batch: dict) -> dict[str, Any]:
        n = len(batch["key"])
        return {
            "key": batch["key"], "shard": batch["shard"], "caption": batch["caption"],
            "words": np.array([str(w).split() for w in batch["words"]] + [None], dtype=object)[:n],
            "width": np.full(n, batch["image"].shape[2] if n else 0, np.int32),
            "height": np.full(n, batch["image"].shape[1] if n else 0, np.int32),
            "num_segments": np.full(n, self.num_segments, np.int16),
            "image": np.array([encode_jpeg(im, CACHE_JPEG_QUALITY, CACHE_JPEG_SUBSAMPLING)
                               for im in batch["image"]] + [None], dtype=object)[:n],
            "mask_png": np.array([encode_png(s) for s in batch["segments"]] + [None], dtype=object)[:n],
            "generator": np.full(n, self.generator_name, dtype=object),
            "config_hash": np.full(n, self.hash, dtype=object),
        }
