"""Pascal VOC layout writing: palette label PNGs with the standard VOC colour map, ignore bands."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from sseg.data.readers.base import IGNORE_INDEX
from sseg.errors import DataError
from sseg.viz import voc_palette

_PALETTE = voc_palette().ravel().tolist()


def mark_boundaries(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Copy of ``label`` with a 1-pixel ignore band where the class changes.

    A pixel is marked when its right or lower neighbour has another class, so each boundary gets a
    band exactly one pixel wide (VOC marks object outlines as 'void' the same way, but wider).
    """
    edge = np.zeros(label.shape, dtype=bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    out = label.copy()
    out[edge] = ignore_index
    return out


def encode_label_png(label: np.ndarray) -> bytes:
    """'P'-mode PNG with the VOC palette; pixel value = class id."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise DataError(f"label must be HxW uint8, got {label.dtype} {label.shape}")
    height, width = label.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(label).tobytes())
    image.putpalette(_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def voc_dirs(root: str | Path) -> dict[str, Path]:
    root = Path(root)
    return {
        "images": root / "JPEGImages",
        "labels": root / "SegmentationClass",
        "sets": root / "ImageSets" / "Segmentation",
    }
