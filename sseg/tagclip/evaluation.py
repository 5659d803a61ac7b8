"""Seen / unseen metrics (ZegCLIP / TagCLIP protocol): one prediction over all classes at once, one
confusion matrix; mIoU(S) and mIoU(U) are the means of its per-class IoU over the seen and the unseen
classes, hIoU = 2 S U / (S + U). Ignored classes (VOC's background) leave the pixels and the means.

Also: pixel accuracy, the share of unseen pixels labelled as a seen class (the failure TagCLIP targets),
and the trusty map's AUROC for unseen (positive) vs seen pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from sseg.metrics import ConfusionMatrix, ScoreHistogram, confusion_share, harmonic_mean, subset_mean
from sseg.tagclip.splits import ClassSplit


def seen_unseen_metrics(confusion: ConfusionMatrix, split: ClassSplit) -> dict:
    """``miou_seen``, ``miou_unseen``, ``hiou``, ``miou`` (all evaluated classes), ``pixel_accuracy``,
    ``unseen_as_seen`` and ``per_class_iou``; values in [0, 1] (NaN where undefined)."""
    if confusion.num_classes != len(split.class_names):
        raise ValueError(f"confusion matrix over {confusion.num_classes} classes, split over "
                         f"{len(split.class_names)}")
    base = confusion.compute(exclude=split.ignored)
    iou = base["per_class_iou"]
    seen = subset_mean(iou, split.seen)
    unseen = subset_mean(iou, split.unseen)
    return {
        "miou_seen": seen,
        "miou_unseen": unseen,
        "hiou": harmonic_mean(seen, unseen),
        "miou": base["miou"],
        "pixel_accuracy": base["pixel_accuracy"],
        "unseen_as_seen": confusion_share(confusion.matrix, split.unseen, split.seen) if split.unseen else float("nan"),
        "per_class_iou": iou,
    }


def update_trusty_histogram(histogram: ScoreHistogram, trusty: torch.Tensor | np.ndarray,
                            label: torch.Tensor | np.ndarray, split: ClassSplit) -> None:
    """Add one image: trusty probabilities [H, W] against its label [H, W]; unseen pixels are positives,
    seen pixels negatives, every other pixel (ignored class, void) is left out."""
    label = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label)
    unseen = np.isin(label, split.unseen)
    seen = np.isin(label, split.seen)
    histogram.update(trusty, unseen, valid=unseen | seen)


@torch.no_grad()
def trusty_probability(segmenter, image: np.ndarray) -> np.ndarray:
    """The trusty map of one image ``[H, W]`` (probability that a pixel is of no seen class), computed on
    the segmenter's windows and resize as its predictions are (``segmenter.model``: a TagCLIP model with
    the token; its queries are the segmenter's class texts)."""
    import torch.nn.functional as F

    from sseg.inference import eval_mode, resize_maps, sliding_windows

    model, cfg = segmenter.model, segmenter.cfg
    text = segmenter.classifier.embeddings
    with eval_mode(model):
        x = segmenter.preprocess(image)
        h, w = x.shape[-2:]
        boxes = sliding_windows(h, w, cfg.window, cfg.stride) if cfg.sliding else [(0, h, 0, w)]
        total = x.new_zeros(1, h, w)
        count = x.new_zeros(1, h, w)
        for y0, y1, x0, x1 in boxes:
            crop = x[..., y0:y1, x0:x1]
            ph, pw = (-crop.shape[-2]) % cfg.size_divisor, (-crop.shape[-1]) % cfg.size_divisor
            padded = F.pad(crop, (0, pw, 0, ph)) if ph or pw else crop
            total[:, y0:y1, x0:x1] += model.trusty_map(padded, text)[0, :, :y1 - y0, :x1 - x0]
            count[:, y0:y1, x0:x1] += 1
        out = resize_maps((total / count).unsqueeze(0), image.shape[:2])[0, 0]
    return out.cpu().numpy()
