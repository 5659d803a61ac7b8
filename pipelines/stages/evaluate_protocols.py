"""The paper's two evaluation protocols (Tables 3 and 4) on any supported labelled dataset.

with_background: foreground class names are the text queries; a pixel whose best probability is below
    the background threshold becomes background; mIoU over background + foreground classes. The threshold
    is GroupViT's for the dataset (VOC and COCO-Object 0.95, Pascal Context 0.35) unless the config's
    ``segment.bg_thresh`` sets one, and is clamped per image to its best foreground probability
    (``sseg.inference.threshold_background``).
without_background: background pixels are ignored and the model picks among the foreground classes;
    mIoU over the foreground classes. Datasets with no background class (ADE20K, Cityscapes) use this one;
    for the world, ``background_classes`` (its stuff) play VOC's background in the first protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from sseg.errors import ConfigError


@dataclass
class Protocol:
    name: str
    text_classes: list[str]  # class names given to the text encoder
    report_names: list[str]  # names of the confusion-matrix rows (dataset label space)
    label_map: list[int] | None  # dataset label → evaluation label (255 = ignore)
    background_index: int | None
    bg_mode: str
    exclude: list[int]  # rows left out of the mean


def build_protocol(name: str, class_names: list[str], background_index: int | None,
                   background_classes: list[str] | None) -> Protocol:
    names = list(class_names)
    if background_index is None and background_classes:
        unknown = sorted(set(background_classes) - set(names))
        if unknown:
            raise ConfigError(f"background_classes not in the dataset: {', '.join(unknown)}")
        keep = [n for n in names if n not in background_classes]
        lut = np.full(256, 255, np.int64)
        for i, n in enumerate(names):
            lut[i] = 0 if n in background_classes else keep.index(n) + 1
        names, background_index, label_map = ["background"] + keep, 0, lut.tolist()
    else:
        label_map = None
    foreground = [n for i, n in enumerate(names) if i != background_index]
    if name == "with_background":
        if background_index is None:
            raise ConfigError("protocol with_background needs a dataset background class or "
                              "background_classes")
        return Protocol(name, foreground, names, label_map, background_index, "threshold", [])
    if background_index is None:
        return Protocol(name, names, names, label_map, None, "none", [])
    lut = np.asarray(label_map if label_map is not None else np.arange(256), np.int64).copy()
    lut[lut == background_index] = 255  # background pixels are ignored in this protocol
    return Protocol(name, foreground, names, lut.tolist(), background_index, "none", [background_index])


def background_threshold(dataset: str, segment: Mapping) -> tuple[float, str]:
    """The with-background threshold for ``dataset`` and where it comes from: ``segment["bg_thresh"]``
    when the config sets it ("config"), else GroupViT's value for the dataset ("groupvit_<dataset>"),
    else SegmentConfig's default ("default"; the world and datasets GroupViT did not evaluate)."""
    from sseg.data.datasets import GROUPVIT_BG_THRESHOLDS
    from sseg.inference import SegmentConfig

    if segment.get("bg_thresh") is not None:
        return SegmentConfig.model_validate({"bg_thresh": segment["bg_thresh"]}).bg_thresh, "config"
    if dataset in GROUPVIT_BG_THRESHOLDS:
        return GROUPVIT_BG_THRESHOLDS[dataset], f"groupvit_{dataset}"
    return SegmentConfig.model_fields["bg_thresh"].default, "default"
