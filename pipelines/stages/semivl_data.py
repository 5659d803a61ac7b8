"""SemiVL's training data as one Ray dataset: every row carries one unlabelled image and one labelled
(image, mask) pair, both as UniMatch weak views (random rescale 0.5–2, pad, crop, flip).

One dataset with both kinds in a row (rather than two streams) keeps the generic loop unchanged: its
worker shard, equal batch counts and resume work as for any stage. The rows enumerate the unlabelled
set once per epoch; the labelled set is cycled over them in a seeded order (SemiVL / UniMatch repeat the
labelled set to the unlabelled set's length the same way). When the labelled set is the larger one (a
fully supervised reference), the rows enumerate it instead and the unlabelled images are cycled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import zlib

import numpy as np
import ray

from pipelines.stages.train_data import _execution_index


def resolve_paths(reader, ids: Sequence[str], labeled: bool = True) -> tuple[list[str], list[str]]:
    """(image paths, label paths) of ``ids``; ``labeled``: every label file must exist (the pool reader
    does not require labels of unlabelled images)."""
    from sseg.data.readers.base import check_files_exist
    from sseg.errors import DataError

    if not hasattr(reader, "image_paths") or not hasattr(reader, "label_paths"):
        raise DataError(f"SemiVL reads images and label PNGs from files; the {type(reader).__name__} reader "
                        "has no per-image files")
    index = {k: i for i, k in enumerate(reader.keys)}
    images = [Path(reader.image_paths[index[i]]) for i in ids]
    labels = [Path(reader.label_paths[index[i]]) for i in ids]
    if labeled:
        check_files_exist(labels, "label file of a labelled image")
    return [str(p.resolve()) for p in images], [str(p.resolve()) for p in labels]


def weak_views(batch: dict, crop: int, scale: tuple[float, float], num_classes: int,
               seed: int | None = None, label_transform=None, img_scale: tuple[int, int] | None = None) -> dict:
    """Ray Data map: paths → uint8 weak views (``image_l``, ``label_l``, ``image_u``, ``ignore_u``).
    Fresh views on every pass (an epoch sees new views). With a seed, the views of a row come from
    (seed, row index, epoch), so a rerun with the same seed sees the same views; None: random.
    ``label_transform``: the dataset reader's map from the label files' ids to class ids (Cityscapes'
    labelIds → train ids, ADE20K's reduce-zero-label), applied before out-of-range ids become ignore.
    ``img_scale``: the rescale's reference size (sseg.semivl.augment.rescaled_shape)."""
    from sseg.data.readers.base import clean_label, read_image, read_label
    from sseg.semivl.augment import weak_view

    epoch = _execution_index() if seed is not None else 0
    free_rng = np.random.default_rng()
    out = {"image_l": [], "label_l": [], "image_u": [], "ignore_u": []}
    for row, lpath, mpath, upath in zip(batch["row"], batch["image_l"], batch["label_l"], batch["image_u"]):
        rng = free_rng if seed is None else np.random.default_rng([int(row), epoch, seed])
        label = read_label(Path(mpath))
        label = clean_label(label_transform(label) if label_transform is not None else label, num_classes)
        img, lab = weak_view(read_image(Path(lpath)), label, crop, rng, scale, img_scale)
        out["image_l"].append(img)
        out["label_l"].append(lab)
        img, ign = weak_view(read_image(Path(upath)), None, crop, rng, scale, img_scale)
        out["image_u"].append(img)
        out["ignore_u"].append(ign)
    return {k: np.stack(v) for k, v in out.items()}


def pair_rows(labeled: tuple[list[str], list[str]], unlabeled: list[str], seed: int) -> list[dict]:
    """One row per image of the larger set; the smaller set is cycled over them (the labelled set in a
    seeded order)."""
    images_l, labels_l = labeled
    n = max(len(images_l), len(unlabeled))
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(images_l)), n))
    unlabeled_cycled = [unlabeled[i % len(unlabeled)] for i in range(n)]
    return [{"row": i, "image_l": images_l[j], "label_l": labels_l[j], "image_u": u}
            for i, (j, u) in enumerate(zip(order, unlabeled_cycled))]


def semivl_dataset(labeled: tuple[list[str], list[str]], unlabeled: list[str], *, crop: int,
                   scale: tuple[float, float], num_classes: int, seed: int,
                   deterministic: bool = True, label_transform=None,
                   img_scale: tuple[int, int] | None = None) -> ray.data.Dataset:
    """``labeled`` = (image paths, label paths); ``unlabeled`` = image paths. ``deterministic``: every
    view follows from ``seed`` (the trainer must also preserve the row order: LoopSettings.data_seed).
    ``label_transform``: the reader's (a module-level function: it travels to the Ray Data workers)."""
    rows = pair_rows(labeled, unlabeled, seed)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(8, len(rows) // 64)))
    return ds.map_batches(weak_views, fn_kwargs=dict(crop=crop, scale=tuple(scale), num_classes=num_classes,
                                                     seed=seed if deterministic else None,
                                                     label_transform=label_transform,
                                                     img_scale=tuple(img_scale) if img_scale else None),
                          batch_size=64, batch_format="numpy")
