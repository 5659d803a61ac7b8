"""Drawing of one world scene: stuff background, thing objects, pixel labels.

Everything is vectorised numpy on float32 coordinate grids. Stuff (sky, grass, water, sand) fills the
frame in horizontal bands split by wavy curves; things are drawn in depth order (higher in the frame =
farther = drawn first) so nearer objects occlude farther ones. Each object is evaluated only inside its
bounding box, in a local frame ``(u, v)`` in which the shape fits the square [-1, 1]².

How each thing class looks (shape, colours, texture, parts, size, habitat) is an :class:`Appearance`
per preset (:data:`APPEARANCES`); ``v1`` is the original world, kept byte for byte, ``v2`` the
class-typical one and ``debug`` v2 with one unique colour per class.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np

from sseg.data.world_vocab import (
    CLASS_COLOURS,
    CLASS_ID,
    COLOURS,
    GROUND_CLASSES,
    THING_CLASSES,
    THING_COLOURS,
)
from sseg.errors import DataError

Array = np.ndarray
F32 = np.float32


@dataclass
class ThingInstance:
    """One drawn object and what a caption may say about it."""

    name: str
    colour: str
    size_word: str | None  # "small" / "big" / None (medium)
    ground: str  # stuff class under the object's centre (before things were drawn)
    visible_pixels: int = 0


@dataclass
class Scene:
    """A rendered scene: uint8 image, uint8 class labels and the facts captions are built from."""

    image: Array
    label: Array
    things: list[ThingInstance]
    stuff_colours: dict[str, str]  # stuff class -> colour name it was drawn with
    class_pixels: Array  # (num_classes,) pixel count per class id
    stuff_order: list[str] = field(default_factory=list)  # stuff top to bottom
    preset: str = "v2"  # the world preset it was drawn with


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=64)
def _pixel_centres(size: int) -> Array:
    return ((np.arange(size, dtype=F32) + F32(0.5)) / F32(size)).astype(F32)


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n_out: int, n_in: int) -> Array:
    """(n_out, n_in) linear-interpolation weights: ``M @ grid`` upsamples a coarse grid along one axis."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) / n_out * (n_in - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    frac = pos - lo
    matrix = np.zeros((n_out, n_in), dtype=F32)
    rows = np.arange(n_out)
    matrix[rows, lo] += (1 - frac).astype(F32)
    if n_in > 1:
        matrix[rows, lo + 1] += frac.astype(F32)
    return matrix


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells_y: int, cells_x: int) -> Array:
    """Value noise in [-1, 1]: a coarse random grid bilinearly upsampled (two small matmuls)."""
    grid = rng.uniform(-1.0, 1.0, size=(cells_y, cells_x)).astype(F32)
    return _bilinear_matrix(height, cells_y) @ grid @ _bilinear_matrix(width, cells_x).T


def jittered_colour(
    rng: np.random.Generator, name: str, scale: tuple[float, float] = (0.85, 1.12), sigma: float = 14.0
) -> Array:
    """A named colour with random brightness ``scale`` and per-channel noise ``sigma``."""
    base = np.asarray(COLOURS[name], dtype=F32)
    return base * F32(rng.uniform(*scale)) + rng.normal(0.0, sigma, size=3).astype(F32)


def _wavy_curve(rng: np.random.Generator, xs: Array, level: float, amplitude: float) -> Array:
    freq = rng.uniform(0.5, 2.5)
    phase = rng.uniform(0, 2 * math.pi)
    ripple = rng.uniform(0, 0.3) * amplitude
    curve = level + amplitude * np.sin(2 * math.pi * freq * xs + phase) + ripple * np.sin(
        2 * math.pi * 4 * freq * xs + 2 * phase
    )
    return curve.astype(F32)


# ----------------------------------------------------------------------------- stuff


def _sky(rng: np.random.Generator, base: Array, ys: Array, xs: Array, horizon: float) -> Array:
    height, width = ys.shape[0], xs.shape[1]
    brighten = F32(0.82) + F32(0.3) * np.minimum(ys / F32(max(horizon, 0.15)), F32(1.0))
    colour = base[None, None, :] * brighten[:, :, None]
    if rng.random() < 0.65:  # clouds: thresholded value noise blended towards white
        noise = smooth_noise(rng, height, width, 4, 6)
        cover = np.clip((noise - F32(rng.uniform(0.0, 0.5))) * F32(2.5), 0.0, 1.0)[:, :, None]
        colour = colour * (1 - cover) + F32(238.0) * cover
    return np.broadcast_to(colour, (height, width, 3))


