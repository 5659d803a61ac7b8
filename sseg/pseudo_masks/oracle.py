"""Oracle mIoU of class-agnostic segments (the S-Seg paper's Table 1 protocol).

Each segment of an image is given the majority ground-truth label of its pixels (ignored pixels
do not vote), and the relabelled maps are scored with the usual dataset-level mIoU. It measures
how well segments could be named, not how they are named.
"""

from __future__ import annotations

import numpy as np
import torch

from sseg.errors import DataError
from sseg.metrics import ConfusionMatrix, as_int_array

ArrayLike = np.ndarray | torch.Tensor


def oracle_relabel(segments: ArrayLike, gt: ArrayLike, ignore_index: int | None = 255) -> np.ndarray:
    """Replace every segment id by the majority ground-truth label of its pixels.

    A segment all of whose pixels are ``ignore_index`` gets ``ignore_index``; ties go to the
    smaller label. Returns an array of ``gt``'s shape and integer dtype.
    """
    seg = as_int_array(segments, "segments")
    labels = as_int_array(gt, "ground truth")
    if seg.shape != labels.shape:
        raise DataError(f"segments shape {seg.shape} != ground-truth shape {labels.shape}")
    seg_ids, seg_index = np.unique(seg.ravel(), return_inverse=True)
    flat_gt = labels.ravel().astype(np.int64)
    valid = flat_gt != ignore_index if ignore_index is not None else np.ones_like(flat_gt, bool)
    if valid.any() and flat_gt[valid].min() < 0:
        raise DataError(f"ground-truth label {flat_gt[valid].min()} is negative and not the ignore index")
    num_labels = int(flat_gt[valid].max()) + 1 if valid.any() else 1
    votes = np.bincount(
        seg_index[valid] * num_labels + flat_gt[valid], minlength=len(seg_ids) * num_labels
    ).reshape(len(seg_ids), num_labels)
    fallback = ignore_index if ignore_index is not None else 0
    majority = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), fallback)
    source = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
    out_dtype = source.dtype  # keep the caller's integer dtype
    return majority[seg_index].reshape(labels.shape).astype(out_dtype)


class OracleMIoU:
    """Accumulates the oracle-relabelled confusion matrix over a dataset."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.ignore_index = ignore_index
        self.confusion = ConfusionMatrix(num_classes, ignore_index)

    def update(self, segments: ArrayLike, gt: ArrayLike) -> None:
        """Add one image [H, W] or a batch [B, H, W] of segment maps and ground truth."""
        seg = as_int_array(segments, "segments")
        labels = as_int_array(gt, "ground truth")
        if seg.shape != labels.shape:
            raise DataError(f"segments shape {seg.shape} != ground-truth shape {labels.shape}")
        if seg.ndim == 2:
            seg, labels = seg[None], labels[None]
        if seg.ndim != 3:
            raise DataError(f"oracle mIoU expects [H, W] or [B, H, W] maps, got shape {seg.shape}")
        for image_segments, image_gt in zip(seg, labels):
            self.confusion.update(oracle_relabel(image_segments, image_gt, self.ignore_index), image_gt)

    def compute(self) -> dict:
        """``miou``, ``per_class_iou`` and the other fields of :meth:`ConfusionMatrix.compute`."""
        return self.confusion.compute()
