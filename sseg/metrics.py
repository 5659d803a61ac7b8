"""Semantic-segmentation metrics from an accumulated confusion matrix.

``ConfusionMatrix`` is a plain int64 ``[C, C]`` array (rows = ground truth, columns = prediction)
so matrices computed on many workers can simply be summed (``merge`` / ``+``).

Conventions (those of mmseg / the GroupViT and S-Seg evaluations):

* a class enters the mean IoU only if its union is non-empty (it occurs in the ground truth or
  in the prediction); a class predicted but absent from the ground truth counts with IoU 0;
* ``exclude`` implements the "without background" protocol of MaskCLIP / S-Seg: by default
  (``exclude_mode="pixels"``) ground-truth pixels of an excluded class are ignored altogether
  and the class leaves the means; ``exclude_mode="mean"`` keeps every pixel and only drops the
  class from the mean IoU / mean accuracy.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

from sseg.errors import DataError

ArrayLike = np.ndarray | torch.Tensor


def as_int_array(values: ArrayLike, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iub":
        raise DataError(f"{what} must hold integer class ids (got dtype {array.dtype})")
    return array.astype(np.int64, copy=False)


class ConfusionMatrix:
    """Accumulates ``matrix[gt, pred]`` pixel counts over many images."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise DataError(f"num_classes must be >= 1 (got {num_classes})")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray | Sequence[Sequence[int]],
                    ignore_index: int | None = 255) -> "ConfusionMatrix":
        array = np.asarray(matrix, dtype=np.int64)
        if array.ndim != 2 or array.shape[0] != array.shape[1]:
            raise DataError(f"a confusion matrix must be square (got shape {array.shape})")
        out = cls(array.shape[0], ignore_index)
        out.matrix = array.copy()
        return out

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one image (or a batch) of predicted and ground-truth label maps of equal shape.

        Pixels whose ground truth is ``ignore_index`` are skipped. Any other ground-truth or
        predicted value outside ``[0, num_classes)`` is a :class:`DataError`.
        """
        pred_ids = as_int_array(pred, "prediction")
        gt_ids = as_int_array(gt, "ground truth")
        if pred_ids.shape != gt_ids.shape:
            raise DataError(f"prediction shape {pred_ids.shape} != ground-truth shape {gt_ids.shape}")
        pred_ids, gt_ids = pred_ids.ravel(), gt_ids.ravel()
        if self.ignore_index is not None:
            keep = gt_ids != self.ignore_index
            pred_ids, gt_ids = pred_ids[keep], gt_ids[keep]
        if gt_ids.size == 0:
            return
        n = self.num_classes
        for name, ids in (("ground-truth", gt_ids), ("predicted", pred_ids)):
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= n:
                bad = low if low < 0 else high
                raise DataError(f"{name} label {bad} is outside [0, {n}) and is not the ignore index")
        self.matrix += np.bincount(gt_ids * n + pred_ids, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add ``other``'s counts into this matrix (in place) and return self."""
        if other.num_classes != self.num_classes:
            raise DataError(f"cannot merge confusion matrices of {self.num_classes} and "
                            f"{other.num_classes} classes")
        self.matrix += other.matrix
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return ConfusionMatrix.from_matrix(self.matrix, self.ignore_index).merge(other)

    def __radd__(self, other: object) -> "ConfusionMatrix":
        if other == 0:  # lets sum(list_of_matrices) work
            return ConfusionMatrix.from_matrix(self.matrix, self.ignore_index)
        return NotImplemented

    def reset(self) -> None:
        self.matrix[:] = 0

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def compute(self, exclude: Sequence[int] = (),
                exclude_mode: Literal["pixels", "mean"] = "pixels") -> dict:
        """Metrics as plain Python numbers (NaN for undefined values).

        Returns ``miou``, ``per_class_iou`` (list of C, NaN where the union is empty or the class
        is excluded in "pixels" mode), ``pixel_accuracy``, ``mean_accuracy``,
        ``per_class_accuracy`` and ``num_classes_in_mean``.
        """
        n = self.num_classes
        excluded = sorted({int(c) for c in exclude})
        for c in excluded:
            if not 0 <= c < n:
                raise DataError(f"excluded class {c} is outside [0, {n})")
        if exclude_mode not in ("pixels", "mean"):
            raise DataError(f"exclude_mode must be 'pixels' or 'mean' (got {exclude_mode!r})")
        matrix = self.matrix.astype(np.float64)
        if exclude_mode == "pixels" and excluded:
            matrix = matrix.copy()
            matrix[excluded, :] = 0.0  # ground-truth pixels of excluded classes are ignored
        tp = np.diag(matrix)
        gt_total = matrix.sum(axis=1)
        pred_total = matrix.sum(axis=0)
        union = gt_total + pred_total - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            accuracy = np.where(gt_total > 0, tp / gt_total, np.nan)
        in_mean = np.ones(n, dtype=bool)
        in_mean[excluded] = False
        if exclude_mode == "pixels":
            iou[~in_mean] = np.nan
            accuracy[~in_mean] = np.nan
        valid_iou = iou[in_mean & ~np.isnan(iou)]
        valid_acc = accuracy[in_mean & ~np.isnan(accuracy)]
        total = matrix.sum()
        return {
            "miou": float(valid_iou.mean()) if valid_iou.size else math.nan,
            "per_class_iou": [float(v) for v in iou],
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_accuracy": float(valid_acc.mean()) if valid_acc.size else math.nan,
            "per_class_accuracy": [float(v) for v in accuracy],
            "num_classes_in_mean": int(valid_iou.size),
        }


