"""Prompt templates and class definitions for open-vocabulary inference.

A class may be described by several *concepts* (SemiVL's class definitions: "chair" =
{"chair", "armchair", "deckchair"}); every concept is encoded with every template and the class
score is the best of its concepts (see :mod:`sseg.inference`).

Class specs accepted by :func:`parse_class_definitions`:

* ``"cat,dog,grass"`` — comma-separated names;
* ``"person;people;man"`` inside a spec — one class named "person" with three concepts;
* a list of such strings (or of :class:`ClassDefinition`);
* a mapping ``{name: [concepts...] | "a;b" | None}``;
* a path to a ``.yaml`` / ``.yml`` / ``.json`` file holding a list or a mapping as above.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sseg.data.readers.class_names import CLASS_NAMES
from sseg.errors import ConfigError, first_line

SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)

# The 7 templates CLIP's prompt-engineering notebook selected out of its 80 ImageNet templates.
CLIP_SELECTED_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# Default ensemble: a compact subset of CLIP's ImageNet templates (photo-like phrasings).
CLIP_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a cropped photo of the {}.",
    "a blurry photo of a {}.",
    "itap of a {}.",
    "art of the {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "clip": CLIP_TEMPLATES,
    "clip7": CLIP_SELECTED_TEMPLATES,
    "single": SINGLE_TEMPLATE,
    "name": ("{}",),  # the bare concept, e.g. for a model trained on short captions
}


def resolve_templates(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A template-set name (``clip``, ``clip7``, ``single``, ``name``), one template, or a list."""
    if isinstance(spec, str):
        if spec in TEMPLATE_SETS:
            return TEMPLATE_SETS[spec]
        if "{}" not in spec:
            raise ConfigError(f"unknown template set '{spec}' (known: {', '.join(TEMPLATE_SETS)}; "
                              "or give templates containing '{}')")
        spec = [spec]
    templates = tuple(str(t) for t in spec)
    if not templates:
        raise ConfigError("the prompt template list is empty")
    for template in templates:
        if template.count("{}") != 1:
            raise ConfigError(f"prompt template {template!r} must contain '{{}}' exactly once")
    if len(set(templates)) != len(templates):
        raise ConfigError("the prompt template list repeats a template")
    return templates


@dataclass(frozen=True)
class ClassDefinition:
    """A class name and the concepts (text phrases) whose best match scores the class."""

    name: str
    concepts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("a class name is empty")
        if not self.concepts or any(not c.strip() for c in self.concepts):
            raise ConfigError(f"class '{self.name}' has an empty concept")


def _split_concepts(text: str) -> list[str]:
    return [c.strip() for c in text.split(";") if c.strip()]


def _from_item(item: Any) -> ClassDefinition:
    if isinstance(item, ClassDefinition):
        return item
    if isinstance(item, str):
        concepts = _split_concepts(item)
        if not concepts:
            raise ConfigError(f"empty class entry {item!r}")
        return ClassDefinition(concepts[0], tuple(concepts))
    if isinstance(item, Mapping) and len(item) == 1:
        return _from_pair(*next(iter(item.items())))
    raise ConfigError(f"cannot read a class definition from {item!r}")


def _from_pair(name: Any, concepts: Any) -> ClassDefinition:
    name = str(name).strip()
    if concepts is None:
        return ClassDefinition(name, (name,))
    if isinstance(concepts, str):
        parts = _split_concepts(concepts)
    elif isinstance(concepts, Sequence):
        parts = [str(c).strip() for c in concepts if str(c).strip()]
    else:
        raise ConfigError(f"concepts of class '{name}' must be a list or a ';'-separated string")
    return ClassDefinition(name, tuple(parts) or (name,))


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"class definition file not found: {path}")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"class definition file {path} cannot be parsed: {first_line(exc)}") from None


def parse_class_definitions(spec: Any) -> list[ClassDefinition]:
    """Class specs (see the module docstring) → definitions; empty or duplicated → ConfigError."""
    if isinstance(spec, Path) or (isinstance(spec, str)
                                  and spec.strip().lower().endswith((".yaml", ".yml", ".json"))):
        spec = _load_file(Path(spec))
    if isinstance(spec, str):
        items: list[ClassDefinition] = [_from_item(part) for part in spec.split(",") if part.strip()]
    elif isinstance(spec, Mapping):
        items = [_from_pair(name, concepts) for name, concepts in spec.items()]
    elif isinstance(spec, Sequence):
        items = [_from_item(item) for item in spec]
    elif spec is None:
        items = []
    else:
        raise ConfigError(f"cannot read class definitions from a {type(spec).__name__}")
    if not items:
        raise ConfigError("the class list is empty")
    seen_names: set[str] = set()
    owner_of_concept: dict[str, str] = {}
    for definition in items:
        key = definition.name.lower()
        if key in seen_names:
            raise ConfigError(f"class '{definition.name}' is listed twice")
        seen_names.add(key)
        for concept in definition.concepts:
            other = owner_of_concept.setdefault(concept.lower(), definition.name)
            if other != definition.name:
                raise ConfigError(f"concept '{concept}' belongs to both '{other}' and "
                                  f"'{definition.name}'")
    return items


