"""The masks of one split as arrays (one row per mask), and their scores.

Besides the embedding, each mask keeps two ground-truth count vectors:

* ``gt_counts [N, C]``: the labelled pixels of each class *inside* the mask — its class proportions (full
  supervision) and its majority class (mask F1);
* ``owned_counts [N, C]``: the labelled pixels the mask *paints* under ``sseg.tuss.paint``'s rule (where
  masks overlap the smallest wins; a pixel no mask covers goes to the nearest covered pixel's mask).

The owner of every pixel does not depend on the classes, so the pixel confusion matrix of any mask
classification is ``owned_countsᵀ · onehot(classes)``: mIoU is exact without painting the images again.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from sseg.errors import DataError
from sseg.metrics import ConfusionMatrix
from sseg.tuss.masks import class_counts
from sseg.tuss.paint import majority_labels, mask_f1, paint


def mask_counts(masks: torch.Tensor, label: np.ndarray, num_classes: int,
                ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Areas ``[M]``, ``gt_counts [M, C]`` and ``owned_counts [M, C]`` of one image's masks."""
    areas = masks.flatten(1).sum(dim=1).numpy().astype(np.int64)
    inside = class_counts(masks, label, num_classes, ignore_index)
    owner = paint(masks, np.arange(masks.shape[0]))
    label = np.asarray(label).astype(np.int64)
    valid = label != ignore_index
    m = masks.shape[0]
    owned = np.bincount(owner[valid] * num_classes + label[valid], minlength=m * num_classes)
    return areas, inside, owned.reshape(m, num_classes)


@dataclass
class MaskTable:
    image_ids: list[str]  # [I]
    image_index: np.ndarray  # [N] row of image_ids
    area: np.ndarray  # [N] pixels
    embeddings: np.ndarray  # [N, D]
    gt_counts: np.ndarray | None = None  # [N, C]
    owned_counts: np.ndarray | None = None  # [N, C]

    def __post_init__(self) -> None:
        n = len(self.image_index)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "image_ids" and value is not None and len(value) != n:
                raise DataError(f"mask table column {f.name} has {len(value)} rows, image_index {n}")

    def __len__(self) -> int:
        return len(self.image_index)

    @property
    def proportions(self) -> np.ndarray:
        if self.gt_counts is None:
            raise DataError("this split has no ground truth")
        return (self.gt_counts / np.maximum(self.area, 1)[:, None]).astype(np.float32)

    @property
    def true_labels(self) -> np.ndarray:
        """Each mask's majority class (-1: no labelled pixel)."""
        return majority_labels(self.gt_counts if self.gt_counts is not None else self.proportions)

    def select_images(self, keep: np.ndarray) -> "MaskTable":
        """The rows of the images where ``keep [I]`` is true (image ids renumbered)."""
        keep = np.asarray(keep, dtype=bool)
        if len(keep) != len(self.image_ids):
            raise DataError(f"{len(keep)} flags for {len(self.image_ids)} images")
        new_index = np.cumsum(keep) - 1
        rows = keep[self.image_index]
        columns = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("image_ids", "image_index")}
        return replace(self, image_ids=[i for i, k in zip(self.image_ids, keep) if k],
                       image_index=new_index[self.image_index[rows]],
                       **{k: (None if v is None else v[rows]) for k, v in columns.items()})


def concat(tables: list[MaskTable]) -> MaskTable:
    """Tables of disjoint images, one after the other."""
    if not tables:
        raise DataError("no mask table to concatenate")
    offsets = np.cumsum([0] + [len(t.image_ids) for t in tables[:-1]])

    def column(name: str):
        parts = [getattr(t, name) for t in tables]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    return MaskTable(
        image_ids=[i for t in tables for i in t.image_ids],
        image_index=np.concatenate([t.image_index + o for t, o in zip(tables, offsets)]),
        area=column("area"), embeddings=column("embeddings"),
        gt_counts=column("gt_counts"), owned_counts=column("owned_counts"))


def pixel_confusion(table: MaskTable, predicted: np.ndarray, num_classes: int,
                    rows: np.ndarray | None = None) -> ConfusionMatrix:
    """The pixel confusion matrix (rows truth, columns prediction) of painting each mask with its class
    (``rows``: only these masks' pixels count, e.g. the masks a pseudo-label covers)."""
    if table.owned_counts is None:
        raise DataError("this split has no ground truth to score against")
    predicted = np.asarray(predicted, dtype=np.int64)
    if predicted.shape != (len(table),) or predicted.min(initial=0) < 0 or predicted.max(initial=0) >= num_classes:
        raise DataError(f"predictions must be {len(table)} class ids in [0, {num_classes})")
    keep = np.ones(len(table), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    onehot = np.eye(num_classes, dtype=np.int64)[predicted[keep]]
    return ConfusionMatrix.from_matrix(table.owned_counts[keep].T @ onehot)


def score(table: MaskTable, predicted: np.ndarray, num_classes: int, rows: np.ndarray | None = None) -> dict:
    """mIoU (of the painted label maps) and mask F1 of a mask classification (``rows``: a subset of masks)."""
    metrics = pixel_confusion(table, predicted, num_classes, rows).compute()
    true = table.true_labels if rows is None else np.where(np.asarray(rows, dtype=bool), table.true_labels, -1)
    f1 = mask_f1(predicted, true, num_classes)
    return {"miou": metrics["miou"], "per_class_iou": metrics["per_class_iou"],
            "pixel_accuracy": metrics["pixel_accuracy"], "f1": f1["f1"], "per_class_f1": f1["per_class_f1"]}
