"""Labelled / unlabelled split files, the UniMatch / SemiVL convention:
``splits/<dataset>/<n>/labeled.txt`` and ``unlabeled.txt``, one image per line — an id (``2007_000033``)
or UniMatch's ``JPEGImages/<id>.jpg SegmentationClass/<id>.png`` (the id is taken from the first path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sseg.errors import DataError


@dataclass(frozen=True)
class Split:
    labeled: tuple[str, ...]
    unlabeled: tuple[str, ...]
    official: bool  # read from split files (True) or drawn at random here (False)
    description: str


def _line_id(line: str) -> str:
    first = line.split()[0]
    return Path(first).stem


def read_split_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    ids = [_line_id(line) for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split file is empty: {path}")
    if len(set(ids)) != len(ids):
        raise DataError(f"split file lists an image twice: {path}")
    return ids


def read_split(directory: str | Path) -> Split:
    directory = Path(directory)
    labeled = read_split_file(directory / "labeled.txt")
    unlabeled = read_split_file(directory / "unlabeled.txt")
    both = set(labeled) & set(unlabeled)
    if both:
        raise DataError(f"split {directory}: {len(both)} image(s) are both labelled and unlabelled, "
                        f"e.g. {sorted(both)[0]}")
    return Split(tuple(labeled), tuple(unlabeled), True, f"split files {directory}")


def random_split(ids: Sequence[str], num_labeled: int, seed: int) -> Split:
    """A seeded random split of ``ids``: ``num_labeled`` labelled, the rest unlabelled."""
    ids = list(ids)
    if not 0 < num_labeled < len(ids):
        raise DataError(f"cannot draw {num_labeled} labelled images from a pool of {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    labeled = sorted(ids[i] for i in order[:num_labeled])
    unlabeled = sorted(ids[i] for i in order[num_labeled:])
    return Split(tuple(labeled), tuple(unlabeled), False,
                 f"random split of {len(ids)} images, {num_labeled} labelled, seed {seed} (not an official split)")


def write_split(split: Split, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "labeled.txt").write_text("".join(f"{i}\n" for i in split.labeled))
    (directory / "unlabeled.txt").write_text("".join(f"{i}\n" for i in split.unlabeled))
    return directory


def check_split(split: Split, available: Sequence[str], where: str) -> None:
    """Every id of the split names an image of the dataset (one-line error naming the first missing)."""
    have = set(available)
    for kind, ids in (("labelled", split.labeled), ("unlabelled", split.unlabeled)):
        missing = [i for i in ids if i not in have]
        if missing:
            raise DataError(f"{split.description}: {len(missing)} {kind} image(s) not in {where}, "
                            f"e.g. '{missing[0]}'")
