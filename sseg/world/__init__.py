"""The embedded procedural captioned world (see :mod:`sseg.world.generate` for what a scene is).

``generate`` (config, samples, shards and VOC split on disk), ``render`` (one scene; the presets in
``render_v1`` and ``render_v2``, primitives in ``drawing``), ``captions``, ``vocab`` (classes, synonyms,
colours) and ``voc`` (the labelled split's VOC layout).
"""

from sseg.world.generate import (WorldConfig, WorldSample, WorldSummary, ensure_world, generate_world,
                                 load_world_summary, render_sample, voc_id)
from sseg.world.vocab import (CLASS_SYNONYMS, STUFF_CLASSES, THING_CLASSES, WORLD_CLASSES, Preset,
                              mentioned_classes)

__all__ = [
    "CLASS_SYNONYMS", "STUFF_CLASSES", "THING_CLASSES", "WORLD_CLASSES", "Preset", "WorldConfig", "WorldSample",
    "WorldSummary", "ensure_world", "generate_world", "load_world_summary", "mentioned_classes", "render_sample",
    "voc_id",
]
