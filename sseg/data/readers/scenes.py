"""ADE20K (SceneParsing, 150 classes) and Cityscapes (19 train ids) readers.

ADE20K::

    root/ADEChallengeData2016/images/{training,validation}/<key>.jpg
    root/ADEChallengeData2016/annotations/{training,validation}/<key>.png

Labels are "reduce-zero-label": 0 ("other") → 255, k → k - 1.

Cityscapes::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Label ids map to the 19 train ids with the cityscapesScripts table; all others → 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sseg.data.readers.base import IGNORE_INDEX, FileListDataset, require_dir
from sseg.data.readers.class_names import (ADE20K_CLASSES, CITYSCAPES_CLASSES,
                                           CITYSCAPES_ID_TO_TRAIN_ID)
from sseg.errors import DataError

ADE_SPLIT_DIRS = {"train": "training", "training": "training", "val": "validation",
                  "validation": "validation"}


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """0 → 255 (ignored), k → k - 1 (mmseg's ``reduce_zero_label``)."""
    shifted = label.astype(np.int32) - 1
    shifted[shifted < 0] = IGNORE_INDEX
    return shifted


def _cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


CITYSCAPES_LUT = _cityscapes_lut()


def cityscapes_ids_to_train_ids(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise DataError("Cityscapes label ids must lie in 0..255")
    return CITYSCAPES_LUT[label.astype(np.int64)]


class ADE20K(FileListDataset):
    """ADE20K SceneParsing: 150 classes, no background class, 0 = ignored."""

    def __init__(self, root: str | Path, split: str = "val") -> None:
        root = require_dir(Path(root), "dataset root")
        base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
        if split not in ADE_SPLIT_DIRS:
            raise DataError(f"ADE20K split must be one of {', '.join(ADE_SPLIT_DIRS)} (got {split!r})")
        sub = ADE_SPLIT_DIRS[split]
        image_dir = require_dir(base / "images" / sub, "ADE20K image")
        label_dir = require_dir(base / "annotations" / sub, "ADE20K annotation")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise DataError(f"no images in {image_dir}")
        super().__init__(
            class_names=list(ADE20K_CLASSES),
            background_index=None,
            image_paths=images,
            label_paths=[label_dir / f"{p.stem}.png" for p in images],
            sample_keys=[p.stem for p in images],
            label_transform=reduce_zero_label,
        )


class Cityscapes(FileListDataset):
    """Cityscapes fine annotations, 19 evaluated classes, no background class."""

    IMAGE_SUFFIX = "_leftImg8bit.png"
    LABEL_SUFFIX = "_gtFine_labelIds.png"

    def __init__(self, root: str | Path, split: str = "val") -> None:
        root = require_dir(Path(root), "dataset root")
        image_root = require_dir(root / "leftImg8bit" / split, "Cityscapes image")
        label_root = require_dir(root / "gtFine" / split, "Cityscapes annotation")
        images = sorted(image_root.glob(f"*/*{self.IMAGE_SUFFIX}"))
        if not images:
            raise DataError(f"no *{self.IMAGE_SUFFIX} images under {image_root}")
        stems = [p.name[: -len(self.IMAGE_SUFFIX)] for p in images]
        super().__init__(
            class_names=list(CITYSCAPES_CLASSES),
            background_index=None,
            image_paths=images,
            label_paths=[label_root / p.parent.name / f"{s}{self.LABEL_SUFFIX}"
                         for p, s in zip(images, stems)],
            sample_keys=[f"{p.parent.name}/{s}" for p, s in zip(images, stems)],
            label_transform=cityscapes_ids_to_train_ids,
        )
