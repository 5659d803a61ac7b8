"""Captions for world scenes: varied templates, synonyms, counts, adjectives, web-like noise.

A clean caption names every class present in the image (things with counts, stuff as places).
With probability ``noise_rate`` the caption is noisy instead: it omits one present class or names
one class that is absent, the way web alt-texts miss or invent things.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from sseg.world.drawing import Scene, ThingInstance
from sseg.world.render import preset_appearances
from sseg.world.vocab import (
    CANONICAL_NAME_PROBABILITY,
    CLASS_COLOURS,
    CLASS_SYNONYMS,
    CLASS_VERBS,
    GROUND_CLASSES,
    STUFF_ADJECTIVES,
    THING_CLASSES,
    WORLD_CLASSES,
    plural,
)

CaptionNoise = Literal["none", "omit", "add"]

_COUNT_WORDS = {2: ("two", "two", "2", "a pair of"), 3: ("three", "three", "3", "several"),
                4: ("four", "four", "4", "several")}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "big": ("big", "large", "huge")}
_GROUND_PREPOSITIONS = {"grass": ("on", "in", "across"), "water": ("in", "on", "across"),
                        "sand": ("on", "in", "across")}
_NEAR = ("near", "by", "next to", "beside")
_SKY_PREPOSITIONS = ("under", "beneath", "against")
_MASS_NOUNS = frozenset({"grass", "water", "sand", "clouds", "dunes"})
_PREFIXES = ("photo of ", "image: ", "stock photo - ", "closeup of ", "nice shot: ")
_SUFFIXES = (" - stock image", " #nature", " hd wallpaper", " | free download", " (2019)", " lol")


@dataclass(frozen=True)
class Caption:
    text: str
    mentioned: tuple[str, ...]  # classes the caption names, in class-id order
    noise: CaptionNoise


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _synonym(rng: np.random.Generator, name: str) -> str:
    synonyms = CLASS_SYNONYMS[name]
    if len(synonyms) == 1 or rng.random() < CANONICAL_NAME_PROBABILITY:
        return synonyms[0]
    return _pick(rng, synonyms[1:])


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _thing_phrase(rng: np.random.Generator, name: str, instances: list[ThingInstance]) -> tuple[str, bool]:
    """Noun phrase for the visible instances of one class, and whether it is plural."""
    count = len(instances)
    noun = _synonym(rng, name)
    words: list[str] = []
    sizes = {t.size_word for t in instances}
    if len(sizes) == 1 and None not in sizes and rng.random() < 0.5:
        words.append(_pick(rng, _SIZE_WORDS[sizes.pop()]))
    colours = {t.colour for t in instances}
    if len(colours) == 1 and rng.random() < 0.6:
        words.append(colours.pop())
    elif len(colours) > 1 and rng.random() < 0.2:
        words.append("colorful")
    if count == 1:
        words.append(noun)
        first = words[0]
        return " ".join([_article(first)] + words), False
    words.append(plural(noun))
    return " ".join([_pick(rng, _COUNT_WORDS[min(count, 4)])] + words), True


def _join(parts: list[str], rng: np.random.Generator) -> str:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and rng.random() < 0.25:
        return f"{parts[0]} with {parts[1]}"
    return ", ".join(parts[:-1]) + (" and " if rng.random() < 0.85 else ", ") + parts[-1]


def _stuff_noun_phrase(rng: np.random.Generator, name: str, colour: str, article: bool) -> str:
    noun = _synonym(rng, name)
    adjective = _pick(rng, STUFF_ADJECTIVES[name][colour]) if rng.random() < 0.45 else None
    words = ([adjective] if adjective else []) + [noun]
    if not article:
        return " ".join(words)
    if noun in _MASS_NOUNS:
        return " ".join(words) if adjective else "the " + noun
    return f"{_article(words[0])} {' '.join(words)}"


def _sky_phrase(rng: np.random.Generator, colour: str) -> str:
    noun = "sky" if colour == "blue" else _synonym(rng, "sky")  # no "blue clouds"
    adjective = None
    if rng.random() < 0.6:  # clouds take their colour; a sky also "clear", "overcast", ...
        adjective = colour if noun == "clouds" else _pick(rng, STUFF_ADJECTIVES["sky"][colour])
    words = ([adjective] if adjective else []) + [noun]
    body = " ".join(words) if noun in _MASS_NOUNS else f"{_article(words[0])} {' '.join(words)}"
    return f"{_pick(rng, _SKY_PREPOSITIONS)} {body}"


def _ground_phrase(rng: np.random.Generator, name: str, colour: str, primary: bool) -> str:
    noun = _synonym(rng, name)
    adjective = _pick(rng, STUFF_ADJECTIVES[name][colour]) if rng.random() < 0.3 else None
    words = " ".join(([adjective] if adjective else []) + [noun])
    preposition = _pick(rng, _GROUND_PREPOSITIONS[name]) if primary else _pick(rng, _NEAR)
    return f"{preposition} the {words}"


def _place_phrases(
    rng: np.random.Generator, grounds: list[str], sky: bool, colours: dict[str, str]
) -> tuple[list[str], str | None]:
    """Ground phrases (primary first) and the sky phrase."""
    ground_phrases = [_ground_phrase(rng, g, colours[g], i == 0) for i, g in enumerate(grounds)]
    return ground_phrases, (_sky_phrase(rng, colours["sky"]) if sky else None)


def _things_caption(
    rng: np.random.Generator,
    groups: list[tuple[str, list[ThingInstance]]],
    grounds: list[str],
    sky: bool,
    colours: dict[str, str],
) -> str:
    phrases = [_thing_phrase(rng, name, instances) for name, instances in groups]
    subject = _join([p for p, _ in phrases], rng)
    is_plural = len(phrases) > 1 or phrases[0][1]
    ground_phrases, sky_phrase = _place_phrases(rng, grounds, sky, colours)
    place = " ".join(ground_phrases + ([sky_phrase] if sky_phrase else []))
    template = int(rng.integers(7))
    if template == 0 and len(groups) == 1:  # "a red ball rolls on the grass"
        verb = _pick(rng, [v[1] if is_plural else v[0] for v in CLASS_VERBS[groups[0][0]]])
        return f"{subject} {verb} {place}".strip()
    if template == 1 and len(groups) == 1:  # "two balls lying in the sand under a blue sky"
        verb = _pick(rng, [v[2] for v in CLASS_VERBS[groups[0][0]]])
        return f"{subject} {verb} {place}".strip()
    if template == 2:
        return f"there {'are' if is_plural else 'is'} {subject} {place}".strip()
    if template == 3 and sky_phrase:  # sky first: "under a gray sky, a house and a tree"
        rest = " ".join(ground_phrases)
        return f"{sky_phrase}, {subject} {rest}".strip()
    if template == 4 and grounds:  # "a green meadow with a house and two trees"
        scene_np = _stuff_noun_phrase(rng, grounds[0], colours[grounds[0]], article=True)
        rest = " ".join(ground_phrases[1:] + ([sky_phrase] if sky_phrase else []))
        return f"{scene_np} with {subject} {rest}".strip()
    if template == 5:
        return f"{_pick(rng, ('picture of', 'view of', 'a scene with'))} {subject} {place}".strip()
    return f"{subject} {place}".strip()


def _stuff_caption(rng: np.random.Generator, grounds: list[str], sky: bool, colours: dict[str, str]) -> str:
    if grounds:
        head = _stuff_noun_phrase(rng, grounds[0], colours[grounds[0]], article=True)
        ground_phrases, sky_phrase = _place_phrases(rng, grounds, sky, colours)
        tail = ground_phrases[1:] + ([sky_phrase] if sky_phrase else [])
        lead = _pick(rng, ("", "empty ", "view of ")) if not head.startswith(("a ", "an ", "the ")) else ""
        return " ".join([lead + head] + tail)
    adjective = _pick(rng, STUFF_ADJECTIVES["sky"][colours["sky"]])
    return f"{_pick(rng, ('just', 'only', 'a view of'))} {_article(adjective)} {adjective} sky"


def _decorate(rng: np.random.Generator, text: str, plain: bool) -> str:
    """Web-like surface noise: prefixes, tags, casing, punctuation."""
    if plain and rng.random() < 0.12:
        text = _pick(rng, _PREFIXES) + text
    if rng.random() < 0.08:
        text = text + _pick(rng, _SUFFIXES)
    style = rng.random()
    if style < 0.5:
        return text[0].upper() + text[1:] + ("." if text[-1].isalnum() else "")
    if style < 0.9:
        return text
    return text.title()


def compose_caption(rng: np.random.Generator, scene: Scene, min_pixels: int, noise_rate: float) -> Caption:
    """Caption for ``scene``; classes count as present when they cover at least ``min_pixels``."""
    present = [n for i, n in enumerate(WORLD_CLASSES) if scene.class_pixels[i] >= min_pixels]
    absent = [n for i, n in enumerate(WORLD_CLASSES) if scene.class_pixels[i] == 0]
    colours = dict(scene.stuff_colours)
    mentioned = list(present)
    noise: CaptionNoise = "none"
    if rng.random() < noise_rate:
        noise = "omit" if (rng.random() < 0.5 and len(present) > 1) or not absent else "add"
        if noise == "omit":
            mentioned.remove(_pick(rng, present))
        else:
            mentioned.append(_pick(rng, absent))
    groups: list[tuple[str, list[ThingInstance]]] = []
    for name in mentioned:
        if name not in THING_CLASSES:
            colours.setdefault(name, _pick(rng, CLASS_COLOURS[name]))
            continue
        instances = [t for t in scene.things if t.name == name]
        counted = [t for t in instances if t.visible_pixels >= min_pixels]
        if not instances:  # an invented object
            colour = _pick(rng, preset_appearances(scene.preset)[name].colours)  # one it could be drawn in
            counted = [ThingInstance(name, colour, None, "")] * (2 if rng.random() < 0.2 else 1)
        elif not counted:
            counted = [max(instances, key=lambda t: t.visible_pixels)]
        groups.append((name, counted))
    order = rng.permutation(len(groups))
    groups = [groups[i] for i in order]

    # Primary ground: the stuff under the first-named object when it is mentioned.
    grounds = [g for g in scene.stuff_order if g in mentioned and g in GROUND_CLASSES]
    grounds += [g for g in mentioned if g in GROUND_CLASSES and g not in grounds]
    if groups and groups[0][1][0].ground in grounds:
        grounds.remove(groups[0][1][0].ground)
        grounds.insert(0, groups[0][1][0].ground)
    sky = "sky" in mentioned
    if groups:
        text = _things_caption(rng, groups, grounds, sky, colours)
    elif grounds or sky:
        text = _stuff_caption(rng, grounds, sky, colours)
    else:  # cannot happen: every image has stuff and omission leaves at least one class
        text = "a picture"
    text = _decorate(rng, text, plain=not text.startswith(("picture of", "view of")))
    mentioned_sorted = tuple(n for n in WORLD_CLASSES if n in mentioned)
    return Caption(text=text, mentioned=mentioned_sorted, noise=noise)
