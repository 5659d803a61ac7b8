"""Vocabulary of the procedural world: class ids, caption synonyms, named colours, verbs.

Every colour name is shared by several classes on purpose (a red ball, a red car, a red flower, a
red sunset sky...), so a class cannot be told from its colour; its shape and texture tell it. The
thing colours depend on the world preset (:data:`THING_COLOURS`): ``v1`` draws from wide palettes,
``v2`` from class-typical ones (each colour still shared by 3-4 things), ``debug`` gives every thing
one colour of its own.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

THING_CLASSES: tuple[str, ...] = (
    "ball", "box", "tree", "car", "house", "fish", "bird", "flower", "star", "cup",
)
STUFF_CLASSES: tuple[str, ...] = ("sky", "grass", "water", "sand")
# Fixed id order: things first, then stuff. Every pixel belongs to one of these (no background).
WORLD_CLASSES: tuple[str, ...] = THING_CLASSES + STUFF_CLASSES
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(WORLD_CLASSES)}
GROUND_CLASSES: tuple[str, ...] = ("grass", "water", "sand")

# Single words only (mention parsing is word-based); the canonical name comes first and is the one
# captions use most often (see CANONICAL_NAME_PROBABILITY).
CLASS_SYNONYMS: dict[str, tuple[str, ...]] = {
    "ball": ("ball", "football", "sphere"),
    "box": ("box", "crate", "package", "carton"),
    "tree": ("tree", "pine", "fir"),
    "car": ("car", "automobile", "auto"),
    "house": ("house", "cottage", "hut", "home"),
    "fish": ("fish", "goldfish", "trout"),
    "bird": ("bird", "sparrow", "seagull"),
    "flower": ("flower", "blossom", "daisy"),
    "star": ("star", "starburst"),
    "cup": ("cup", "mug", "teacup"),
    "sky": ("sky", "clouds"),
    "grass": ("grass", "lawn", "meadow", "field"),
    "water": ("water", "lake", "sea", "pond"),
    "sand": ("sand", "beach", "desert", "dunes"),
}
CANONICAL_NAME_PROBABILITY = 0.6

_UNCOUNTABLE = frozenset({"fish", "goldfish", "trout", "grass", "water", "sand", "clouds", "dunes"})


def plural(noun: str) -> str:
    """English plural of a synonym (only the rules this vocabulary needs)."""
    if noun in _UNCOUNTABLE:
        return noun
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


# Named colours (RGB before jitter). Caption adjectives use these names.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 45, 40),
    "orange": (228, 128, 38),
    "yellow": (228, 205, 60),
    "green": (62, 155, 58),
    "blue": (62, 102, 205),
    "purple": (128, 62, 168),
    "pink": (228, 132, 172),
    "brown": (128, 84, 46),
    "white": (232, 232, 228),
    "gray": (128, 128, 132),
    "black": (38, 36, 40),
}

# Which colours each class may take (things: preset v1, see THING_COLOURS); every colour is used by
# at least four classes.
CLASS_COLOURS: dict[str, tuple[str, ...]] = {
    "ball": ("red", "blue", "yellow", "green", "white", "orange", "pink"),
    "box": ("brown", "red", "blue", "gray", "white", "yellow"),
    "tree": ("green", "orange", "red", "yellow", "white"),
    "car": ("red", "blue", "black", "white", "gray", "yellow", "green"),
    "house": ("white", "red", "brown", "yellow", "gray", "blue"),
    "fish": ("orange", "yellow", "blue", "gray", "red", "pink"),
    "bird": ("black", "white", "blue", "brown", "red", "yellow"),
    "flower": ("red", "yellow", "pink", "purple", "white", "orange", "blue"),
    "star": ("yellow", "orange", "white", "red", "purple"),
    "cup": ("white", "red", "blue", "green", "black", "pink"),
    "sky": ("blue", "gray", "orange", "pink", "white"),
    "grass": ("green", "yellow", "brown"),
    "water": ("blue", "green", "gray"),
    "sand": ("yellow", "orange", "brown", "white"),
}

Preset = Literal["v1", "v2", "debug"]
PRESETS: tuple[str, ...] = ("v1", "v2", "debug")

# Thing colours per preset. v1 is the original wide palette (CLASS_COLOURS); v2 is class-typical
# (each colour shared by 3-4 things, so colour narrows the class but does not name it); debug gives
# each thing a colour no other thing has (a sanity preset: colour alone names the thing).
THING_COLOURS: dict[str, dict[str, tuple[str, ...]]] = {
    "v1": {name: CLASS_COLOURS[name] for name in THING_CLASSES},
    "v2": {
        "ball": ("red", "blue", "pink", "white"),
        "box": ("brown", "orange", "gray"),
        "tree": ("green", "orange", "brown"),
        "car": ("red", "blue", "black", "green"),
        "house": ("white", "yellow", "gray"),
        "fish": ("orange", "yellow", "blue", "pink"),
        "bird": ("black", "brown", "gray"),
        "flower": ("pink", "purple", "red", "yellow"),
        "star": ("yellow", "white", "purple", "orange"),
        "cup": ("white", "green", "purple", "black"),
    },
    "debug": {
        "ball": ("red",), "box": ("orange",), "tree": ("green",), "car": ("blue",), "house": ("yellow",),
        "fish": ("purple",), "bird": ("black",), "flower": ("pink",), "star": ("white",), "cup": ("brown",),
    },
}

# Caption adjectives for stuff, by the colour it was drawn with.
STUFF_ADJECTIVES: dict[str, dict[str, tuple[str, ...]]] = {
    "sky": {"blue": ("blue", "clear"), "gray": ("gray", "grey", "cloudy", "overcast"),
            "orange": ("orange", "evening"), "pink": ("pink", "evening"), "white": ("white", "hazy")},
    "grass": {"green": ("green", "lush"), "yellow": ("yellow", "dry"), "brown": ("brown", "dry")},
    "water": {"blue": ("blue", "calm"), "green": ("green", "murky"), "gray": ("gray", "dark")},
    "sand": {"yellow": ("yellow", "golden"), "orange": ("orange", "warm"), "brown": ("brown", "wet"),
             "white": ("white", "pale")},
}

# (third person singular, plural, participle) per thing class.
CLASS_VERBS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "ball": (("rolls", "roll", "rolling"), ("lies", "lie", "lying"), ("bounces", "bounce", "bouncing")),
    "box": (("sits", "sit", "sitting"), ("lies", "lie", "lying"), ("stands", "stand", "standing")),
    "tree": (("stands", "stand", "standing"), ("grows", "grow", "growing")),
    "car": (("drives", "drive", "driving"), ("is parked", "are parked", "parked")),
    "house": (("stands", "stand", "standing"), ("sits", "sit", "sitting")),
    "fish": (("swims", "swim", "swimming"), ("jumps", "jump", "jumping")),
    "bird": (("flies", "fly", "flying"), ("sits", "sit", "sitting"), ("perches", "perch", "perching")),
    "flower": (("grows", "grow", "growing"), ("blooms", "bloom", "blooming")),
    "star": (("shines", "shine", "shining"), ("floats", "float", "floating"), ("glows", "glow", "glowing")),
    "cup": (("sits", "sit", "sitting"), ("stands", "stand", "standing")),
}

_WORD = re.compile(r"[a-z]+")


@functools.lru_cache(maxsize=1)
def _word_to_class() -> dict[str, str]:
    table: dict[str, str] = {}
    for name, synonyms in CLASS_SYNONYMS.items():
        for word in synonyms:
            table[word] = name
            table[plural(word)] = name
    table["cloud"] = "sky"
    return table


def mentioned_classes(caption: str) -> set[str]:
    """World classes a caption names, found through CLASS_SYNONYMS (singular or plural)."""
    table = _word_to_class()
    return {table[w] for w in _WORD.findall(caption.lower()) if w in table}
