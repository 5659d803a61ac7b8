"""Seen / unseen class splits as data files (``sseg/tagclip/splits/<name>.json``, or any JSON path)::

    {"description": "...", "dataset": "voc", "ignore": ["background"], "unseen": ["sheep", ...]}

Seen = the dataset's classes minus ``unseen`` minus ``ignore`` (classes neither trained nor evaluated,
e.g. VOC's background in the paper's 20-class setting). Names match the dataset's class names
case-insensitively. A split that names a class the dataset lacks, or leaves the seen or the unseen set
empty, is a one-line ConfigError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from sseg.errors import ConfigError

SPLIT_DIR = Path(__file__).resolve().parent / "splits"


@dataclass(frozen=True)
class ClassSplit:
    name: str
    class_names: tuple[str, ...]  # the dataset's classes, in label order
    seen: tuple[int, ...]  # class ids
    unseen: tuple[int, ...]
    ignored: tuple[int, ...] = ()

    @property
    def seen_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[i] for i in self.seen)

    @property
    def unseen_names(self) -> tuple[str, ...]:
        return tuple(self.class_names[i] for i in self.unseen)

    @property
    def evaluated(self) -> tuple[int, ...]:
        """Every class that is not ignored, in label order."""
        return tuple(i for i in range(len(self.class_names)) if i not in set(self.ignored))

    def all_seen(self) -> "ClassSplit":
        """The same classes, all trained on (the fully supervised upper bound)."""
        return replace(self, name=f"{self.name}+all", seen=self.evaluated, unseen=())


def builtin_splits() -> list[str]:
    return sorted(p.stem for p in SPLIT_DIR.glob("*.json"))


def read_split_spec(split: str) -> tuple[str, dict[str, Any]]:
    """(name, spec) of a built-in split name or a JSON file path."""
    path = SPLIT_DIR / f"{split}.json"
    if not path.is_file():
        path = Path(split)
        if path.suffix != ".json" or not path.is_file():
            raise ConfigError(f"unknown split {split!r}: neither a built-in ({', '.join(builtin_splits())}) "
                              f"nor a JSON file")
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read split file {path}: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("unseen"), list):
        raise ConfigError(f"split file {path} needs an 'unseen' list of class names")
    for key in ("unseen", "ignore"):
        if not all(isinstance(n, str) for n in spec.get(key, [])):
            raise ConfigError(f"split file {path}: '{key}' must list class names (strings)")
    return path.stem, spec


def resolve_split(split: str | dict[str, Any], class_names: Sequence[str], name: str | None = None) -> ClassSplit:
    """The split (a built-in name, a JSON path, or an already-read spec) over ``class_names``."""
    if isinstance(split, str):
        name, spec = read_split_spec(split)
    else:
        spec, name = split, name or "custom"
    index = {n.lower(): i for i, n in enumerate(class_names)}

    def ids(key: str) -> list[int]:
        out = []
        for n in spec.get(key, []):
            if n.lower() not in index:
                raise ConfigError(f"split {name!r} names class {n!r} ({key}), which the dataset does not have "
                                  f"(its classes: {', '.join(class_names)})")
            if index[n.lower()] in out:
                raise ConfigError(f"split {name!r} lists class {n!r} twice in '{key}'")
            out.append(index[n.lower()])
        return out

    unseen, ignored = ids("unseen"), ids("ignore")
    both = set(unseen) & set(ignored)
    if both:
        raise ConfigError(f"split {name!r}: class {class_names[min(both)]!r} is both unseen and ignored")
    if not unseen:
        raise ConfigError(f"split {name!r} has no unseen class")
    seen = [i for i in range(len(class_names)) if i not in set(unseen) | set(ignored)]
    if not seen:
        raise ConfigError(f"split {name!r} leaves no seen class")
    return ClassSplit(name, tuple(class_names), tuple(seen), tuple(sorted(unseen)), tuple(sorted(ignored)))
