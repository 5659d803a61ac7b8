"""Drawing of one world scene: stuff background, thing objects, pixel labels.

Everything is vectorised numpy on float32 coordinate grids. Stuff (sky, grass, water, sand) fills the
frame in horizontal bands split by wavy curves; things are drawn in depth order (higher in the frame =
farther = drawn first) so nearer objects occlude farther ones. Each object is evaluated only inside its
bounding box, in a local frame ``(u, v)`` in which the shape fits the square [-1, 1]².
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sseg.data.world_vocab import (
    CLASS_COLOURS,
    CLASS_ID,
    COLOURS,
    GROUND_CLASSES,
    THING_CLASSES,
)

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


def jittered_colour(rng: np.random.Generator, name: str) -> Array:
    base = np.asarray(COLOURS[name], dtype=F32)
    return base * F32(rng.uniform(0.85, 1.12)) + rng.normal(0.0, 14.0, size=3).astype(F32)


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

# ----------------------------------------------------------------------------- thing textures
# Each class has characteristic textures, shared with some other classes.

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


_WINDOW_RGB = np.array((172, 192, 208), dtype=F32)


def _part_colours(name: str, base: Array, colour: str, rng: np.random.Generator) -> Array:
    """(5, 3) colour per part id; part 0 is unused."""
    table = np.repeat(base[None, :], 5, axis=0)
    if name == "tree":
        table[2] = jittered_colour(rng, "brown")
    elif name == "car":
        table[2] = jittered_colour(rng, "black")
        table[3] = _WINDOW_RGB
    elif name == "house":
        roof_choices = [c for c in ("red", "brown", "gray", "black") if c != colour]
        table[2] = jittered_colour(rng, str(rng.choice(roof_choices)))
        table[3] = jittered_colour(rng, "brown") * F32(0.75)
        table[4] = _WINDOW_RGB
    elif name == "fish":
        table[2] = jittered_colour(rng, "black")
    elif name == "bird":
        table[2] = jittered_colour(rng, "orange" if colour != "orange" else "yellow")
    elif name == "flower":
        table[2] = jittered_colour(rng, str(rng.choice([c for c in ("yellow", "brown", "orange") if c != colour])))
    elif name in ("box", "cup"):
        table[2] = base * F32(0.65 if name == "box" else 0.8)
    return table


# ----------------------------------------------------------------------------- scene


def _random_pixel(rng: np.random.Generator, mask: Array) -> tuple[float, float] | None:
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    index = int(flat[rng.integers(flat.size)])
    height, width = mask.shape
    return (index // width + 0.5) / height, (index % width + 0.5) / width


def _place(rng: np.random.Generator, name: str, stuff: Array) -> tuple[float, float]:
    """Object centre (cy, cx) in [0, 1]: fish prefer water, birds/stars the sky, others the ground."""
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


def _draw_stuff(rng: np.random.Generator, size: int, label: Array, image: Array) -> tuple[dict[str, str], list[str]]:
    coords = _pixel_centres(size)
    ys, xs = coords[:, None], coords[None, :]
    has_sky = rng.random() < 0.85
    n_ground = 1 if rng.random() < 0.55 else 2
    grounds = [str(g) for g in rng.permutation(np.array(GROUND_CLASSES))[:n_ground]]
    horizon_level = rng.uniform(0.22, 0.6) if has_sky else 0.0
    order = (["sky"] if has_sky else []) + grounds
    colours = {name: str(rng.choice(CLASS_COLOURS[name])) for name in order}

    # Boundaries top-down: horizon (sky | first ground), then shoreline (first | second ground).
    boundaries: list[Array] = []
    if has_sky:
        boundaries.append(_wavy_curve(rng, xs, horizon_level, rng.uniform(0.0, 0.06)))
    if n_ground == 2:
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
) -> Scene:
    """Draw one scene with ``size``×``size`` pixels from ``rng``."""
    image = np.empty((size, size, 3), dtype=F32)
    label = np.empty((size, size), dtype=np.uint8)
    stuff_colours, stuff_order = _draw_stuff(rng, size, label, image)
    stuff_label = label.copy()

    names = _pick_things(rng, int(rng.integers(min_objects, max_objects + 1)))
    placed = []
    for name in names:
        cy, cx = _place(rng, name, stuff_label)
        extent = rng.uniform(0.18, 0.42) * (0.75 + 0.5 * cy)  # full size, bigger when nearer
        extent = min(0.9, extent * object_scale)
        placed.append((cy, cx, extent, name))
    placed.sort(key=lambda item: item[0])  # far (high in frame) first: painter's order

    coords = _pixel_centres(size)
    instance = np.zeros((size, size), dtype=np.uint8)
    things: list[ThingInstance] = []
    for number, (cy, cx, extent, name) in enumerate(placed, start=1):
        colour = str(rng.choice(CLASS_COLOURS[name]))
        base = jittered_colour(rng, colour)
        max_angle, mirror = _POSE[name]
        angle = rng.uniform(-max_angle, max_angle)
        flip = -1.0 if (mirror and rng.random() < 0.5) else 1.0
        half = extent / 2.0
        reach = half * (abs(math.cos(angle)) + abs(math.sin(angle)))
        y0, y1 = max(0, int((cy - reach) * size)), min(size, int(math.ceil((cy + reach) * size)))
        x0, x1 = max(0, int((cx - reach) * size)), min(size, int(math.ceil((cx + reach) * size)))
        dy = (coords[y0:y1, None] - F32(cy)) / F32(half)
        dx = (coords[None, x0:x1] - F32(cx)) / F32(half)
        cos_a, sin_a = F32(math.cos(angle)), F32(math.sin(angle))
        u = (dx * cos_a + dy * sin_a) * F32(flip)
        v = dy * cos_a - dx * sin_a
        parts = _SHAPES[name](u, v, rng)
        texture_kind = str(rng.choice(_CLASS_TEXTURES[name]))
        amplitude = F32(rng.uniform(0.12, 0.3))
        pattern = _texture(texture_kind, u, v, rng)
        shade = F32(1.0) + amplitude * pattern * (parts == 1)
        rgb = _part_colours(name, base, colour, rng)[parts] * shade[:, :, None]
        inside = parts > 0
        np.copyto(image[y0:y1, x0:x1], rgb, where=inside[:, :, None])
        np.copyto(label[y0:y1, x0:x1], np.uint8(CLASS_ID[name]), where=inside)
        np.copyto(instance[y0:y1, x0:x1], np.uint8(number), where=inside)
        relative = extent / object_scale  # the caption's size words describe the unscaled draw
        size_word = "small" if relative < 0.22 else ("big" if relative > 0.36 else None)
        ground_y = min(size - 1, int(cy * size))
        ground_x = min(size - 1, int(cx * size))
        ground = _stuff_name(int(stuff_label[ground_y, ground_x]))
        things.append(ThingInstance(name=name, colour=colour, size_word=size_word, ground=ground))

    visible = np.bincount(instance.ravel(), minlength=len(placed) + 1)
    for number, thing in enumerate(things, start=1):
        thing.visible_pixels = int(visible[number])
    things = [t for t in things if t.visible_pixels > 0]

    # Global lighting (per-channel tint) and sensor noise, so colours drift between images.
    tint = F32(rng.uniform(0.88, 1.12)) * (F32(1.0) + rng.normal(0.0, 0.035, size=3).astype(F32))
    image *= tint
    image += rng.standard_normal(size=image.shape, dtype=F32) * F32(3.5)
    np.clip(image, 0.0, 255.0, out=image)
    class_pixels = np.bincount(label.ravel(), minlength=len(CLASS_ID))
    return Scene(
        image=image.astype(np.uint8),
        label=label,
        things=things,
        stuff_colours=stuff_colours,
        class_pixels=class_pixels,
        stuff_order=stuff_order,
    )


_ID_TO_NAME = {i: n for n, i in CLASS_ID.items()}


def _stuff_name(class_id: int) -> str:
    return _ID_TO_NAME[class_id]
