"""The pseudo-mask stage as a Ray Data actor pool, and the Parquet cache it can be materialised to."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import ray
from PIL import Image

from sseg.config import config_hash


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


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class EncodeCacheRows:
    """map_batches function: decoded sample + segments → rows of the pseudo-mask cache schema."""

    def __init__(self, generator_name: str, pm_config: dict):
        self.generator_name = generator_name
        self.hash = config_hash(pm_config)
        self.num_segments = int(pm_config["num_segments"])

    def __call__(self, batch: dict) -> dict[str, Any]:
        n = len(batch["key"])
        return {
            "key": batch["key"], "shard": batch["shard"], "caption": batch["caption"],
            "words": np.array([str(w).split() for w in batch["words"]] + [None], dtype=object)[:n],
            "width": np.full(n, batch["image"].shape[2] if n else 0, np.int32),
            "height": np.full(n, batch["image"].shape[1] if n else 0, np.int32),
            "num_segments": np.full(n, self.num_segments, np.int16),
            "image": np.array([encode_jpeg(im) for im in batch["image"]] + [None], dtype=object)[:n],
            "mask_png": np.array([encode_png(s) for s in batch["segments"]] + [None], dtype=object)[:n],
            "generator": np.full(n, self.generator_name, dtype=object),
            "config_hash": np.full(n, self.hash, dtype=object),
        }
