"""Drawing of one world scene: stuff background, thing objects, pixel labels.

Stuff (sky, grass, water, sand) fills the frame in horizontal bands split by wavy curves; things are
drawn in depth order (higher in the frame = farther = drawn first) so nearer objects occlude farther
ones. How each thing class looks (shape, colours, texture, parts, size, habitat) is an
:class:`~sseg.world.drawing.Appearance` per preset (:data:`APPEARANCES`): ``v1`` is the original world,
kept byte for byte (:mod:`sseg.world.render_v1`), ``v2`` the class-typical one and ``debug`` v2 with one
unique colour per class (:mod:`sseg.world.render_v2`).
"""

from __future__ import annotations

import math

import numpy as np

from sseg.errors import DataError
from sseg.world.drawing import (F32, Appearance, Look, Scene, ThingInstance, draw_stuff, jittered_colour,
                                part_colours, pick_things, pixel_centres, stuff_layout, stuff_name, texture_pattern)
from sseg.world.render_v1 import V1_APPEARANCES, layout_v1
from sseg.world.render_v2 import DEBUG_APPEARANCES, TYPICAL_SHARE, V2_APPEARANCES, layout_v2, stuff_layout_v2
from sseg.world.vocab import CLASS_ID, THING_CLASSES

APPEARANCES: dict[str, dict[str, Appearance]] = {  # keys: PRESETS
    "v1": V1_APPEARANCES, "v2": V2_APPEARANCES, "debug": DEBUG_APPEARANCES}
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
        stuff_colours, stuff_order = draw_stuff(rng, size, label, image, *stuff_layout(rng))
        stuff_label = label.copy()
        names = pick_things(rng, int(rng.integers(min_objects, max_objects + 1)))
        placed = layout_v1(rng, names, table, stuff_label, object_scale)
    else:  # things first, so the stuff can hold the places they need
        names = pick_things(rng, int(rng.integers(min_objects, max_objects + 1)))
        usual = [bool(rng.random() < TYPICAL_SHARE) for _ in names]
        needs = {table[name].habitat for name, typical in zip(names, usual) if typical}
        stuff_colours, stuff_order = draw_stuff(rng, size, label, image, *stuff_layout_v2(rng, needs))
        stuff_label = label.copy()
        placed = layout_v2(rng, names, usual, table, stuff_label, object_scale)

    coords = pixel_centres(size)
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
        pattern = texture_pattern(texture_kind, u, v, rng)
        shade = F32(1.0) + amplitude * pattern * (parts == 1)
        rgb = part_colours(app, base, colour, rng, look)[parts] * shade[:, :, None]
        inside = parts > 0
        np.copyto(image[y0:y1, x0:x1], rgb, where=inside[:, :, None])
        np.copyto(label[y0:y1, x0:x1], np.uint8(CLASS_ID[item.name]), where=inside)
        np.copyto(instance[y0:y1, x0:x1], np.uint8(number), where=inside)
        ground_y = min(size - 1, int(item.ground[0] * size))
        ground_x = min(size - 1, int(item.ground[1] * size))
        ground = stuff_name(int(stuff_label[ground_y, ground_x]))
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
