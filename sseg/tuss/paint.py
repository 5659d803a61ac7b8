"""From classified masks to label maps, and the mask-level F1 score.

**Painting.** Masks are painted from the largest to the smallest, so where masks overlap a pixel takes the
class of the *smallest* mask covering it (the most specific one: a part over its object, an object over the
scene). A pixel no mask covers takes the class of the nearest covered pixel (``uncovered="nearest"``) or a
fixed class id.

**Mask F1** (the TUSS paper reports it beside mIoU without defining it; this is our definition). A mask's
true class is the majority class of its labelled pixels (masks without labelled pixels do not count);
per class, precision and recall over masks, ``F1_c = 2 TP / (2 TP + FP + FN)``; the score is the mean over
the classes that occur as a true or predicted class. Unlike mIoU it weighs every mask alike, so small
masks count as much as large ones.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from torch import Tensor

from sseg.errors import DataError


def paint(masks: Tensor | np.ndarray, classes: np.ndarray, uncovered: str | int = "nearest") -> np.ndarray:
    """bool masks ``[M, H, W]`` with one class each → int64 label map ``[H, W]``."""
    masks = (masks.cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)).astype(bool)
    classes = np.asarray(classes, dtype=np.int64)
    if masks.ndim != 3 or len(classes) != masks.shape[0]:
        raise DataError(f"paint needs [M, H, W] masks and M classes (got {masks.shape} and {len(classes)})")
    if masks.shape[0] == 0:
        raise DataError("an image without masks cannot be painted")
    out = np.full(masks.shape[1:], -1, dtype=np.int64)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    for m in np.argsort(-areas, kind="stable"):  # largest first; smaller masks paint over
        out[masks[m]] = classes[m]
    hole = out < 0
    if hole.any():
        if uncovered == "nearest":
            if hole.all():
                raise DataError("every mask is empty: nothing to paint")
            _, (iy, ix) = ndimage.distance_transform_edt(hole, return_indices=True)
            out = out[iy, ix]
        else:
            out[hole] = int(uncovered)
    return out


def majority_labels(proportions: np.ndarray) -> np.ndarray:
    """Each mask's majority class from its class proportions ``[N, C]``; -1 where it has no labelled pixel."""
    proportions = np.asarray(proportions)
    return np.where(proportions.sum(axis=1) > 0, proportions.argmax(axis=1), -1)


def mask_f1(predicted: np.ndarray, true: np.ndarray, num_classes: int) -> dict:
    """Mask-level F1 (see the module doc); ``true`` -1 = not counted. Returns ``f1`` and ``per_class_f1``."""
    predicted, true = np.asarray(predicted, dtype=np.int64), np.asarray(true, dtype=np.int64)
    if predicted.shape != true.shape:
        raise DataError(f"{predicted.shape} predictions for {true.shape} true labels")
    keep = true >= 0
    p, t = predicted[keep], true[keep]
    tp = np.bincount(t[p == t], minlength=num_classes).astype(np.float64)
    fp = np.bincount(p[p != t], minlength=num_classes).astype(np.float64)
    fn = np.bincount(t[p != t], minlength=num_classes).astype(np.float64)
    denom = 2 * tp + fp + fn
    per_class = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    valid = per_class[~np.isnan(per_class)]
    return {"f1": float(valid.mean()) if valid.size else math.nan, "per_class_f1": per_class.tolist()}