# SemiVL supplement, tables S2 (Pascal VOC) and S3 (Cityscapes): concepts from the annotation
# guidelines. VOC's background concepts include the Pascal Context stuff classes.
VOC_CONCEPTS: dict[str, tuple[str, ...]] = {
    "background": (
        "background", "bed", "building", "cabinet", "ceiling", "curtain", "door", "fence",
        "floor", "grass", "ground", "mountain", "road", "rock", "shelves", "sidewalk", "sky",
        "snow", "tree", "wall", "water", "window", "hang glider", "helicopter", "jet ski",
        "go-cart", "tractor", "emergency vehicle", "lorry", "truck", "lion", "stool", "bench",
        "wheelchair", "coffee table", "desk", "side table", "picnic bench", "wolve",
        "flowers in a vase", "goat", "tram", "laptop", "advertising display",
        "vehicle interior"),
    "aeroplane": ("aeroplane", "airplane", "glider"),
    "bicycle": ("bicycle", "tricycle", "unicycle"),
    "bird": ("bird",),
    "boat": ("boat", "ship", "rowing boat", "pedalo"),
    "bottle": ("bottle", "plastic bottle", "glass bottle", "feeding bottle"),
    "bus": ("bus", "minibus"),
    "car": ("car", "van", "large family car", "realistic toy car"),
    "cat": ("cat", "domestic cat"),
    "chair": ("chair", "armchair", "deckchair"),
    "cow": ("cow",),
    "dining table": ("dining table", "table for eating at"),
    "dog": ("dog", "domestic dog"),
    "horse": ("horse", "pony", "donkey", "mule"),
    "motorbike": ("motorbike", "moped", "scooter", "sidecar"),
    "person": ("person", "people", "baby", "face"),
    "potted plant": ("potted plant", "indoor plant in a pot", "outdoor plant in a pot"),
    "sheep": ("sheep",),
    "sofa": ("sofa",),
    "train": ("train", "train carriage"),
    "tv monitor": ("tv", "monitor", "standalone screen"),
}

CITYSCAPES_CONCEPTS: dict[str, tuple[str, ...]] = {
    "road": ("road", "street", "parking space"),
    "sidewalk": ("sidewalk",),
    "building": ("building", "skyscaper", "house", "bus stop building", "garage", "car port",
                 "scaffolding"),
    "wall": ("individual standing wall, which is not part of a building",),
    "fence": ("fence", "hole in fence"),
    "pole": ("pole", "sign pole", "traffic light pole"),
    "traffic light": ("traffic light",),
    "traffic sign": ("traffic sign", "parking sign", "direction sign"),
    "vegetation": ("vegetation", "tree", "hedge"),
    "terrain": ("terrain", "grass", "soil", "sand"),
    "sky": ("sky",),
    "person": ("person", "pedestrian", "walking person", "standing person",
               "person sitting on the ground", "person sitting on a bench",
               "person sitting on a chair"),
    "rider": ("rider", "cyclist", "motorcyclist"),
    "car": ("car", "jeep", "SUV", "van"),
    "truck": ("truck", "box truck", "pickup truck", "truck trailer"),
    "bus": ("bus",),
    "train": ("train", "tram"),
    "motorcycle": ("motorcycle", "moped", "scooter"),
    "bicycle": ("bicycle",),
}

_DATASET_CONCEPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "voc": VOC_CONCEPTS, "cityscapes": CITYSCAPES_CONCEPTS,
}


def dataset_class_definitions(dataset: str, use_concepts: bool = False,
                              include_background: bool = True) -> list[ClassDefinition]:
    """The dataset's classes in label order, with SemiVL's concepts where known (VOC, Cityscapes)."""
    if dataset not in CLASS_NAMES:
        raise ConfigError(f"no built-in class list for dataset '{dataset}' "
                          f"(known: {', '.join(CLASS_NAMES)})")
    concepts = _DATASET_CONCEPTS.get(dataset, {}) if use_concepts else {}
    return [ClassDefinition(name, concepts.get(name, (name,)))
            for name in CLASS_NAMES[dataset]
            if include_background or name != "background"]


def foreground(definitions: Sequence[ClassDefinition]) -> list[ClassDefinition]:
    """Drop the class called "background" (for background by thresholding)."""
    return [d for d in definitions if d.name.lower() != "background"]
