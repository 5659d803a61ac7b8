"""Labelled / unlabelled splits, the UniMatch / SemiVL convention: a folder with ``labeled.txt`` and
optionally ``unlabeled.txt``, one image per line — an id (``2007_000033``) or UniMatch's
``JPEGImages/<id>.jpg SegmentationClass/<id>.png`` (the id is taken from the first path). Without
``unlabeled.txt`` the unlabelled set is the training pool minus the labelled list (how UniMatch's own
files are made). UniMatch's benchmark lists ship in ``sseg/data/splits`` (its README says which)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sseg.errors import ConfigError, DataError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "splits"


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


def read_split(directory: str | Path, pool: Sequence[str] | None = None, name: str | None = None) -> Split:
    """The split in ``directory``; without ``unlabeled.txt``, unlabelled = ``pool`` minus the labelled
    images (in pool order)."""
    directory = Path(directory)
    labeled = read_split_file(directory / "labeled.txt")
    what = f"split {name}" if name else f"split files {directory}"
    if (directory / "unlabeled.txt").is_file() or pool is None:
        unlabeled = read_split_file(directory / "unlabeled.txt")
    else:
        chosen = set(labeled)
        unlabeled = [i for i in pool if i not in chosen]
        if not unlabeled:
            raise DataError(f"{what}: the pool of {len(pool)} images holds no image outside the labelled list")
        what += f" (unlabelled: the {len(pool)}-image pool minus the labelled)"
    both = set(labeled) & set(unlabeled)
    if both:
        raise DataError(f"split {directory}: {len(both)} image(s) are both labelled and unlabelled, "
                        f"e.g. {sorted(both)[0]}")
    return Split(tuple(labeled), tuple(unlabeled), True, what)


def shipped_splits(dataset: str) -> dict[str, Path]:
    """The benchmark splits shipped for ``dataset`` (our dataset name): split name → folder."""
    root = SHIPPED_DIR / dataset
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if (d / "labeled.txt").is_file()}


def shipped_pool(dataset: str, split: str) -> Path | None:
    """A shipped list of the ids of a reader split (VOC's ``train_aug``), or None."""
    path = SHIPPED_DIR / dataset / f"{split}.txt"
    return path if path.is_file() else None


def resolve_split(dataset: str, split_dir: str | None, num_labeled: int, pool: Sequence[str], seed: int) -> Split:
    """The run's split: ``split_dir`` (a folder, or a shipped split ``<dataset>/<name>`` such as
    ``voc/92``); without it the shipped benchmark split of ``num_labeled`` images if there is one,
    else a seeded random split of the pool."""
    if split_dir:
        if Path(split_dir).is_dir():
            return read_split(split_dir, pool)
        owner, _, name = str(split_dir).strip("/").rpartition("/")
        shipped = shipped_splits(owner) if owner else {}
        if name not in shipped:
            known = [f"{d}/{n}" for d in sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir())
                     for n in shipped_splits(d)]
            raise ConfigError(f"data.split_dir '{split_dir}' is neither a folder nor a shipped split "
                              f"({', '.join(known)})")
        return read_split(shipped[name], pool, f"{owner}/{name} (UniMatch)")
    for name, directory in shipped_splits(dataset).items():
        labeled = read_split_file(directory / "labeled.txt")
        if len(labeled) == num_labeled:
            return read_split(directory, pool, f"{dataset}/{name} (UniMatch)")
    return random_split(pool, num_labeled, seed)


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
