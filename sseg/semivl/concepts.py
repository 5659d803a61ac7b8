"""Class definitions (SemiVL Sec. 3.6): each class is a list of concepts; a class scores the max over
its concepts. Shipped as data files (``sseg/semivl/concepts/<name>.yaml``): ``voc`` (supplement table
S2, background with the Pascal Context names), ``cityscapes`` (table S3), ``world`` (the procedural
world's caption synonyms)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from sseg.errors import ConfigError, first_line
from sseg.prompts import ClassDefinition, parse_class_definitions

CONCEPT_DIR = Path(__file__).resolve().parent / "concepts"


def builtin_concept_files() -> list[str]:
    return sorted(p.stem for p in CONCEPT_DIR.glob("*.yaml"))


def read_concept_file(source: str | Path) -> dict[str, list[str]]:
    """``source``: a built-in name (voc, cityscapes, world) or a YAML/JSON file mapping class → concepts."""
    path = CONCEPT_DIR / f"{source}.yaml" if str(source) in builtin_concept_files() else Path(source)
    if not path.is_file():
        raise ConfigError(f"class definition file not found: {source} (built-in: {', '.join(builtin_concept_files())})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"class definition file {path} cannot be parsed: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"class definition file {path} must map class names to concept lists")
    out = {}
    for name, concepts in data.items():
        if isinstance(concepts, str):
            concepts = [concepts]
        if not isinstance(concepts, list) or not concepts:
            raise ConfigError(f"class definition file {path}: class '{name}' needs a non-empty concept list")
        out[str(name)] = [str(c) for c in concepts]
    return out


def class_definitions(class_names: Sequence[str], source: str | Path | None) -> list[ClassDefinition]:
    """Definitions for ``class_names`` in their order: ``source`` None → each class is its own single
    concept; otherwise the concept file (a class it does not list keeps its name; a class it names that
    is not in ``class_names`` is an error)."""
    names = list(class_names)
    if source is None:
        return parse_class_definitions({n: [n] for n in names})
    table = read_concept_file(source)
    known = {n.lower(): n for n in names}
    unknown = [c for c in table if c.lower() not in known]
    if unknown:
        raise ConfigError(f"class definition file {source} names unknown class(es) {unknown} "
                          f"(the dataset's classes: {', '.join(names)})")
    lowered = {c.lower(): v for c, v in table.items()}
    return parse_class_definitions({n: lowered.get(n.lower(), [n]) for n in names})


def as_mapping(definitions: Sequence[ClassDefinition]) -> dict[str, list[str]]:
    """``{class: [concepts]}``: the form :func:`sseg.prompts.parse_class_definitions` reads back."""
    return {d.name: list(d.concepts) for d in definitions}


def decoder_and_guide_classes(class_names: Sequence[str], source: str | Path | None,
                              use: str | bool) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(what the decoder and the evaluation see, what the dense VL guidance sees), each ``{class:
    [concepts]}``. ``use``: "guidance" (SemiVL's paper and public code: the guidance takes the concept
    lists, the decoder the class names), "decoder" (both take the concept lists), False / no ``source``
    (both take the names)."""
    names = as_mapping(class_definitions(class_names, None))
    if not use or source is None:
        return names, names
    concepts = as_mapping(class_definitions(class_names, source))
    return (names if use == "guidance" else concepts), concepts
