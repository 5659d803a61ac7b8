"""SemiVL's training data as one Ray dataset: every row carries one unlabelled image and one labelled
(image, mask) pair, both as UniMatch weak views (random rescale 0.5–2, pad, crop, flip).

One dataset with both kinds in a row (rather than two streams) keeps the generic loop unchanged: its
worker shard, equal batch counts and resume work as for any stage. The rows enumerate the unlabelled
set once per epoch; the labelled set is cycled over them in a seeded order (SemiVL / UniMatch repeat the
labelled set to the unlabelled set's length the same way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import ray


def resolve_paths(reader, ids: Sequence[str]) -> tuple[list[str], list[str]]:
    index = {k: i for i, k in enumerate(reader.keys)}
    return ([str(Path(reader.image_paths[index[i]]).resolve()) for i in ids],
            [str(Path(reader.label_paths[index[i]]).resolve()) for i in ids])


def weak_views(batch: dict, crop: int, scale: tuple[float, float], num_classes: int) -> dict:
    """Ray Data map: paths → uint8 weak views (``image_l``, ``label_l``, ``image_u``, ``ignore_u``).
    Fresh randomness on every pass (an epoch sees new views)."""
    from sseg.data.readers.base import clean_label, read_image, read_label
    from sseg.semivl.augment import weak_view

    rng = np.random.default_rng()
    out = {"image_l": [], "label_l": [], "image_u": [], "ignore_u": []}
    for lpath, mpath, upath in zip(batch["image_l"], batch["label_l"], batch["image_u"]):
        label = clean_label(read_label(Path(mpath)), num_classes)
        img, lab = weak_view(read_image(Path(lpath)), label, crop, rng, scale)
        out["image_l"].append(img)
        out["label_l"].append(lab)
        img, ign = weak_view(read_image(Path(upath)), None, crop, rng, scale)
        out["image_u"].append(img)
        out["ignore_u"].append(ign)
    return {k: np.stack(v) for k, v in out.items()}


def semivl_dataset(labeled: tuple[list[str], list[str]], unlabeled: list[str], *, crop: int,
                   scale: tuple[float, float], num_classes: int, seed: int) -> ray.data.Dataset:
    """``labeled`` = (image paths, label paths); ``unlabeled`` = image paths."""
    images_l, labels_l = labeled
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(images_l)), len(unlabeled)))
    rows = [{"image_l": images_l[j], "label_l": labels_l[j], "image_u": u} for j, u in zip(order, unlabeled)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(8, len(rows) // 64)))
    return ds.map_batches(weak_views, fn_kwargs=dict(crop=crop, scale=tuple(scale), num_classes=num_classes),
                          batch_size=64, batch_format="numpy")
