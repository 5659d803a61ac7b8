"""The ``v1`` world preset, kept byte for byte: thin-part shapes, wide shared palettes, several textures per
class, loose placement (fish prefer water, birds and stars the sky, others the ground)."""

from __future__ import annotations

import math

import numpy as np

from sseg.world.drawing import (DOOR, ROOF, WINDOW_RGB, Appearance, Array, F32, Habitat, Part, Placement, ShapeFn,
                                part_map, random_pixel)
from sseg.world.vocab import CLASS_ID, THING_CLASSES, THING_COLOURS

# ----------------------------------------------------------------------------- thing shapes
# Each returns a uint8 part map: 0 outside, 1 main body (textured), 2+ detail parts.


def _ball(u: Array, v: Array, rng: np.random.Generator) -> Array:
    return part_map(u.shape, (1, u * u + v * v < 1.0))


def _box(u: Array, v: Array, rng: np.random.Generator) -> Array:
    aspect = rng.uniform(0.75, 1.3)
    half_w, half_h = 0.9 * min(1.0, aspect), 0.9 * min(1.0, 1.0 / aspect)
    body = (np.abs(u) < half_w) & (np.abs(v) < half_h)
    if rng.random() < 0.6:
        detail = body & (np.abs(u) < 0.13 * half_w)  # tape
    else:
        detail = body & (v < -half_h * 0.7)  # lid
    return part_map(u.shape, (1, body), (2, detail))


def _tree(u: Array, v: Array, rng: np.random.Generator) -> Array:
    trunk = (np.abs(u) < 0.14) & (v > 0.25) & (v < 1.0)
    if rng.random() < 0.5:  # pine
        canopy = (v > -1.0) & (v < 0.55) & (np.abs(u) < 0.78 * (v + 1.0) / 1.55)
    else:  # round
        canopy = (u / 0.82) ** 2 + ((v + 0.25) / 0.72) ** 2 < 1.0
    return part_map(u.shape, (2, trunk), (1, canopy))


