"""The ``v2`` world preset (class-typical colours, one signature texture, visible parts, a size range and a
habitat per thing class) and ``debug`` (v2 with one unique colour per class, parts in shades of it)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from sseg.world.drawing import (DOOR, ROOF, WINDOW_RGB, Appearance, Array, F32, Habitat, Part, Placement, ShapeFn,
                                part_map, random_pixel, stuff_layout)
from sseg.world.render_v1 import star_shape
from sseg.world.vocab import CLASS_ID, COLOURS, THING_COLOURS

# v2 shapes: the same silhouettes with larger, separately coloured detail parts (visible at 64 px).


def _ball_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = u * u + v * v < 1.0
    phi = rng.uniform(0, 2 * math.pi)  # the seam: an arc of a circle centred outside the ball
    seam_r = np.sqrt((u - F32(1.5 * math.cos(phi))) ** 2 + (v - F32(1.5 * math.sin(phi))) ** 2)
    seam = body & (np.abs(seam_r - F32(1.2)) < 0.1)
    highlight = (u + 0.36) ** 2 + (v + 0.38) ** 2 < 0.26**2
    return part_map(u.shape, (1, body), (2, seam), (3, highlight))


def _box_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    aspect = rng.uniform(0.8, 1.25)
    half_w, half_h = 0.92 * min(1.0, aspect), 0.92 * min(1.0, 1.0 / aspect)
    body = (np.abs(u) < half_w) & (np.abs(v) < half_h)
    lid = body & (v < -0.68 * half_h)
    tape = body & (np.abs(u) < 0.17 * half_w)
    return part_map(u.shape, (1, body), (2, lid), (3, tape))


def _tree_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    trunk = (np.abs(u) < 0.2) & (v > 0.2) & (v < 1.0)
    if rng.random() < 0.5:  # pine
        crown = (v > -1.0) & (v < 0.6) & (np.abs(u) < 0.86 * (v + 1.0) / 1.6)
    else:  # round
        crown = (u / 0.86) ** 2 + ((v + 0.22) / 0.76) ** 2 < 1.0
    return part_map(u.shape, (2, trunk), (1, crown))


def _car_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = (np.abs(u) < 1.0) & (v > -0.14) & (v < 0.42)
    cabin_half = 0.36 + 0.24 * (v + 0.64) / 0.5
    offset = np.abs(u + 0.06)
    cabin = (v > -0.64) & (v <= -0.14) & (offset < cabin_half)
    window = (v > -0.54) & (v < -0.2) & (offset < cabin_half - 0.1) & (offset > 0.06)
    wheel = np.minimum((u - 0.56) ** 2, (u + 0.56) ** 2) + (v - 0.42) ** 2
    return part_map(u.shape, (1, body | cabin), (3, window), (2, wheel < 0.3**2), (4, wheel < 0.11**2))


def _house_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    walls = (np.abs(u) < 0.74) & (v > -0.1) & (v < 0.96)
    roof = (v > -0.98) & (v <= -0.1) & (np.abs(u) < (v + 0.98) / 0.88)
    door = (np.abs(u - 0.32) < 0.18) & (v > 0.36) & (v < 0.96)
    window = (np.abs(u + 0.32) < 0.2) & (np.abs(v - 0.32) < 0.18)
    return part_map(u.shape, (1, walls), (2, roof), (3, door), (4, window))


def _fish_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = ((u + 0.12) / 0.68) ** 2 + (v / 0.46) ** 2 < 1.0
    tail = (u > 0.4) & (u < 1.0) & (np.abs(v) < 0.1 + (u - 0.4) * 0.95)
    eye = (u + 0.5) ** 2 + (v + 0.1) ** 2
    return part_map(u.shape, (2, tail), (1, body), (3, eye < 0.18**2), (4, eye < 0.09**2))


def _bird_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    au = np.abs(u)
    body = (u / 0.52) ** 2 + ((v - 0.14) / 0.28) ** 2 < 1.0
    head = (u + 0.52) ** 2 + (v + 0.02) ** 2 < 0.21**2
    lift = rng.uniform(0.35, 0.7)
    wings = (au < 0.96) & (np.abs(v - (0.06 - lift * au)) < 0.18 * (1.0 - 0.45 * au))
    beak = (u > -0.99) & (u < -0.66) & (np.abs(v + 0.02) < 0.13 * (u + 0.99) / 0.33)
    return part_map(u.shape, (2, wings), (1, body | head), (3, beak))


def _flower_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    petals_n = int(rng.choice([5, 6, 8]))
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    petals = radius < 0.45 + 0.53 * np.abs(np.cos(petals_n * theta / 2))
    return part_map(u.shape, (1, petals), (2, radius < 0.33))


def _star_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = star_shape(u, v, rng)  # v1's five-pointed star
    radius = np.sqrt(u * u + v * v)
    return part_map(u.shape, (1, body > 0), (2, (body > 0) & (radius > 0.56)))


def _cup_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    half = 0.5 - 0.12 * (v + 0.72) / 1.6
    body = (v > -0.72) & (v < 0.86) & (np.abs(u + 0.16) < half)
    ring = np.sqrt((u - 0.4) ** 2 + (v - 0.05) ** 2)
    handle = (ring > 0.17) & (ring < 0.4) & (u > 0.26)
    rim = body & (v < -0.54)
    return part_map(u.shape, (2, handle), (1, body), (3, rim))


_DARKER = Part(shade=0.62, contrast=True)  # a darker shade of the body (lighter on a black one)
_LIGHTER = Part(lift=0.45, contrast=True)


def _typical(name: str, shape: ShapeFn, pose: tuple[float, bool], texture: str, parts: tuple[Part, ...],
             extent: tuple[float, float], habitat: Habitat, foot: float = 0.9) -> Appearance:
    """A v2 appearance: class-typical colours, one clearly visible signature texture."""
    return Appearance(shape, pose, THING_COLOURS["v2"][name], (texture,), parts, extent, habitat, (0.25, 0.4), foot)


# One signature texture per class; the three shared kinds pair classes of different habitats.
V2_APPEARANCES: dict[str, Appearance] = {
    "ball": _typical("ball", _ball_v2, (0.0, True), "stripes",
                     (Part(shade=0.5, contrast=True), Part(lift=0.55)), (0.26, 0.34), "ground"),  # seam, highlight
    "box": _typical("box", _box_v2, (0.25, False), "checker",
                    (Part(shade=0.8, contrast=True), Part(shade=0.58, contrast=True)), (0.34, 0.44), "ground"),
    "tree": _typical("tree", _tree_v2, (0.06, False), "speckle", (Part(("brown",), shade=0.7),), (0.52, 0.7), "ground"),
    "car": _typical("car", _car_v2, (0.08, True), "gradient",  # wheels, windows, hubcaps
                    (Part(("black", "gray"), pick_first=True), Part(rgb=WINDOW_RGB), Part(rgb=(182, 182, 186))),
                    (0.5, 0.64), "ground", foot=0.72),
    "house": _typical("house", _house_v2, (0.05, True), "bricks", (ROOF, DOOR, Part(rgb=WINDOW_RGB)),
                      (0.52, 0.68), "ground"),
    "fish": _typical("fish", _fish_v2, (0.35, True), "dots",  # tail, eye, pupil
                     (Part(shade=0.65, contrast=True), Part(rgb=(235, 235, 228)), Part(("black",))),
                     (0.38, 0.48), "water"),
    "bird": _typical("bird", _bird_v2, (0.35, True), "speckle",  # wings, beak
                     (_DARKER, Part(("orange", "yellow"), pick_first=True)), (0.38, 0.5), "sky"),
    "flower": _typical("flower", _flower_v2, (math.pi, False), "rings", (Part(("yellow", "orange", "brown")),),
                       (0.28, 0.36), "ground"),
    "star": _typical("star", _star_v2, (0.0, False), "gradient", (Part(lift=0.4, contrast=True),), (0.3, 0.38), "sky"),
    "cup": _typical("cup", _cup_v2, (0.12, True), "dots", (Part(shade=0.65, contrast=True), _LIGHTER),  # handle, rim
                    (0.28, 0.36), "ground"),
}


def _same_hue(part: Part) -> Part:
    """The debug version of a part: a darker or lighter shade of the body instead of another colour."""
    if part.rgb is None and not part.colours:
        return part
    rgb = part.rgb if part.rgb is not None else COLOURS[part.colours[0]]
    return Part(shade=0.5, contrast=True) if sum(rgb) / 3 < 140 else Part(lift=0.5, contrast=True)


DEBUG_APPEARANCES: dict[str, Appearance] = {
    name: replace(app, colours=THING_COLOURS["debug"][name], parts=tuple(_same_hue(p) for p in app.parts))
    for name, app in V2_APPEARANCES.items()
}


TYPICAL_SHARE = 0.85  # v2: things in their class's usual place; the rest somewhere else


def _habitat_region(stuff: Array, habitat: Habitat) -> Array:
    if habitat != "ground":
        return stuff == CLASS_ID[habitat]
    land = (stuff == CLASS_ID["grass"]) | (stuff == CLASS_ID["sand"])
    return land if land.any() else stuff != CLASS_ID["sky"]


def _inside(region: Array, margin: int) -> Array:
    """Pixels of ``region`` with region (not the frame's edge) ``margin`` rows above and below them."""
    if margin <= 0:
        return region
    out = region.copy()
    out[margin:] &= region[:-margin]
    out[:-margin] &= region[margin:]
    out[:margin] = out[-margin:] = False
    return out


def layout_v2(
    rng: np.random.Generator,
    names: list[str],
    usual: list[bool],
    table: dict[str, Appearance],
    stuff: Array,
    object_scale: float,
) -> list[Placement]:
    """Ground things stand on land (their base on it), fish swim in water, birds/stars are in the sky."""
    size = stuff.shape[0]
    placed = []
    for name, typical in zip(names, usual):
        app = table[name]
        low, high = app.extent
        drawn = rng.uniform(low, high)
        region = _habitat_region(stuff, app.habitat)
        if typical:
            margin = min(size // 3, int(drawn * size * (0.1 if app.habitat == "ground" else 0.3)))
            spot = random_pixel(rng, _inside(region, margin)) or random_pixel(rng, region)
        else:  # an exception: somewhere it does not usually go (a floating house, a fish on the sand)
            spot = random_pixel(rng, _inside(~region, 2))
        standing = typical and spot is not None and app.habitat == "ground"
        if spot is None:
            spot = (rng.uniform(0.12, 0.88), rng.uniform(0.08, 0.92))
        ay, ax = spot
        extent = min(0.95, drawn * (0.85 + 0.4 * ay) * object_scale)  # bigger when nearer
        cy = ay - app.foot * extent / 2 if standing else ay  # a standing thing's foot is on the spot
        cy = min(max(cy, min(0.5, 0.4 * extent)), 0.95)  # keep most of it in the frame
        cx = float(np.clip(ax, 0.06, 0.94))
        relative = extent / (object_scale * (low + high) / 2)  # size words are relative to the class
        size_word = "small" if relative < 0.88 else ("big" if relative > 1.14 else None)
        placed.append(Placement(name, cy, cx, extent, size_word, (ay, ax), cy + app.foot * extent / 2))
    placed.sort(key=lambda p: p.depth)  # lower base = nearer, drawn later
    return placed


def stuff_layout_v2(rng: np.random.Generator, needs: set[str]) -> tuple[bool, list[str]]:
    """As v1, but with the sky, water or land that the things in their usual place need."""
    has_sky, grounds = stuff_layout(rng)
    has_sky = has_sky or "sky" in needs
    if "water" in needs and "water" not in grounds:
        if len(grounds) == 2:
            grounds[int(rng.integers(2))] = "water"
        else:
            grounds.insert(int(rng.integers(2)), "water")
    if "ground" in needs and grounds == ["water"]:
        grounds.insert(int(rng.integers(2)), "grass" if rng.random() < 0.5 else "sand")
    return has_sky, grounds
