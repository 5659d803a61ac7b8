"""TagCLIP's training data: labelled (image, label) pairs of a dataset's train split as random views (random
rescale 0.5-2, pad — label padded with the ignore index —, crop, horizontal flip) in a Ray dataset.

Labels stay in the dataset's class ids (255 = void / padding): the step masks unseen classes and builds the
trusty target, so the unseen pixels are kept (inductive setting: images are not dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import ray

from pipelines.io.ray_private import execution_index


def labelled_paths(reader) -> tuple[list[str], list[str]]:
    """(image paths, label paths) of every sample of a file-list reader."""
    from sseg.errors import DataError

    if not hasattr(reader, "image_paths") or not hasattr(reader, "label_paths"):
        raise DataError(f"TagCLIP reads images and label PNGs from files; the {type(reader).__name__} reader "
                        "has no per-image files")
    return ([str(Path(p).resolve()) for p in reader.image_paths],
            [str(Path(p).resolve()) for p in reader.label_paths])


def labelled_views(batch: dict, crop: int, scale: tuple[float, float], num_classes: int,
                   label_transform=None, seed: int | None = None) -> dict:
    """Ray Data map: paths -> {"image" uint8 [B, crop, crop, 3], "label" uint8 [B, crop, crop]}. With a seed
    the view of a row follows from (seed, row, epoch); None: random."""
    from sseg.data.readers.base import clean_label, read_image, read_label
    from sseg.semivl.augment import weak_view

    epoch = execution_index() if seed is not None else 0
    free_rng = np.random.default_rng()
    images, labels = [], []
    for row, image_path, label_path in zip(batch["row"], batch["image"], batch["label"]):
        rng = free_rng if seed is None else np.random.default_rng([int(row), epoch, seed])
        label = read_label(Path(label_path))
        if label_transform is not None:
            label = label_transform(label)
        image, label = weak_view(read_image(Path(image_path)), clean_label(label, num_classes), crop, rng, scale)
        images.append(image)
        labels.append(label)
    return {"image": np.stack(images), "label": np.stack(labels)}


def tagclip_dataset(images: Sequence[str], labels: Sequence[str], *, crop: int, scale: tuple[float, float],
                    num_classes: int, seed: int, label_transform=None, deterministic: bool = True) -> ray.data.Dataset:
    """One row per labelled image, in a seeded order; ``deterministic``: every view follows from ``seed``
    (the trainer must also keep the row order)."""
    order = np.random.default_rng(seed).permutation(len(images))
    rows = [{"row": int(i), "image": images[j], "label": labels[j]} for i, j in enumerate(order)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(8, len(rows) // 64)))
    return ds.map_batches(labelled_views, fn_kwargs=dict(crop=crop, scale=tuple(scale), num_classes=num_classes,
                                                         label_transform=label_transform,
                                                         seed=seed if deterministic else None),
                          batch_size=64, batch_format="numpy")
