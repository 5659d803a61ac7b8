"""Training data for S-Seg: (image, pseudo-mask segments, caption) batches as a Ray Dataset.

Two sources: the Parquet pseudo-mask cache (images and masks cropped together on CPU tasks), or the
shards streamed through decode → pseudo-mask actor pool (masks computed on the training crop).
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pyarrow.parquet as pq
import ray
from PIL import Image

from sseg.data.transforms import random_resized_crop

TRAIN_COLUMNS = ("image", "segments", "caption")


def _execution_index() -> int:
    """How many times this dataset has been executed before (Ray Data counts executions in the
    DataContext that travels with every task; its own seeded random ops use the same counter): one
    per training epoch."""
    from pipelines.io.ray_private import execution_index

    return execution_index()


class CropCachedSamples:
    """map_batches function: cache rows → same random-resized crop of image and mask, flipped together.

    With a seed, each row's crop comes from (seed, row key, epoch): a rerun with the same seed crops
    every sample as before, and each epoch crops it anew. Without one, crops are random."""

    def __init__(self, size: int, crop_scale: tuple[float, float], text: str = "words",
                 seed: int | None = None):
        self.size = size
        self.text = text
        self.crop_scale = tuple(crop_scale)
        self.seed = seed
        self.rng = np.random.default_rng()

    def _row_rng(self, key, epoch: int) -> np.random.Generator:
        if self.seed is None:
            return self.rng
        return np.random.default_rng([zlib.crc32(str(key).encode()), epoch, self.seed])

    def __call__(self, batch: dict) -> dict:
        images, segments = [], []
        epoch = _execution_index() if self.seed is not None else 0
        keys = batch["key"] if "key" in batch else [None] * len(batch["image"])
        if self.seed is not None and "key" not in batch:
            raise ValueError("seeded crops need the cache's 'key' column")
        for key, image_bytes, mask_bytes in zip(keys, batch["image"], batch["mask_png"]):
            image = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
            mask = np.asarray(Image.open(io.BytesIO(mask_bytes)))
            image, mask = random_resized_crop(image, self.size, self._row_rng(key, epoch), labels=mask,
                                              scale=self.crop_scale)
            images.append(image)
            segments.append(mask)
        n = len(images)
        return {
            "image": np.stack(images) if n else np.zeros((0, self.size, self.size, 3), np.uint8),
            "segments": np.stack(segments) if n else np.zeros((0, self.size, self.size), np.uint8),
            "caption": training_text(batch, self.text),
        }


def training_text(batch: dict, text: str) -> np.ndarray:
    """The text each image is paired with: its nouns+verbs ("words") or the caption itself; the caption
    stands in when no word survives the filter."""
    if text == "caption":
        return np.asarray(batch["caption"], dtype=object)
    out = []
    for words, caption in zip(batch["words"], batch["caption"]):
        words = list(words) if not isinstance(words, str) else words.split()
        if not words:
            out.append(str(caption))
        else:
            out.append(" ".join(words))
    return np.asarray(out, dtype=object)


def cache_dataset(files: list[str], size: int, crop_scale: tuple[float, float], text: str = "words",
                  batch_size: int = 64, seed: int | None = None) -> ray.data.Dataset:
    """Cache rows → training samples. ``seed``: the file order of every epoch and every crop follow from
    it (the trainer must also preserve the row order: LoopSettings.data_seed); None: random."""
    shuffle = ray.data.FileShuffleConfig(seed=seed) if seed is not None else "files"
    ds = ray.data.read_parquet(files, shuffle=shuffle).select_columns(["key", "image", "mask_png", "caption",
                                                                       "words"])
    return ds.map_batches(CropCachedSamples(size, crop_scale, text, seed=seed), batch_size=batch_size,
                          batch_format="numpy", compute=ray.data.TaskPoolStrategy())


def count_cache_rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def stream_dataset(shards: list[str], size: int, crop_scale, pm_config, *, num_actors: int,
                   gpus_per_actor: float, batch_size: int, text: str = "words", counter=None) -> ray.data.Dataset:
    from pipelines.stages.pseudo_masks import add_pseudo_masks
    from pipelines.io.shards import DecodeSamples, read_shards

    ds = read_shards(shards, shuffle_files=True)
    ds = ds.map_batches(DecodeSamples(size, "train", crop_scale, counter), batch_size=batch_size, batch_format="numpy", compute=ray.data.TaskPoolStrategy())
    ds = add_pseudo_masks(ds, pm_config, num_actors=num_actors, gpus_per_actor=gpus_per_actor,
                          batch_size=batch_size)
    ds = ds.map_batches(lambda b: {**b, "caption": training_text(b, text)}, batch_format="numpy")
    return ds.select_columns(list(TRAIN_COLUMNS))