def _grass(rng: np.random.Generator, base: Array, ys: Array, xs: Array) -> Array:
    height, width = ys.shape[0], xs.shape[1]
    # Vertical blades: random per column, smoothed only along y.
    blades = _bilinear_matrix(height, max(2, height // 6)) @ rng.uniform(
        -1, 1, size=(max(2, height // 6), width)
    ).astype(F32)
    patches = smooth_noise(rng, height, width, 3, 4)
    shade = F32(1.0) + F32(0.22) * blades + F32(0.12) * patches
    return base[None, None, :] * shade[:, :, None]


def _water(rng: np.random.Generator, base: Array, ys: Array, xs: Array) -> Array:
    freq = rng.uniform(6.0, 14.0)
    wobble = 0.06 * np.sin(2 * math.pi * rng.uniform(1.0, 3.0) * xs + rng.uniform(0, 2 * math.pi))
    waves = np.sin(F32(2 * math.pi) * (F32(freq) * ys * ys * F32(1.5) + wobble.astype(F32)))
    glint = (waves > F32(0.93)).astype(F32)
    shade = F32(1.0) + F32(0.14) * waves + F32(0.25) * glint
    return base[None, None, :] * shade[:, :, None]


def _sand(rng: np.random.Generator, base: Array, ys: Array, xs: Array) -> Array:
    height, width = ys.shape[0], xs.shape[1]
    freq = rng.uniform(4.0, 9.0)
    slant = rng.uniform(-0.4, 0.4)
    ripples = np.sin(F32(2 * math.pi * freq) * (ys + F32(slant) * xs))
    speckle = rng.uniform(-1, 1, size=(height, width)).astype(F32)
    shade = F32(1.0) + F32(0.07) * ripples + F32(0.12) * speckle
    return base[None, None, :] * shade[:, :, None]


# ----------------------------------------------------------------------------- thing shapes
# Each returns a uint8 part map: 0 outside, 1 main body (textured), 2+ detail parts.


def _parts(shape: tuple[int, ...], *masks: Array) -> Array:
    """Part map from masks in drawing order (later masks overwrite earlier ones)."""
    out = np.zeros(shape, dtype=np.uint8)
    for part, mask in masks:
        out[mask] = part
    return out


def _ball(u: Array, v: Array, rng: np.random.Generator) -> Array:
    return _parts(u.shape, (1, u * u + v * v < 1.0))


def _box(u: Array, v: Array, rng: np.random.Generator) -> Array:
    aspect = rng.uniform(0.75, 1.3)
    half_w, half_h = 0.9 * min(1.0, aspect), 0.9 * min(1.0, 1.0 / aspect)
    body = (np.abs(u) < half_w) & (np.abs(v) < half_h)
    if rng.random() < 0.6:
        detail = body & (np.abs(u) < 0.13 * half_w)  # tape
    else:
        detail = body & (v < -half_h * 0.7)  # lid
    return _parts(u.shape, (1, body), (2, detail))


def _tree(u: Array, v: Array, rng: np.random.Generator) -> Array:
    trunk = (np.abs(u) < 0.14) & (v > 0.25) & (v < 1.0)
    if rng.random() < 0.5:  # pine
        canopy = (v > -1.0) & (v < 0.55) & (np.abs(u) < 0.78 * (v + 1.0) / 1.55)
    else:  # round
        canopy = (u / 0.82) ** 2 + ((v + 0.25) / 0.72) ** 2 < 1.0
    return _parts(u.shape, (2, trunk), (1, canopy))


def _car(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = (np.abs(u) < 1.0) & (v > -0.15) & (v < 0.42)
    cabin_half = 0.35 + 0.22 * (v + 0.6) / 0.45
    cabin = (v > -0.6) & (v <= -0.15) & (np.abs(u + 0.08) < cabin_half)
    window = (v > -0.5) & (v < -0.2) & (np.abs(u + 0.08) < cabin_half - 0.12)
    wheels = np.minimum((u - 0.56) ** 2, (u + 0.56) ** 2) + (v - 0.42) ** 2 < 0.23**2
    return _parts(u.shape, (1, body | cabin), (3, window), (2, wheels))


def _house(u: Array, v: Array, rng: np.random.Generator) -> Array:
    walls = (np.abs(u) < 0.72) & (v > -0.12) & (v < 0.95)
    roof = (v > -0.95) & (v <= -0.12) & (np.abs(u) < 0.95 * (v + 0.95) / 0.83)
    door = (np.abs(u - 0.28) < 0.15) & (v > 0.42) & (v < 0.95)
    window = (np.abs(u + 0.3) < 0.15) & (np.abs(v - 0.3) < 0.13)
    return _parts(u.shape, (1, walls), (2, roof), (3, door), (4, window))


def _fish(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = ((u + 0.15) / 0.7) ** 2 + (v / 0.42) ** 2 < 1.0
    tail = (u > 0.42) & (u < 0.98) & (np.abs(v) < 0.12 + (u - 0.42) * 0.85)
    eye = (u + 0.55) ** 2 + (v + 0.08) ** 2 < 0.085**2
    return _parts(u.shape, (1, body | tail), (2, eye))


def _bird(u: Array, v: Array, rng: np.random.Generator) -> Array:
    au = np.abs(u)
    body = (u / 0.5) ** 2 + ((v - 0.12) / 0.26) ** 2 < 1.0
    lift = rng.uniform(0.35, 0.7)
    wings = (au < 0.95) & (np.abs(v - (0.05 - lift * au)) < 0.15 * (1.0 - 0.5 * au))
    head = (u + 0.5) ** 2 + v * v < 0.18**2
    beak = (u > -0.88) & (u < -0.64) & (np.abs(v - 0.02) < 0.08 * (u + 0.88) / 0.24)
    return _parts(u.shape, (1, body | wings | head), (2, beak))


def _flower(u: Array, v: Array, rng: np.random.Generator) -> Array:
    petals_n = int(rng.choice([5, 6, 8]))
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    petals = radius < 0.42 + 0.55 * np.abs(np.cos(petals_n * theta / 2))
    centre = radius < 0.26
    return _parts(u.shape, (1, petals), (2, centre))


_STAR_INNER = 0.42
_STAR_SECTOR = 2 * math.pi / 10  # half the angle between two tips
# The edge between a tip (1, 0) and the next inner vertex, as n·p = d (polar in-polygon test).
_STAR_EDGE_NORMAL = np.array(
    [_STAR_INNER * math.sin(_STAR_SECTOR), 1.0 - _STAR_INNER * math.cos(_STAR_SECTOR)], dtype=np.float64
)
_STAR_EDGE_D = float(_STAR_EDGE_NORMAL[0])


def _star(u: Array, v: Array, rng: np.random.Generator) -> Array:
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u) + F32(rng.uniform(0, 2 * math.pi))
    folded = np.abs(np.mod(theta, F32(2 * _STAR_SECTOR)) - F32(_STAR_SECTOR))  # 0 at a tip
    folded = F32(_STAR_SECTOR) - folded
    edge = F32(_STAR_EDGE_D) / (
        F32(_STAR_EDGE_NORMAL[0]) * np.cos(folded) + F32(_STAR_EDGE_NORMAL[1]) * np.sin(folded)
    )
    return _parts(u.shape, (1, radius < edge))


def _cup(u: Array, v: Array, rng: np.random.Generator) -> Array:
    half = 0.52 - 0.14 * (v + 0.7) / 1.55
    body = (v > -0.7) & (v < 0.85) & (np.abs(u + 0.14) < half)
    ring = np.sqrt((u - 0.42) ** 2 + (v - 0.02) ** 2)
    handle = (ring > 0.2) & (ring < 0.36) & (u > 0.3)
    rim = body & (v < -0.57)
    return _parts(u.shape, (1, body | handle), (2, rim))


ShapeFn = Callable[[Array, Array, np.random.Generator], Array]
_SHAPES: dict[str, ShapeFn] = {
    "ball": _ball, "box": _box, "tree": _tree, "car": _car, "house": _house,
    "fish": _fish, "bird": _bird, "flower": _flower, "star": _star, "cup": _cup,
}
# Max rotation (radians) and whether the shape may be mirrored.
_POSE: dict[str, tuple[float, bool]] = {
    "ball": (math.pi, False), "box": (0.35, False), "tree": (0.1, False), "car": (0.12, True),
    "house": (0.08, True), "fish": (0.5, True), "bird": (0.4, True), "flower": (math.pi, False),
    "star": (0.0, False), "cup": (0.15, True),
}

# v2 shapes: the same silhouettes with larger, separately coloured detail parts (visible at 64 px).


def _ball_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = u * u + v * v < 1.0
    phi = rng.uniform(0, 2 * math.pi)  # the seam: an arc of a circle centred outside the ball
    seam_r = np.sqrt((u - F32(1.5 * math.cos(phi))) ** 2 + (v - F32(1.5 * math.sin(phi))) ** 2)
    seam = body & (np.abs(seam_r - F32(1.2)) < 0.1)
    highlight = (u + 0.36) ** 2 + (v + 0.38) ** 2 < 0.26**2
    return _parts(u.shape, (1, body), (2, seam), (3, highlight))


def _box_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    aspect = rng.uniform(0.8, 1.25)
    half_w, half_h = 0.92 * min(1.0, aspect), 0.92 * min(1.0, 1.0 / aspect)
    body = (np.abs(u) < half_w) & (np.abs(v) < half_h)
    lid = body & (v < -0.68 * half_h)
    tape = body & (np.abs(u) < 0.17 * half_w)
    return _parts(u.shape, (1, body), (2, lid), (3, tape))


def _tree_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    trunk = (np.abs(u) < 0.2) & (v > 0.2) & (v < 1.0)
    if rng.random() < 0.5:  # pine
        crown = (v > -1.0) & (v < 0.6) & (np.abs(u) < 0.86 * (v + 1.0) / 1.6)
    else:  # round
        crown = (u / 0.86) ** 2 + ((v + 0.22) / 0.76) ** 2 < 1.0
    return _parts(u.shape, (2, trunk), (1, crown))


def _car_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = (np.abs(u) < 1.0) & (v > -0.14) & (v < 0.42)
    cabin_half = 0.36 + 0.24 * (v + 0.64) / 0.5
    offset = np.abs(u + 0.06)
    cabin = (v > -0.64) & (v <= -0.14) & (offset < cabin_half)
    window = (v > -0.54) & (v < -0.2) & (offset < cabin_half - 0.1) & (offset > 0.06)
    wheel = np.minimum((u - 0.56) ** 2, (u + 0.56) ** 2) + (v - 0.42) ** 2
    return _parts(u.shape, (1, body | cabin), (3, window), (2, wheel < 0.3**2), (4, wheel < 0.11**2))


def _house_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    walls = (np.abs(u) < 0.74) & (v > -0.1) & (v < 0.96)
    roof = (v > -0.98) & (v <= -0.1) & (np.abs(u) < (v + 0.98) / 0.88)
    door = (np.abs(u - 0.32) < 0.18) & (v > 0.36) & (v < 0.96)
    window = (np.abs(u + 0.32) < 0.2) & (np.abs(v - 0.32) < 0.18)
    return _parts(u.shape, (1, walls), (2, roof), (3, door), (4, window))


def _fish_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = ((u + 0.12) / 0.68) ** 2 + (v / 0.46) ** 2 < 1.0
    tail = (u > 0.4) & (u < 1.0) & (np.abs(v) < 0.1 + (u - 0.4) * 0.95)
    eye = (u + 0.5) ** 2 + (v + 0.1) ** 2
    return _parts(u.shape, (2, tail), (1, body), (3, eye < 0.18**2), (4, eye < 0.09**2))


def _bird_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    au = np.abs(u)
    body = (u / 0.52) ** 2 + ((v - 0.14) / 0.28) ** 2 < 1.0
    head = (u + 0.52) ** 2 + (v + 0.02) ** 2 < 0.21**2
    lift = rng.uniform(0.35, 0.7)
    wings = (au < 0.96) & (np.abs(v - (0.06 - lift * au)) < 0.18 * (1.0 - 0.45 * au))
    beak = (u > -0.99) & (u < -0.66) & (np.abs(v + 0.02) < 0.13 * (u + 0.99) / 0.33)
    return _parts(u.shape, (2, wings), (1, body | head), (3, beak))


def _flower_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    petals_n = int(rng.choice([5, 6, 8]))
    radius = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    petals = radius < 0.45 + 0.53 * np.abs(np.cos(petals_n * theta / 2))
    return _parts(u.shape, (1, petals), (2, radius < 0.33))


def _star_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    body = _star(u, v, rng)
    radius = np.sqrt(u * u + v * v)
    return _parts(u.shape, (1, body > 0), (2, (body > 0) & (radius > 0.56)))


def _cup_v2(u: Array, v: Array, rng: np.random.Generator) -> Array:
    half = 0.5 - 0.12 * (v + 0.72) / 1.6
    body = (v > -0.72) & (v < 0.86) & (np.abs(u + 0.16) < half)
    ring = np.sqrt((u - 0.4) ** 2 + (v - 0.05) ** 2)
    handle = (ring > 0.17) & (ring < 0.4) & (u > 0.26)
    rim = body & (v < -0.54)
    return _parts(u.shape, (2, handle), (1, body), (3, rim))


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


def _texture(kind: str, u: Array, v: Array, rng: np.random.Generator) -> Array:
    """A pattern in roughly [-1, 1] over the object's local frame."""
    if kind == "plain":
        return np.zeros_like(u)
    if kind == "stripes":
        angle = rng.uniform(0, math.pi)
        freq = rng.uniform(1.2, 2.6)
        return np.sin(F32(2 * math.pi * freq) * (u * F32(math.cos(angle)) + v * F32(math.sin(angle))))
    if kind == "bricks":
        return np.sign(np.sin(F32(2 * math.pi * rng.uniform(2.5, 4.0)) * v))
    if kind == "checker":
        freq = F32(math.pi * rng.uniform(2.0, 4.0))
        return np.sign(np.sin(freq * u) * np.sin(freq * v))
    if kind == "dots":
        freq = F32(rng.uniform(2.0, 4.0))
        du = np.mod(u * freq, F32(1.0)) - F32(0.5)
        dv = np.mod(v * freq, F32(1.0)) - F32(0.5)
        return np.where(du * du + dv * dv < F32(0.07), F32(1.0), F32(-0.3))
    if kind == "rings":
        return np.sin(F32(2 * math.pi * rng.uniform(1.2, 2.5)) * np.sqrt(u * u + v * v))
    if kind == "gradient":
        return -v
    if kind == "speckle":
        return rng.uniform(-1, 1, size=u.shape).astype(F32)
    raise ValueError(f"unknown texture {kind!r}")


# ----------------------------------------------------------------------------- appearances


@dataclass(frozen=True)
class Part:
    """Colour of one detail part: a named colour (jittered), a fixed RGB, or else the body colour;
    then darkened by ``shade`` and blended towards white by ``lift``. ``contrast`` swaps darkening
    and lightening where the colour is too dark or too light for it to show."""

    colours: tuple[str, ...] = ()  # drawn from these, minus the body's own colour (unless none is left)
    rgb: tuple[int, int, int] | None = None
    shade: float = 1.0
    lift: float = 0.0
    pick_first: bool = False  # take the first allowed colour instead of drawing one
    contrast: bool = False


Habitat = Literal["ground", "water", "sky"]


@dataclass(frozen=True)
class Appearance:
    """How one thing class is drawn under one preset."""

    shape: ShapeFn
    pose: tuple[float, bool]  # max rotation (radians), may be mirrored
    colours: tuple[str, ...]  # body colour names (captions use them as adjectives)
    textures: tuple[str, ...]  # texture kinds of the body, one drawn per object
    parts: tuple[Part, ...]  # colours of detail parts 2, 3, ... of the shape's part map
    extent: tuple[float, float]  # full size range, fraction of the image (before depth, object_scale)
    habitat: Habitat  # where it usually is
    amplitude: tuple[float, float] = (0.12, 0.3)  # texture strength range
    foot: float = 0.9  # v of the shape's bottom: where a thing standing on the ground touches it


@dataclass(frozen=True)
class Look:
    """Per-preset colour jitter and lighting."""

    jitter: tuple[float, float] = (0.85, 1.12)  # brightness factor of an object's base colour
    jitter_sigma: float = 14.0  # per-channel noise on an object's base colour
    tint: tuple[float, float] = (0.88, 1.12)  # per-image brightness
    tint_sigma: float = 0.035  # per-image colour cast
    noise: float = 3.5  # per-pixel sensor noise


_WINDOW = (172, 192, 208)
_ROOF = Part(("red", "brown", "gray", "black"))  # never the walls' colour
_DOOR = Part(("brown",), shade=0.75)
_HABITAT_V1: dict[str, Habitat] = {"fish": "water", "bird": "sky", "star": "sky"}
_PARTS_V1: dict[str, tuple[Part, ...]] = {
    "box": (Part(shade=0.65),),
    "tree": (Part(("brown",)),),
    "car": (Part(("black",)), Part(rgb=_WINDOW)),
    "house": (_ROOF, _DOOR, Part(rgb=_WINDOW)),
    "fish": (Part(("black",)),),
    "bird": (Part(("orange", "yellow"), pick_first=True),),
    "flower": (Part(("yellow", "brown", "orange")),),
    "cup": (Part(shade=0.8),),
}
_V1: dict[str, Appearance] = {
    name: Appearance(
        _SHAPES[name], _POSE[name], THING_COLOURS["v1"][name], _CLASS_TEXTURES[name],
        _PARTS_V1.get(name, ()), (0.18, 0.42), _HABITAT_V1.get(name, "ground"),
    )
    for name in THING_CLASSES
}

_DARKER = Part(shade=0.62, contrast=True)  # a darker shade of the body (lighter on a black one)
_LIGHTER = Part(lift=0.45, contrast=True)


def _typical(name: str, shape: ShapeFn, pose: tuple[float, bool], texture: str, parts: tuple[Part, ...],
             extent: tuple[float, float], habitat: Habitat, foot: float = 0.9) -> Appearance:
    """A v2 appearance: class-typical colours, one clearly visible signature texture."""
    return Appearance(shape, pose, THING_COLOURS["v2"][name], (texture,), parts, extent, habitat, (0.25, 0.4), foot)


# One signature texture per class; the three shared kinds pair classes of different habitats.
_V2: dict[str, Appearance] = {
    "ball": _typical("ball", _ball_v2, (0.0, True), "stripes",
                     (Part(shade=0.5, contrast=True), Part(lift=0.55)), (0.26, 0.34), "ground"),  # seam, highlight
    "box": _typical("box", _box_v2, (0.25, False), "checker",
                    (Part(shade=0.8, contrast=True), Part(shade=0.58, contrast=True)), (0.34, 0.44), "ground"),
    "tree": _typical("tree", _tree_v2, (0.06, False), "speckle", (Part(("brown",), shade=0.7),), (0.52, 0.7), "ground"),
    "car": _typical("car", _car_v2, (0.08, True), "gradient",  # wheels, windows, hubcaps
                    (Part(("black", "gray"), pick_first=True), Part(rgb=_WINDOW), Part(rgb=(182, 182, 186))),
                    (0.5, 0.64), "ground", foot=0.72),
    "house": _typical("house", _house_v2, (0.05, True), "bricks", (_ROOF, _DOOR, Part(rgb=_WINDOW)),
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


_DEBUG: dict[str, Appearance] = {
    name: replace(app, colours=THING_COLOURS["debug"][name], parts=tuple(_same_hue(p) for p in app.parts))
    for name, app in _V2.items()
}

APPEARANCES: dict[str, dict[str, Appearance]] = {"v1": _V1, "v2": _V2, "debug": _DEBUG}  # keys: PRESETS
LOOKS: dict[str, Look] = {"v1": Look(), "v2": Look(), "debug": Look(jitter=(0.9, 1.08), jitter_sigma=8.0)}


def preset_appearances(preset: str) -> dict[str, Appearance]:
    """Appearance per thing class under ``preset``; DataError when the preset or a class is missing."""
    table = APPEARANCES.get(preset)
    if table is None:
        raise DataError(f"unknown world preset {preset!r}; expected one of {', '.join(APPEARANCES)}")
    missing = [name for name in THING_CLASSES if name not in table]
    if missing:
        raise DataError(f"world preset {preset!r} has no appearance for thing class {missing[0]!r}")
    return table


def _part_rgb(part: Part, base: Array, colour: str, rng: np.random.Generator, look: Look) -> Array:
    if part.rgb is not None:
        rgb = np.asarray(part.rgb, dtype=F32)
    elif part.colours:
        options = [c for c in part.colours if c != colour] or list(part.colours)
        name = options[0] if part.pick_first or len(options) == 1 else str(rng.choice(options))
        rgb = jittered_colour(rng, name, look.jitter, look.jitter_sigma)
    else:
        rgb = base
    shade, lift = part.shade, part.lift
    if part.contrast:  # darkening black or lightening white would not show: do the opposite
        brightness = float(rgb.mean())
        if shade < 1.0 and brightness < 70.0:
            shade, lift = 1.0, max(lift, 1.0 - shade)
        elif lift > 0.0 and brightness > 200.0:
            shade, lift = min(shade, 1.0 - lift), 0.0
    if shade != 1.0:
        rgb = rgb * F32(shade)
    if lift:
        rgb = rgb + (F32(255.0) - rgb) * F32(lift)
    return rgb


def _part_colours(app: Appearance, base: Array, colour: str, rng: np.random.Generator, look: Look) -> Array:
    """(parts + 2, 3) colour per part id; part 0 is unused, part 1 is the body."""
    table = np.repeat(base[None, :], len(app.parts) + 2, axis=0)
    for index, part in enumerate(app.parts, start=2):
        table[index] = _part_rgb(part, base, colour, rng, look)
    return table


# ----------------------------------------------------------------------------- placement


def _random_pixel(rng: np.random.Generator, mask: Array) -> tuple[float, float] | None:
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    index = int(flat[rng.integers(flat.size)])
    height, width = mask.shape
    return (index // width + 0.5) / height, (index % width + 0.5) / width


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
    spot = _random_pixel(rng, region) if region is not None else None
    if spot is None:
        spot = (rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.92))
    cy, cx = spot
    return float(np.clip(cy, 0.08, 0.92)), float(np.clip(cx, 0.06, 0.94))


@dataclass(frozen=True)
class _Placement:
    name: str
    cy: float  # centre of the shape's square, fraction of the image
    cx: float
    extent: float  # side of the shape's square, fraction of the image
    size_word: str | None
    ground: tuple[float, float]  # where the caption's ground is read
    depth: float  # painter's order: larger is nearer, drawn later


def _layout_v1(
    rng: np.random.Generator, names: list[str], table: dict[str, Appearance], stuff: Array, object_scale: float
) -> list[_Placement]:
    placed = []
    for name in names:
        cy, cx = _place(rng, name, stuff)
        extent = rng.uniform(*table[name].extent) * (0.75 + 0.5 * cy)  # bigger when nearer
        extent = min(0.9, extent * object_scale)
        relative = extent / object_scale  # the caption's size words describe the unscaled draw
        size_word = "small" if relative < 0.22 else ("big" if relative > 0.36 else None)
        placed.append(_Placement(name, cy, cx, extent, size_word, (cy, cx), cy))
    placed.sort(key=lambda p: p.depth)  # far (high in frame) first
    return placed


_TYPICAL_SHARE = 0.85  # v2: things in their class's usual place; the rest somewhere else


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


def _layout_v2(
    rng: np.random.Generator,
    names: list[str],
    usual: list[bool],
    table: dict[str, Appearance],
    stuff: Array,
    object_scale: float,
) -> list[_Placement]:
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
            spot = _random_pixel(rng, _inside(region, margin)) or _random_pixel(rng, region)
        else:  # an exception: somewhere it does not usually go (a floating house, a fish on the sand)
            spot = _random_pixel(rng, _inside(~region, 2))
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
        placed.append(_Placement(name, cy, cx, extent, size_word, (ay, ax), cy + app.foot * extent / 2))
    placed.sort(key=lambda p: p.depth)  # lower base = nearer, drawn later
    return placed


# ----------------------------------------------------------------------------- scene


def _stuff_layout(rng: np.random.Generator) -> tuple[bool, list[str]]:
    """Whether there is sky, and the ground classes top to bottom."""
    has_sky = rng.random() < 0.85
    n_ground = 1 if rng.random() < 0.55 else 2
    return has_sky, [str(g) for g in rng.permutation(np.array(GROUND_CLASSES))[:n_ground]]


def _stuff_layout_v2(rng: np.random.Generator, needs: set[str]) -> tuple[bool, list[str]]:
    """As v1, but with the sky, water or land that the things in their usual place need."""
    has_sky, grounds = _stuff_layout(rng)
    has_sky = has_sky or "sky" in needs
    if "water" in needs and "water" not in grounds:
        if len(grounds) == 2:
            grounds[int(rng.integers(2))] = "water"
        else:
            grounds.insert(int(rng.integers(2)), "water")
    if "ground" in needs and grounds == ["water"]:
        grounds.insert(int(rng.integers(2)), "grass" if rng.random() < 0.5 else "sand")
    return has_sky, grounds


def _draw_stuff(
    rng: np.random.Generator, size: int, label: Array, image: Array, has_sky: bool, grounds: list[str]
) -> tuple[dict[str, str], list[str]]:
    coords = _pixel_centres(size)
    ys, xs = coords[:, None], coords[None, :]
    horizon_level = rng.uniform(0.22, 0.6) if has_sky else 0.0
    order = (["sky"] if has_sky else []) + grounds
    colours = {name: str(rng.choice(CLASS_COLOURS[name])) for name in order}

    # Boundaries top-down: horizon (sky | first ground), then shoreline (first | second ground).
    boundaries: list[Array] = []
    if has_sky:
        boundaries.append(_wavy_curve(rng, xs, horizon_level, rng.uniform(0.0, 0.06)))
    if len(grounds) == 2:
        level = horizon_level + rng.uniform(0.25, 0.6) * (1.0 - horizon_level)
        boundaries.append(_wavy_curve(rng, xs, level, rng.uniform(0.01, 0.05)))
    # Region index per pixel = number of boundaries above it.
    region = np.zeros((size, size), dtype=np.uint8)
    for curve in boundaries:
        region += (ys >= curve).astype(np.uint8)

    for index, name in enumerate(order):
        base = jittered_colour(rng, colours[name])
        if name == "sky":
            field_rgb = _sky(rng, base, ys, xs, horizon_level)
        elif name == "grass":
            field_rgb = _grass(rng, base, ys, xs)
        elif name == "water":
            field_rgb = _water(rng, base, ys, xs)
        else:
            field_rgb = _sand(rng, base, ys, xs)
        mask = region == index
        np.copyto(label, np.uint8(CLASS_ID[name]), where=mask)
        np.copyto(image, field_rgb, where=mask[:, :, None])
    return colours, order


def _pick_things(rng: np.random.Generator, count: int) -> list[str]:
    names: list[str] = []
    for _ in range(count):
        if names and rng.random() < 0.3:  # repeat a class, so captions say "two balls"
            names.append(names[int(rng.integers(len(names)))])
        else:
            names.append(str(THING_CLASSES[int(rng.integers(len(THING_CLASSES)))]))
    return names


def render_scene(
    rng: np.random.Generator,
    size: int,
    min_objects: int,
    max_objects: int,
    object_scale: float = 1.0,
    preset: str = "v2",
) -> Scene:
    """Draw one scene with ``size``×``size`` pixels from ``rng`` in the look of ``preset``."""
    table = preset_appearances(preset)
    look = LOOKS.get(preset, Look())
    image = np.empty((size, size, 3), dtype=F32)
    label = np.empty((size, size), dtype=np.uint8)
    if preset == "v1":  # the original call order, byte for byte
        stuff_colours, stuff_order = _draw_stuff(rng, size, label, image, *_stuff_layout(rng))
        stuff_label = label.copy()
        names = _pick_things(rng, int(rng.integers(min_objects, max_objects + 1)))
        placed = _layout_v1(rng, names, table, stuff_label, object_scale)
    else:  # things first, so the stuff can hold the places they need
        names = _pick_things(rng, int(rng.integers(min_objects, max_objects + 1)))
        usual = [bool(rng.random() < _TYPICAL_SHARE) for _ in names]
        needs = {table[name].habitat for name, typical in zip(names, usual) if typical}
        stuff_colours, stuff_order = _draw_stuff(rng, size, label, image, *_stuff_layout_v2(rng, needs))
        stuff_label = label.copy()
        placed = _layout_v2(rng, names, usual, table, stuff_label, object_scale)

    coords = _pixel_centres(size)
    instance = np.zeros((size, size), dtype=np.uint8)
    things: list[ThingInstance] = []
    for number, item in enumerate(placed, start=1):
        app = table[item.name]
        colour = str(rng.choice(app.colours))
        base = jittered_colour(rng, colour, look.jitter, look.jitter_sigma)
        max_angle, mirror = app.pose
        angle = rng.uniform(-max_angle, max_angle)
        flip = -1.0 if (mirror and rng.random() < 0.5) else 1.0
        cy, cx, half = item.cy, item.cx, item.extent / 2.0
        reach = half * (abs(math.cos(angle)) + abs(math.sin(angle)))
        y0, y1 = max(0, int((cy - reach) * size)), min(size, int(math.ceil((cy + reach) * size)))
        x0, x1 = max(0, int((cx - reach) * size)), min(size, int(math.ceil((cx + reach) * size)))
        dy = (coords[y0:y1, None] - F32(cy)) / F32(half)
        dx = (coords[None, x0:x1] - F32(cx)) / F32(half)
        cos_a, sin_a = F32(math.cos(angle)), F32(math.sin(angle))
        u = (dx * cos_a + dy * sin_a) * F32(flip)
        v = dy * cos_a - dx * sin_a
        parts = app.shape(u, v, rng)
        texture_kind = str(rng.choice(app.textures))
        amplitude = F32(rng.uniform(*app.amplitude))
        pattern = _texture(texture_kind, u, v, rng)
        shade = F32(1.0) + amplitude * pattern * (parts == 1)
        rgb = _part_colours(app, base, colour, rng, look)[parts] * shade[:, :, None]
        inside = parts > 0
        np.copyto(image[y0:y1, x0:x1], rgb, where=inside[:, :, None])
        np.copyto(label[y0:y1, x0:x1], np.uint8(CLASS_ID[item.name]), where=inside)
        np.copyto(instance[y0:y1, x0:x1], np.uint8(number), where=inside)
        ground_y = min(size - 1, int(item.ground[0] * size))
        ground_x = min(size - 1, int(item.ground[1] * size))
        ground = _stuff_name(int(stuff_label[ground_y, ground_x]))
        things.append(ThingInstance(name=item.name, colour=colour, size_word=item.size_word, ground=ground))

    visible = np.bincount(instance.ravel(), minlength=len(placed) + 1)
    for number, thing in enumerate(things, start=1):
        thing.visible_pixels = int(visible[number])
    things = [t for t in things if t.visible_pixels > 0]

    # Global lighting (per-channel tint) and sensor noise, so colours drift between images.
    tint = F32(rng.uniform(*look.tint)) * (F32(1.0) + rng.normal(0.0, look.tint_sigma, size=3).astype(F32))
    image *= tint
    image += rng.standard_normal(size=image.shape, dtype=F32) * F32(look.noise)
    np.clip(image, 0.0, 255.0, out=image)
    class_pixels = np.bincount(label.ravel(), minlength=len(CLASS_ID))
    return Scene(
        image=image.astype(np.uint8),
        label=label,
        things=things,
        stuff_colours=stuff_colours,
        class_pixels=class_pixels,
        stuff_order=stuff_order,
        preset=preset,
    )


_ID_TO_NAME = {i: n for n, i in CLASS_ID.items()}


def _stuff_name(class_id: int) -> str:
    return _ID_TO_NAME[class_id]
