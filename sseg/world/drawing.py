"""Drawing primitives of the world: scenes, value noise, named colours, stuff fields, part maps, textures,
appearance records, placements and the stuff layout. The preset-specific tables and layouts live in
:mod:`sseg.world.render_v1` and :mod:`sseg.world.render_v2`; :mod:`sseg.world.render` draws a scene.

Everything is vectorised numpy on float32 coordinate grids. Each object is evaluated only inside its
bounding box, in a local frame ``(u, v)`` in which the shape fits the square [-1, 1]².
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from sseg.world.vocab import CLASS_COLOURS, CLASS_ID, COLOURS, GROUND_CLASSES, THING_CLASSES

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
def pixel_centres(size: int) -> Array:
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


def part_map(shape: tuple[int, ...], *masks: Array) -> Array:
    """Part map from masks in drawing order (later masks overwrite earlier ones)."""
    out = np.zeros(shape, dtype=np.uint8)
    for part, mask in masks:
        out[mask] = part
    return out


ShapeFn = Callable[[Array, Array, np.random.Generator], Array]


def texture_pattern(kind: str, u: Array, v: Array, rng: np.random.Generator) -> Array:
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


WINDOW_RGB = (172, 192, 208)
ROOF = Part(("red", "brown", "gray", "black"))  # never the walls' colour
DOOR = Part(("brown",), shade=0.75)


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


def part_colours(app: Appearance, base: Array, colour: str, rng: np.random.Generator, look: Look) -> Array:
    """(parts + 2, 3) colour per part id; part 0 is unused, part 1 is the body."""
    table = np.repeat(base[None, :], len(app.parts) + 2, axis=0)
    for index, part in enumerate(app.parts, start=2):
        table[index] = _part_rgb(part, base, colour, rng, look)
    return table


# ----------------------------------------------------------------------------- placement


def random_pixel(rng: np.random.Generator, mask: Array) -> tuple[float, float] | None:
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    index = int(flat[rng.integers(flat.size)])
    height, width = mask.shape
    return (index // width + 0.5) / height, (index % width + 0.5) / width


@dataclass(frozen=True)
class Placement:
    name: str
    cy: float  # centre of the shape's square, fraction of the image
    cx: float
    extent: float  # side of the shape's square, fraction of the image
    size_word: str | None
    ground: tuple[float, float]  # where the caption's ground is read
    depth: float  # painter's order: larger is nearer, drawn later


# ----------------------------------------------------------------------------- scene


def stuff_layout(rng: np.random.Generator) -> tuple[bool, list[str]]:
    """Whether there is sky, and the ground classes top to bottom."""
    has_sky = rng.random() < 0.85
    n_ground = 1 if rng.random() < 0.55 else 2
    return has_sky, [str(g) for g in rng.permutation(np.array(GROUND_CLASSES))[:n_ground]]


def draw_stuff(
    rng: np.random.Generator, size: int, label: Array, image: Array, has_sky: bool, grounds: list[str]
) -> tuple[dict[str, str], list[str]]:
    coords = pixel_centres(size)
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


def pick_things(rng: np.random.Generator, count: int) -> list[str]:
    names: list[str] = []
    for _ in range(count):
        if names and rng.random() < 0.3:  # repeat a class, so captions say "two balls"
            names.append(names[int(rng.integers(len(names)))])
        else:
            names.append(str(THING_CLASSES[int(rng.integers(len(THING_CLASSES)))]))
    return names


_ID_TO_NAME = {i: n for n, i in CLASS_ID.items()}


def stuff_name(class_id: int) -> str:
    return _ID_TO_NAME[class_id]