# ----------------------------------------------------------------------------- seen / unseen (zero-shot)


def subset_mean(per_class: Sequence[float], ids: Sequence[int]) -> float:
    """Mean of ``per_class`` over ``ids``, skipping NaN (classes absent from truth and prediction)."""
    values = [per_class[i] for i in ids if not math.isnan(per_class[i])]
    return float(np.mean(values)) if values else math.nan


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b) (hIoU of mIoU(seen) and mIoU(unseen)); 0 when both are 0, NaN when one is NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2.0 * a * b / (a + b)


def confusion_share(matrix: np.ndarray, truth_ids: Sequence[int], predicted_ids: Sequence[int]) -> float:
    """Share of the ground-truth pixels of ``truth_ids`` predicted as one of ``predicted_ids``."""
    rows = np.asarray(matrix, dtype=np.float64)[list(truth_ids)]
    total = rows.sum()
    return float(rows[:, list(predicted_ids)].sum() / total) if total > 0 else math.nan


def binary_auroc(scores: ArrayLike, positives: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for the boolean ``positives`` (ties count one half:
    the Mann-Whitney U statistic); NaN without both classes."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    y = np.asarray(positives.detach().cpu() if isinstance(positives, torch.Tensor) else positives, dtype=bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(s, method="average")
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class ScoreHistogram:
    """Counts of scores in [0, 1] for positives and negatives in ``bins`` equal bins: a streaming,
    mergeable AUROC (exact up to ties within a bin, which count one half)."""

    def __init__(self, bins: int = 1000) -> None:
        self.bins = int(bins)
        self.positive = np.zeros(self.bins, dtype=np.int64)
        self.negative = np.zeros(self.bins, dtype=np.int64)

    def update(self, scores: ArrayLike, positives: ArrayLike, valid: ArrayLike | None = None) -> None:
        s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
        y = np.asarray(positives.detach().cpu() if isinstance(positives, torch.Tensor) else positives, dtype=bool).ravel()
        if valid is not None:
            keep = np.asarray(valid.detach().cpu() if isinstance(valid, torch.Tensor) else valid, dtype=bool).ravel()
            s, y = s[keep], y[keep]
        index = np.clip((s * self.bins).astype(np.int64), 0, self.bins - 1)
        self.positive += np.bincount(index[y], minlength=self.bins)
        self.negative += np.bincount(index[~y], minlength=self.bins)

    def merge(self, other: "ScoreHistogram") -> "ScoreHistogram":
        if other.bins != self.bins:
            raise DataError(f"cannot merge score histograms of {self.bins} and {other.bins} bins")
        self.positive += other.positive
        self.negative += other.negative
        return self

    def auroc(self) -> float:
        n_pos, n_neg = int(self.positive.sum()), int(self.negative.sum())
        if n_pos == 0 or n_neg == 0:
            return math.nan
        below = np.cumsum(self.negative) - self.negative  # negatives in lower bins
        wins = (self.positive * below).sum() + 0.5 * (self.positive * self.negative).sum()
        return float(wins / (n_pos * n_neg))
