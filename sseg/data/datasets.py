"""Labelled evaluation datasets behind one name → reader switch.

Every reader follows :class:`SegmentationDataset`: ``class_names``, ``background_index``,
``ignore_index`` (255), ``keys``, ``len()`` and ``ds[i] -> (key, image uint8 [H,W,3],
label uint8 [H,W])``. The layouts each reader expects are described in its module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from sseg.data.readers.base import IGNORE_INDEX, SegmentationDataset
from sseg.data.readers.class_names import CLASS_NAMES
from sseg.data.readers.coco import COCOObject
from sseg.data.readers.coco_stuff import COCOStuff
from sseg.data.readers.scenes import ADE20K, Cityscapes
from sseg.data.readers.voc import PascalContext, VOCSegmentation
from sseg.errors import DataError

DatasetName = Literal["voc", "context", "coco_object", "coco_stuff", "ade20k", "cityscapes", "world"]
DATASET_NAMES: tuple[str, ...] = get_args(DatasetName)

# GroupViT's evaluation protocol (configs/_base_/datasets): background threshold per dataset.
GROUPVIT_BG_THRESHOLDS: dict[str, float] = {"voc": 0.95, "context": 0.35, "coco_object": 0.95}


def build_dataset(name: DatasetName, root: str | Path, split: str = "val",
                  require_labels: bool = True) -> SegmentationDataset:
    """The reader for dataset ``name`` on the files under ``root``.

    "world" is the procedural world's VOC-layout export (its own class_names.txt, no
    background class). ``require_labels=False``: the VOC-layout readers accept images without a
    label file (a semi-supervised pool); the other readers list only labelled images anyway.
    """
    readers = {
        "voc": VOCSegmentation,
        "world": VOCSegmentation,
        "context": PascalContext,
        "coco_object": COCOObject,
        "coco_stuff": COCOStuff,
        "ade20k": ADE20K,
        "cityscapes": Cityscapes,
    }
    if name not in readers:
        raise DataError(f"unknown dataset '{name}' (known: {', '.join(DATASET_NAMES)})")
    if name == "world" and not (Path(root) / "class_names.txt").is_file():
        raise DataError(f"world dataset needs {Path(root) / 'class_names.txt'}")
    if name in ("voc", "world"):
        return readers[name](root, split, require_labels=require_labels)
    return readers[name](root, split)


__all__ = [
    "ADE20K", "CLASS_NAMES", "COCOObject", "COCOStuff", "Cityscapes", "DATASET_NAMES", "DatasetName",
    "GROUPVIT_BG_THRESHOLDS", "IGNORE_INDEX", "PascalContext", "SegmentationDataset",
    "VOCSegmentation", "build_dataset",
]
