"""S-Seg+ training data: the pseudo-label cache → (image, label) crops as a Ray Dataset.

Pixels whose pseudo-label confidence is below the threshold become the ignore index (255) before the crop;
image and label get the same augmentation (``sseg.data.transforms``): a random resized crop and horizontal
flip (``augment="random_resized_crop"``, the demo), or mmseg's pipeline as BEiT/MAE's UperNet trains
(``augment="mmseg"``: resize by a ratio of ``resize_scale``, crop with ``cat_max_ratio``, flip, photometric
distortion, pad; the paper configs).
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow.parquet as pq
import ray

from pipelines.io.ray_private import execution_index
from pipelines.stages.pseudo_labels import decode_png
from sseg.data.transforms import mmseg_train_view, random_resized_crop
from sseg.models.upernet import IGNORE_INDEX


class CropPseudoLabels:
    """map_batches: cache rows → {"image" uint8 [B,S,S,3], "label" uint8 [B,S,S]} (255 = ignored).

    With a seed, each row's crop and flip come from (seed, row key, epoch): a rerun with the same seed sees
    the same crops, each epoch new ones. Without one, they are random."""

    def __init__(self, size: int, crop_scale: tuple[float, float], threshold: float, hflip: bool = True,
                 seed: int | None = None, augment: str = "random_resized_crop",
                 resize_scale: tuple[int, int] = (2048, 512), ratio_range: tuple[float, float] = (0.5, 2.0),
                 cat_max_ratio: float = 0.75):
        if augment not in ("random_resized_crop", "mmseg"):
            raise ValueError(f"augment must be 'random_resized_crop' or 'mmseg', got {augment!r}")
        self.augment = augment
        self.mmseg = dict(scale=tuple(resize_scale), ratio_range=tuple(ratio_range), cat_max_ratio=cat_max_ratio)
        self.size = size
        self.crop_scale = tuple(crop_scale)
        self.threshold_u8 = int(np.ceil(threshold * 255 - 1e-9))
        self.hflip = hflip
        self.seed = seed
        self.rng = np.random.default_rng()

    def __call__(self, batch: dict) -> dict:
        images, labels = [], []
        epoch = execution_index() if self.seed is not None else 0
        for key, image_png, label_png, confidence_png in zip(batch["key"], batch["image"], batch["label_png"],
                                                              batch["confidence_png"]):
            rng = self.rng if self.seed is None else np.random.default_rng(
                [zlib.crc32(str(key).encode()), epoch, self.seed])
            image = decode_png(image_png)
            label = decode_png(label_png).copy()
            label[decode_png(confidence_png) < self.threshold_u8] = IGNORE_INDEX
            if self.augment == "mmseg":
                image, label = mmseg_train_view(image, label, self.size, rng, hflip=self.hflip,
                                                ignore_index=IGNORE_INDEX, **self.mmseg)
            else:
                image, label = random_resized_crop(image, self.size, rng, labels=label, scale=self.crop_scale,
                                                   hflip=self.hflip)
            images.append(image)
            labels.append(label)
        n = len(images)
        return {"image": np.stack(images) if n else np.zeros((0, self.size, self.size, 3), np.uint8),
                "label": np.stack(labels) if n else np.zeros((0, self.size, self.size), np.uint8)}


def self_train_dataset(files: list[str], size: int, crop_scale: tuple[float, float], threshold: float,
                       hflip: bool = True, batch_size: int = 64, seed: int | None = None,
                       augment: str = "random_resized_crop", resize_scale: tuple[int, int] = (2048, 512),
                       ratio_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float = 0.75) -> ray.data.Dataset:
    """``seed``: the file order of every epoch and every crop follow from it (the trainer must also preserve
    the row order: LoopSettings.data_seed); None: random. ``augment`` and the rest: :class:`CropPseudoLabels`."""
    shuffle = ray.data.FileShuffleConfig(seed=seed) if seed is not None else "files"
    ds = ray.data.read_parquet(files, shuffle=shuffle).select_columns(["key", "image", "label_png",
                                                                       "confidence_png"])
    crop = CropPseudoLabels(size, crop_scale, threshold, hflip, seed, augment, resize_scale, ratio_range,
                            cat_max_ratio)
    return ds.map_batches(crop, batch_size=batch_size,
                          batch_format="numpy", compute=ray.data.TaskPoolStrategy())


def count_rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
