"""The common interface of labelled segmentation datasets, and a file-list implementation.

Every reader returns ``(key, image uint8 [H, W, 3], label uint8 [H, W])`` where label values
are class indices into ``class_names`` or ``ignore_index`` (255).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from sseg.data.decode import decode_image, decode_label
from sseg.errors import DataError

IGNORE_INDEX = 255
Sample = tuple[str, np.ndarray, np.ndarray]


@runtime_checkable
class SegmentationDataset(Protocol):
    class_names: list[str]
    background_index: int | None
    ignore_index: int

    @property
    def keys(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_image(path: Path) -> np.ndarray:
    """Decode an image file on its stored pixel grid (labels align with it, not with EXIF)."""
    try:
        return decode_image(read_bytes(path), apply_exif=False)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def read_label(path: Path) -> np.ndarray:
    try:
        return decode_label(read_bytes(path))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} directory not found: {path}")
    return path


def read_split_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    keys = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not keys:
        raise DataError(f"split file is empty: {path}")
    return keys


def check_files_exist(paths: Sequence[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{what} not found: {missing[0]}{more}")


@dataclass
class FileListDataset:
    """Images and label PNGs listed up front; ``label_transform`` maps raw ids to class ids."""

    class_names: list[str]
    background_index: int | None
    image_paths: list[Path]
    label_paths: list[Path]
    sample_keys: list[str]
    label_transform: Callable[[np.ndarray], np.ndarray] | None = None
    ignore_index: int = IGNORE_INDEX
    require_labels: bool = True  # False: a pool whose unlabelled images have no label file (SemiVL)

    def __post_init__(self) -> None:
        if not (len(self.image_paths) == len(self.label_paths) == len(self.sample_keys)):
            raise DataError("image, label and key lists differ in length")
        if not self.sample_keys:
            raise DataError("dataset holds no samples")
        check_files_exist(self.image_paths, "image file")
        if self.require_labels:
            check_files_exist(self.label_paths, "label file")

    @property
    def keys(self) -> list[str]:
        return list(self.sample_keys)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.sample_keys)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        image = read_image(self.image_paths[index])
        label = read_label(self.label_paths[index])
        if label.shape != image.shape[:2]:
            raise DataError(f"label {self.label_paths[index]} is {label.shape[1]}x{label.shape[0]} "
                            f"but its image is {image.shape[1]}x{image.shape[0]}")
        if self.label_transform is not None:
            label = self.label_transform(label)
        return self.sample_keys[index], image, clean_label(label, len(self.class_names),
                                                            self.ignore_index)


def clean_label(label: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Return a uint8 label map where every value >= num_classes (or < 0) becomes ignore."""
    label = np.asarray(label)
    out_of_range = (label < 0) | (label >= num_classes)
    cleaned = label.astype(np.uint8) if label.dtype != np.uint8 else label.copy()
    cleaned[out_of_range] = ignore_index
    return cleaned
