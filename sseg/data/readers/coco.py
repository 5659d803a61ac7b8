"""COCO-Object: semantic label maps (80 things + background) built from instance annotations.

Layout (standard COCO 2017)::

    root/annotations/instances_<split>2017.json
    root/<split>2017/<file_name>            (or root/images/<split>2017/<file_name>)

Label ids: COCO category ids (1..90 with gaps) map to 1..80 in id order, 0 = background (every
pixel no instance covers). As in GroupViT's COCO-Object, all instances of a class merge into
one region, and crowd regions count as their class.

Overlapping instances: instances are painted from the largest area to the smallest, so where
two instances overlap the smaller one wins. Small objects usually lie in front of large ones
(a cup on a dining table), and this keeps them visible. Pixels are never ignored (no 255).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sseg.data.readers.base import IGNORE_INDEX, Sample, check_files_exist, read_image
from sseg.data.readers.class_names import COCO_OBJECT_CLASSES, COCO_THING_IDS
from sseg.errors import DataError

CATEGORY_TO_LABEL: dict[int, int] = {cat: i + 1 for i, cat in enumerate(COCO_THING_IDS)}


def _mask_api() -> Any:
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise DataError("the COCO-Object reader needs pycocotools (pip install pycocotools)") from None
    return mask_api


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One annotation's ``segmentation`` (polygons, RLE or compressed RLE) → bool [H, W]."""
    mask_api = _mask_api()
    if isinstance(segmentation, list):  # polygons: one RLE per polygon, merged
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_api.merge(mask_api.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_api.frPyObjects(segmentation, height, width)  # uncompressed RLE
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise DataError(f"unsupported COCO segmentation of type {type(segmentation).__name__}")
    with warnings.catch_warnings():  # pycocotools' own NumPy-2 copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_api.decode(rle).astype(bool)


def instances_to_label(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """Paint instances (largest first) into a uint8 label map with 0 = background."""
    label = np.zeros((height, width), dtype=np.uint8)
    painted = []
    for ann in annotations:
        category = int(ann["category_id"])
        if category not in CATEGORY_TO_LABEL:
            raise DataError(f"unknown COCO category id {category} in annotation {ann.get('id')}")
        mask = annotation_mask(ann["segmentation"], height, width)
        painted.append((int(mask.sum()), CATEGORY_TO_LABEL[category], mask))
    # stable sort: equal areas keep annotation order (the later one wins)
    for _, class_id, mask in sorted(painted, key=lambda item: -item[0]):
        label[mask] = class_id
    return label


@dataclass
class _ImageRecord:
    key: str
    path: Path
    height: int
    width: int
    annotations: list[dict]


class COCOObject:
    """COCO-Object val (or train) from ``instances_<split>2017.json``."""

    ignore_index: int = IGNORE_INDEX

    def __init__(self, root: str | Path, split: str = "val") -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"dataset root directory not found: {root}")
        ann_file = root / "annotations" / f"instances_{split}2017.json"
        if not ann_file.is_file():
            raise DataError(f"COCO annotation file not found: {ann_file}")
        image_dir = next((d for d in (root / f"{split}2017", root / "images" / f"{split}2017")
                          if d.is_dir()), None)
        if image_dir is None:
            raise DataError(f"COCO image directory not found: {root / f'{split}2017'}")
        try:
            data = json.loads(ann_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{ann_file} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "images" not in data:
            raise DataError(f"{ann_file} has no 'images' list")
        by_image: dict[int, list[dict]] = {}
        for ann in data.get("annotations", []):
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.records = [
            _ImageRecord(key=Path(img["file_name"]).stem, path=image_dir / img["file_name"],
                         height=int(img["height"]), width=int(img["width"]),
                         annotations=by_image.get(int(img["id"]), []))
            for img in sorted(data["images"], key=lambda im: int(im["id"]))
        ]
        if not self.records:
            raise DataError(f"{ann_file} lists no images")
        check_files_exist([r.path for r in self.records], "image file")
        _mask_api()  # fail at construction, not on the first sample
        self.class_names = list(COCO_OBJECT_CLASSES)
        self.background_index: int | None = 0

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.records]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        record = self.records[index]
        image = read_image(record.path)
        if image.shape[:2] != (record.height, record.width):
            raise DataError(f"{record.path} is {image.shape[1]}x{image.shape[0]} but the "
                            f"annotations say {record.width}x{record.height}")
        return record.key, image, instances_to_label(record.annotations, record.height, record.width)
