"""Class-agnostic masks for one image, from every source TUSS takes.

A mask set is a bool tensor ``[M, H, W]`` at the image's size. Sources:

* :func:`generated_masks` — our pseudo-mask generator (``sseg.pseudo_masks``: pixel K-Means or DINO);
* :func:`sseg_predicted_masks` — the S-Seg model's own N masks (each pixel to its most likely query);
* :func:`read_mask_png` — one PNG of segment ids per image (how a user brings SAM masks);
* :func:`ground_truth_regions` — the connected regions of each class in the label map (a ceiling).

An image whose masks cannot be used raises :class:`MaskSkip` with a ``reason`` the caller counts (size
mismatch, unreadable file, no masks); an empty mask inside a set is dropped and counted by the caller
through :func:`drop_empty`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from sseg.errors import DataError

SKIP_REASONS = ("size_mismatch", "unreadable", "no_masks", "missing_file")


class MaskSkip(DataError):
    """This image's masks cannot be used; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def drop_empty(masks: Tensor, min_area: int = 1) -> tuple[Tensor, int]:
    """The masks with at least ``min_area`` pixels, and how many were dropped. No mask left is a ``no_masks``
    skip."""
    keep = masks.flatten(1).sum(dim=1) >= min_area
    kept = masks[keep]
    if kept.shape[0] == 0:
        raise MaskSkip("no_masks", "the image has no non-empty mask")
    return kept, int((~keep).sum())


def segment_ids_to_masks(ids: np.ndarray | Tensor, no_mask_value: int | None = None,
                         split_components: bool = False, min_area: int = 1) -> tuple[Tensor, int]:
    """Segment-id map ``[H, W]`` → bool masks ``[M, H, W]`` (one per id present, ascending; ``no_mask_value``
    marks uncovered pixels). ``split_components`` turns each segment into its 8-connected components.
    Masks under ``min_area`` pixels are dropped; returns the masks and the number dropped."""
    ids = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)
    if ids.ndim != 2:
        raise DataError(f"a segment-id map must be [H, W] (got shape {ids.shape})")
    values = [v for v in np.unique(ids) if no_mask_value is None or v != no_mask_value]
    masks: list[np.ndarray] = []
    for v in values:
        segment = ids == v
        if split_components:
            comp, n = ndimage.label(segment, structure=np.ones((3, 3), dtype=bool))
            masks.extend(comp == i for i in range(1, n + 1))
        else:
            masks.append(segment)
    big = [m for m in masks if int(m.sum()) >= min_area]
    dropped = len(masks) - len(big)
    if not big:
        raise MaskSkip("no_masks", "the image has no mask")
    return torch.from_numpy(np.stack(big)), dropped


def generated_masks(generator, images: np.ndarray | Tensor, split_components: bool = True,
                    min_area: int = 1) -> list[tuple[Tensor, int]]:
    """Our pseudo-mask generator (``sseg.pseudo_masks.build_generator``) on uint8 ``[B, H, W, 3]``: K-Means
    segments (split into connected components by default: a colour cluster is not one object)."""
    ids = generator(images)
    return [segment_ids_to_masks(i, split_components=split_components, min_area=min_area) for i in ids]


@torch.no_grad()
def sseg_predicted_masks(model, images: Tensor, min_area: int = 1) -> list[tuple[Tensor, int]]:
    """The S-Seg model's own masks for normalised ``[B, 3, H, W]`` (H, W multiples of 32): its mask logits
    upsampled to the image, each pixel given to its most likely query; queries that win no pixel vanish."""
    logits = model.encode_image(images)["pred_masks"]  # [B, N, H/4, W/4]
    logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return [segment_ids_to_masks(ids, min_area=min_area) for ids in logits.argmax(dim=1)]


def read_mask_png(path: str | Path, image_hw: tuple[int, int], no_mask_value: int | None = None) -> tuple[Tensor, int]:
    """One PNG of segment ids (8- or 16-bit grey, or palette indices) for an image of size ``image_hw``."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise MaskSkip("missing_file", f"no mask file {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise MaskSkip("unreadable", f"{path} is a {im.mode} image, not a single-channel map of segment ids")
            ids = np.asarray(im)
    except MaskSkip:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a counted skip
        raise MaskSkip("unreadable", f"cannot read mask file {path}: {exc}") from None
    if tuple(ids.shape) != tuple(image_hw):
        raise MaskSkip("size_mismatch", f"mask file {path} is {ids.shape[1]}x{ids.shape[0]}, its image "
                                        f"{image_hw[1]}x{image_hw[0]}")
    return segment_ids_to_masks(ids.astype(np.int64), no_mask_value=no_mask_value)


def ground_truth_regions(label: np.ndarray, ignore_index: int = 255, min_area: int = 1) -> tuple[Tensor, int]:
    """Each 8-connected region of each class in a label map (ignored pixels are in no mask)."""
    label = np.asarray(label)
    return segment_ids_to_masks(label.astype(np.int64), no_mask_value=ignore_index, split_components=True,
                                min_area=min_area)


def class_counts(masks: Tensor, label: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Per mask, its labelled pixels of each class ``[M, C]`` (int64). A label outside the class list is a
    DataError."""
    label = torch.as_tensor(np.asarray(label).astype(np.int64))
    if tuple(label.shape) != tuple(masks.shape[-2:]):
        raise DataError(f"label map {tuple(label.shape)} does not match the masks {tuple(masks.shape[-2:])}")
    valid = label != ignore_index
    bad = label[valid & ((label < 0) | (label >= num_classes))]
    if bad.numel():
        raise DataError(f"label {int(bad[0])} is outside the {num_classes} classes and is not the ignore index")
    onehot = F.one_hot(torch.where(valid, label, 0), num_classes).double() * valid[..., None]
    return (masks.flatten(1).double() @ onehot.flatten(0, 1)).round().long().numpy()


def class_proportions(masks: Tensor, label: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Per mask, the fraction of its pixels of each class ``[M, C]`` (ignored pixels count for no class, so a
    row sums to the labelled fraction of the mask)."""
    counts = class_counts(masks, label, num_classes, ignore_index)
    areas = masks.flatten(1).sum(dim=1, keepdim=True).clamp_min(1).numpy()
    return (counts / areas).astype(np.float32)
