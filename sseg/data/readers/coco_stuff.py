"""COCO-Stuff 164k: 171 classes (80 things + 91 stuff), no background class, 255 = unlabelled.

Layout (mmseg's ``coco_stuff164k``)::

    root/images/{train2017,val2017}/<key>.jpg
    root/annotations/{train2017,val2017}/<key>_labelTrainIds.png    train ids 0..170, 255 ignored
    root/annotations/{train2017,val2017}/<key>.png                   or the released stuffthingmaps

A ``_labelTrainIds.png`` (mmseg's converter output) is read as it is; otherwise the released
``stuffthingmaps_trainval2017`` PNG (pixel = COCO category id - 1, 0..181, 255 unlabelled) is mapped to
the 171 train ids here, with the table of mmseg's ``tools/dataset_converters/coco_stuff164k.py``: the
11 category ids COCO never annotates (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91) are dropped and the
others are numbered in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sseg.data.readers.base import IGNORE_INDEX, FileListDataset, require_dir
from sseg.data.readers.class_names import COCO_STUFF_CLASSES
from sseg.errors import DataError

# pixel values (category id - 1) of the stuffthingmaps that COCO never uses
UNUSED_RAW_VALUES: frozenset[int] = frozenset({11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90})
TRAIN_ID_SUFFIX = "_labelTrainIds.png"


def _raw_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    used = [v for v in range(182) if v not in UNUSED_RAW_VALUES]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


RAW_TO_TRAIN_ID = _raw_lut()


def stuffthing_to_train_ids(label: np.ndarray) -> np.ndarray:
    """A released stuffthingmaps label (category id - 1, 255 unlabelled) -> train ids 0..170 / 255."""
    return RAW_TO_TRAIN_ID[np.asarray(label).astype(np.int64)]


class COCOStuff(FileListDataset):
    """COCO-Stuff 164k (171 classes, no background class)."""

    def __init__(self, root: str | Path, split: str = "val") -> None:
        root = require_dir(Path(root), "dataset root")
        sub = {"train": "train2017", "val": "val2017"}.get(split, split)
        if sub not in ("train2017", "val2017"):
            raise DataError(f"COCO-Stuff split must be train or val (got {split!r})")
        image_dir = require_dir(root / "images" / sub, "COCO-Stuff image")
        label_dir = require_dir(root / "annotations" / sub, "COCO-Stuff annotation")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise DataError(f"no images in {image_dir}")
        converted = (label_dir / f"{images[0].stem}{TRAIN_ID_SUFFIX}").is_file()
        suffix = TRAIN_ID_SUFFIX if converted else ".png"
        super().__init__(
            class_names=list(COCO_STUFF_CLASSES),
            background_index=None,
            image_paths=images,
            label_paths=[label_dir / f"{p.stem}{suffix}" for p in images],
            sample_keys=[p.stem for p in images],
            label_transform=None if converted else stuffthing_to_train_ids,
        )


assert len(COCO_STUFF_CLASSES) == 171 and int((RAW_TO_TRAIN_ID != IGNORE_INDEX).sum()) == 171