def _car(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = (np.abs(u) < 1.0) & (v > -0.15) & (v < 0.42)
    cabin_half = 0.35 + 0.22 * (v + 0.6) / 0.45
    cabin = (v > -0.6) & (v <= -0.15) & (np.abs(u + 0.08) < cabin_half)
    window = (v > -0.5) & (v < -0.2) & (np.abs(u + 0.08) < cabin_half - 0.12)
    wheels = np.minimum((u - 0.56) ** 2, (u + 0.56) ** 2) + (v - 0.42) ** 2 < 0.23**2
    return part_map(u.shape, (1, body | cabin), (3, window), (2, wheels))


def _house(u: Array, v: Array, rng: np.random.Generator) -> Array:
    walls = (np.abs(u) < 0.72) & (v > -0.12) & (v < 0.95)
    roof = (v > -0.95) & (v <= -0.12) & (np.abs(u) < 0.95 * (v + 0.95) / 0.83)
    door = (np.abs(u - 0.28) < 0.15) & (v > 0.42) & (v < 0.95)
    window = (np.abs(u + 0.3) < 0.15) & (np.abs(v - 0.3) < 0.13)
    return part_map(u.shape, (1, walls), (2, roof), (3, door), (4, window))


def _fish(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = ((u + 0.15) / 0.7) ** 2 + (v / 0.42) ** 2 < 1.0
    tail = (u > 0.42) & (u < 0.98) & (np.abs(v) < 0.12 + (u - 0.42) * 0.85)
    eye = (u + 0.55) ** 2 + (v + 0.08) ** 2 < 0.085**2
    return part_map(u.shape, (1, body | tail), (2, eye))


def _bird(u: Array, v: Array, rng: np.random.Generator) -> Array:
    au = np.abs(u)
    body = (u / 0.5) ** 2 + ((v - 0.12) / 0.26) ** 2 < 1.0
    lift = rng.uniform(0.35, 0.7)
    wings = (au < 0.95) & (np.abs(v - (0.05 - lift * au)) < 0.15 * (1.0 - 0.5 * au))
    head = (u + 0.5) ** 2 + v * v < 0.18**2
    beak = (u > -0.88) & (u < -0.64) & (np.abs(v - 0.02) < 0.08 * (u + 0.88) / 0.24)
    return part_map(u.shape, (1, body | wings | head), (2, beak))


def _flower(u: Array, v: Array, rng: np.random.Generator) -> Array:
    petals_n = int(rng.choice([5, 6, 8]))
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    petals = radius < 0.42 + 0.55 * np.abs(np.cos(petals_n * theta / 2))
    centre = radius < 0.26
    return part_map(u.shape, (1, petals), (2, centre))


_STAR_INNER = 0.42
_STAR_SECTOR = 2 * math.pi / 10  # half the angle between two tips
# The edge between a tip (1, 0) and the next inner vertex, as n·p = d (polar in-polygon test).
_STAR_EDGE_NORMAL = np.array(
    [_STAR_INNER * math.sin(_STAR_SECTOR), 1.0 - _STAR_INNER * math.cos(_STAR_SECTOR)], dtype=np.float64
)
_STAR_EDGE_D = float(_STAR_EDGE_NORMAL[0])


def star_shape(u: Array, v: Array, rng: np.random.Generator) -> Array:
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u) + F32(rng.uniform(0, 2 * math.pi))
    folded = np.abs(np.mod(theta, F32(2 * _STAR_SECTOR)) - F32(_STAR_SECTOR))  # 0 at a tip
    folded = F32(_STAR_SECTOR) - folded
    edge = F32(_STAR_EDGE_D) / (
        F32(_STAR_EDGE_NORMAL[0]) * np.cos(folded) + F32(_STAR_EDGE_NORMAL[1]) * np.sin(folded)
    )
    return part_map(u.shape, (1, radius < edge))


def _cup(u: Array, v: Array, rng: np.random.Generator) -> Array:
    half = 0.52 - 0.14 * (v + 0.7) / 1.55
    body = (v > -0.7) & (v < 0.85) & (np.abs(u + 0.14) < half)
    ring = np.sqrt((u - 0.42) ** 2 + (v - 0.02) ** 2)
    handle = (ring > 0.2) & (ring < 0.36) & (u > 0.3)
    rim = body & (v < -0.57)
    return part_map(u.shape, (1, body | handle), (2, rim))


_SHAPES: dict[str, ShapeFn] = {
    "ball": _ball, "box": _box, "tree": _tree, "car": _car, "house": _house,
    "fish": _fish, "bird": _bird, "flower": _flower, "star": star_shape, "cup": _cup,
}
# Max rotation (radians) and whether the shape may be mirrored.
_POSE: dict[str, tuple[float, bool]] = {
    "ball": (math.pi, False), "box": (0.35, False), "tree": (0.1, False), "car": (0.12, True),
    "house": (0.08, True), "fish": (0.5, True), "bird": (0.4, True), "flower": (math.pi, False),
    "star": (0.0, False), "cup": (0.15, True),
}


# ----------------------------------------------------------------------------- thing textures
# v1: each class has characteristic textures, shared with some other classes (v2: one signature each).

_CLASS_TEXTURES: dict[str, tuple[str, ...]] = {
    "ball": ("stripes", "rings", "plain", "dots"),
    "box": ("checker", "stripes", "plain"),
    "tree": ("speckle", "dots"),
    "car": ("gradient", "plain"),
    "house": ("bricks", "checker"),
    "fish": ("dots", "stripes", "gradient"),
    "bird": ("gradient", "speckle"),
    "flower": ("rings", "plain"),
    "star": ("gradient", "rings"),
    "cup": ("plain", "dots", "stripes"),
}


_HABITAT_V1: dict[str, Habitat] = {"fish": "water", "bird": "sky", "star": "sky"}
_PARTS_V1: dict[str, tuple[Part, ...]] = {
    "box": (Part(shade=0.65),),
    "tree": (Part(("brown",)),),
    "car": (Part(("black",)), Part(rgb=WINDOW_RGB)),
    "house": (ROOF, DOOR, Part(rgb=WINDOW_RGB)),
    "fish": (Part(("black",)),),
    "bird": (Part(("orange", "yellow"), pick_first=True),),
    "flower": (Part(("yellow", "brown", "orange")),),
    "cup": (Part(shade=0.8),),
}
V1_APPEARANCES: dict[str, Appearance] = {
    name: Appearance(
        _SHAPES[name], _POSE[name], THING_COLOURS["v1"][name], _CLASS_TEXTURES[name],
        _PARTS_V1.get(name, ()), (0.18, 0.42), _HABITAT_V1.get(name, "ground"),
    )
    for name in THING_CLASSES
}


def _place(rng: np.random.Generator, name: str, stuff: Array) -> tuple[float, float]:
    """v1 object centre (cy, cx) in [0, 1]: fish prefer water, birds/stars the sky, others the ground."""
    if name == "fish" and rng.random() < 0.8:
        region = stuff == CLASS_ID["water"]
    elif name in ("bird", "star") and rng.random() < 0.6:
        region = stuff == CLASS_ID["sky"]
    elif rng.random() < 0.8:
        region = stuff != CLASS_ID["sky"]
    else:
        region = None
    spot = random_pixel(rng, region) if region is not None else None
    if spot is None:
        spot = (rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.92))
    cy, cx = spot
    return float(np.clip(cy, 0.08, 0.92)), float(np.clip(cx, 0.06, 0.94))


def layout_v1(
    rng: np.random.Generator, names: list[str], table: dict[str, Appearance], stuff: Array, object_scale: float
) -> list[Placement]:
    placed = []
    for name in names:
        cy, cx = _place(rng, name, stuff)
        extent = rng.uniform(*table[name].extent) * (0.75 + 0.5 * cy)  # bigger when nearer
        extent = min(0.9, extent * object_scale)
        relative = extent / object_scale  # the caption's size words describe the unscaled draw
        size_word = "small" if relative < 0.22 else ("big" if relative > 0.36 else None)
        placed.append(Placement(name, cy, cx, extent, size_word, (cy, cx), cy))
    placed.sort(key=lambda p: p.depth)  # far (high in frame) first
    return placed
