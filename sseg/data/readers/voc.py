"""Pascal VOC 2012 and Pascal Context readers (VOC directory layouts).

VOC 2012 (also the layout the procedural world writes)::

    root/JPEGImages/<key>.jpg
    root/SegmentationClass/<key>.png            palette PNG, index = class id, 255 = void
    root/ImageSets/Segmentation/<split>.txt
    root/class_names.txt                        optional: one class name per line
    root/SegmentationClassAug/<key>.png         split "train_aug" only (see below)

Split ``train_aug`` is the 10,582-image SBD-augmented training set (VOC 2012 train + SBD train/val
minus VOC 2012 val): its ids come from ``ImageSets/Segmentation/train_aug.txt`` if present, else from
the list shipped in ``sseg/data/splits/voc/train_aug.txt``; its labels from ``SegmentationClassAug/``
(the SBD-converted masks) if that folder exists, else ``SegmentationClass/``. With
``require_labels=False`` images without a label file are allowed (SemiVL's unlabelled images).

Pascal Context (mmseg layout; labels 0 = background, 1..59 the classes)::

    root/VOCdevkit/VOC2010/JPEGImages/<key>.jpg
    root/VOCdevkit/VOC2010/SegmentationClassContext/<key>.png
    root/VOCdevkit/VOC2010/ImageSets/SegmentationContext/<split>.txt

``root`` may also point directly at the VOC2012 / VOC2010 folder (or at ``VOCdevkit``).
"""

from __future__ import annotations

from pathlib import Path

from sseg.data.readers.base import FileListDataset, read_split_file, require_dir
from sseg.data.readers.class_names import CONTEXT_CLASSES, VOC_CLASSES
from sseg.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
AUG_SPLIT = "train_aug"
SHIPPED_VOC_LISTS = Path(__file__).resolve().parent.parent / "splits" / "voc"


def _find_year_dir(root: Path, year_dir: str, marker: str) -> Path:
    require_dir(root, "dataset root")
    for candidate in (root, root / year_dir, root / "VOCdevkit" / year_dir):
        if (candidate / marker).is_dir():
            return candidate
    raise DataError(f"no {marker}/ folder under {root} (looked in ., {year_dir}/, "
                    f"VOCdevkit/{year_dir}/)")


def _image_path(image_dir: Path, key: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = image_dir / f"{key}{suffix}"
        if path.is_file():
            return path
    return image_dir / f"{key}.jpg"  # reported as missing by FileListDataset


def read_class_names_file(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"class names file is empty: {path}")
    if len(set(names)) != len(names):
        raise DataError(f"class names file lists a name twice: {path}")
    if len(names) > 255:
        raise DataError(f"class names file lists {len(names)} classes; at most 255 fit a uint8 "
                        f"label map with 255 = ignore: {path}")
    return names


def background_index_of(names: list[str]) -> int | None:
    lowered = [n.lower() for n in names]
    return lowered.index("background") if "background" in lowered else None


class VOCSegmentation(FileListDataset):
    """Pascal VOC 2012 segmentation (21 classes, background = 0), or any VOC-layout dataset.

    If ``root/class_names.txt`` exists its names replace VOC's; the background index is then
    the position of a class called "background", or None (the procedural world has none).
    """

    def __init__(self, root: str | Path, split: str = "val", require_labels: bool = True) -> None:
        base = _find_year_dir(Path(root), "VOC2012", "SegmentationClass")
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if split == AUG_SPLIT and not list_file.is_file():
            list_file = SHIPPED_VOC_LISTS / f"{AUG_SPLIT}.txt"
        keys = read_split_file(list_file)
        names_file = base / "class_names.txt"
        names = read_class_names_file(names_file) if names_file.is_file() else list(VOC_CLASSES)
        image_dir = require_dir(base / "JPEGImages", "image")
        label_dir = base / "SegmentationClass"
        if split == AUG_SPLIT and (base / "SegmentationClassAug").is_dir():
            label_dir = base / "SegmentationClassAug"
        super().__init__(
            class_names=names,
            background_index=background_index_of(names),
            image_paths=[_image_path(image_dir, k) for k in keys],
            label_paths=[label_dir / f"{k}.png" for k in keys],
            sample_keys=keys,
            require_labels=require_labels,
        )


class PascalContext(FileListDataset):
    """Pascal Context 59 + background (60 classes, background = 0; other ids → ignore)."""

    def __init__(self, root: str | Path, split: str = "val") -> None:
        base = _find_year_dir(Path(root), "VOC2010", "SegmentationClassContext")
        keys = read_split_file(base / "ImageSets" / "SegmentationContext" / f"{split}.txt")
        image_dir = require_dir(base / "JPEGImages", "image")
        super().__init__(
            class_names=list(CONTEXT_CLASSES),
            background_index=0,
            image_paths=[_image_path(image_dir, k) for k in keys],
            label_paths=[base / "SegmentationClassContext" / f"{k}.png" for k in keys],
            sample_keys=keys,
        )
