"""The embedded procedural captioned world: image-caption pairs with pixel ground truth, no download.

**What a scene is.** Every pixel has one of 14 classes (:data:`WORLD_CLASSES`, no background
class): 10 things (ball, box, tree, car, house, fish, bird, flower, star, cup) and 4 stuff classes
(sky, grass, water, sand). Stuff fills the frame in bands: usually sky on top, then one or two ground
classes split by wavy horizon/shore lines. ``min_objects``-``max_objects`` things are drawn over it
(scale varies with depth; nearer objects occlude farther ones), then per-image lighting and noise.

**Presets** (``WorldConfig.preset``) decide how things look:

* ``v2`` (default): class-typical appearance. Each thing class has a colour palette of 3-4 colours,
  each colour shared by 3-4 things (colour narrows the class but does not name it), one signature
  texture (striped balls, checkered boxes, brick houses, scaly fish...), detail parts in contrasting
  colours (car wheels and windows, house roof/door/window, fish tail and eye, bird wings and beak,
  cup handle and rim, flower centre, tree trunk, box lid and tape, star tips, ball seam and
  highlight), a class-typical size (houses, trees, cars large; balls, cups, stars, flowers small)
  and context: 85 % of things in their usual place (fish in water, birds and stars in the sky, the
  others standing on grass or sand; the scene's stuff is chosen to hold them), 15 % somewhere else
  (a floating house, a fish on the sand). Things are about twice v1's area (~22 % of the pixels at
  the default counts); captions' size words are relative to the class's typical size.
* ``debug``: v2 with one unique colour per thing class and parts in shades of it, so colour alone
  names the class (a sanity preset).
* ``v1``: the original world, byte for byte: wide shared palettes, several textures per class,
  small parts, looser context.

:data:`~sseg.world.render.APPEARANCES` holds the per-preset tables (:mod:`sseg.world.render_v1`, :mod:`sseg.world.render_v2`).

**Captions.** Varied English from several templates, synonyms (the canonical class name most often),
counts, colour/size adjectives, verbs, place phrases for stuff and web-like decoration. A clean
caption names every present class; a fraction ``caption_noise`` of captions omit one present class
or name one absent class.

**Determinism.** Sample ``i`` of a split depends only on ``(seed, split, i)`` through
``np.random.default_rng([seed, stream, i])``; shards can be made in any order or in parallel and
two runs give byte-identical files. The caption-only shards use the ``train`` stream; labelled images
come from the separate ``val`` and ``labeled_train`` streams.

**On disk** (:func:`generate_world`)::

    out_dir/world.json                         config, classes, counts (written last)
    out_dir/shards/{00000..}.tar               img2dataset-style WebDataset: {key}.jpg/.txt/.json
    out_dir/shards/{00000..}_stats.json        img2dataset-style per-shard stats; _SUCCESS summary
    out_dir/voc/JPEGImages/{id}.jpg            Pascal VOC layout for the labelled splits
    out_dir/voc/SegmentationClass/{id}.png     'P' PNG, VOC palette, value = class id, 255 = ignore
    out_dir/voc/ImageSets/Segmentation/{val,train}.txt, out_dir/voc/class_names.txt
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from sseg.config import StrictModel
from sseg.data.shards import ShardWriter, encode_jpeg, img2dataset_record, write_json
from sseg.world.captions import CaptionNoise, compose_caption
from sseg.world.render import render_scene
from sseg.world.voc import encode_label_png, mark_boundaries, voc_dirs
from sseg.world.vocab import (
    CLASS_SYNONYMS,
    STUFF_CLASSES,
    THING_CLASSES,
    WORLD_CLASSES,
    Preset,
    mentioned_classes,
)
from sseg.errors import DataError

__all__ = [
    "CLASS_SYNONYMS", "STUFF_CLASSES", "THING_CLASSES", "WORLD_CLASSES", "WORLD_FORMAT",
    "Split", "WorldConfig", "WorldSample", "WorldSummary", "ensure_world", "generate_world",
    "load_world_summary", "mentioned_classes", "render_sample", "voc_id",
]

WORLD_FORMAT = "sseg-world-v2"  # v2: the config has a preset
Split = Literal["train", "val", "labeled_train"]
_STREAMS: dict[str, int] = {"train": 0, "val": 1, "labeled_train": 2}


class WorldConfig(StrictModel):
    """Everything that decides the world's bytes (``ensure_world`` regenerates when it changes)."""

    seed: int = Field(0, ge=0)
    image_size: int = Field(64, ge=16, le=1024)
    num_train: int = Field(20000, ge=1, description="caption-only pairs in the WebDataset shards")
    num_val: int = Field(500, ge=0, description="labelled validation images (VOC layout)")
    num_labeled_train: int = Field(
        2000, ge=0, description="labelled training images (VOC train.txt): the target train set of self-training and SemiVL"
    )
    shard_size: int = Field(1000, ge=1)
    caption_noise: float = Field(0.2, ge=0.0, le=1.0)
    min_objects: int = Field(1, ge=0, le=8)
    max_objects: int = Field(4, ge=1, le=8)
    jpeg_quality: int = Field(90, ge=1, le=100)
    ignore_boundaries: bool = True
    # Multiplies every object's size. At small image sizes objects must span several cells of a
    # stride-4 mask to be learnable at all (see README, "Does it learn?").
    object_scale: float = Field(1.0, gt=0.1, le=3.0)
    min_visible_fraction: float = Field(
        0.005, ge=0.0, le=0.5, description="a class counts as present (captioned) above this area"
    )
    preset: Preset = Field("v2", description="how things look: v2 class-typical, debug colour-coded, v1 original")

    @model_validator(mode="after")
    def _objects_range(self) -> "WorldConfig":
        if self.min_objects > self.max_objects:
            raise ValueError(f"min_objects ({self.min_objects}) must be <= max_objects ({self.max_objects})")
        return self

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_train / self.shard_size)

    @property
    def min_pixels(self) -> int:
        return max(1, math.ceil(self.min_visible_fraction * self.image_size**2))


@dataclass(frozen=True)
class WorldSample:
    image: np.ndarray  # HxWx3 uint8
    label: np.ndarray  # HxW uint8 class ids (no ignore band)
    caption: str
    objects: tuple[str, ...]  # classes covering >= min_visible_fraction, in class-id order
    mentioned: tuple[str, ...]  # classes the caption names (differs from objects iff noisy)
    caption_noise: CaptionNoise  # "none", "omit" or "add"


def render_sample(seed: int, index: int, config: WorldConfig, split: Split = "train") -> WorldSample:
    """Sample ``index`` of ``split``; depends only on (seed, split, index) and the config's drawing fields."""
    if split not in _STREAMS:
        raise DataError(f"world split must be one of {', '.join(_STREAMS)}, got {split!r}")
    if seed < 0 or index < 0:
        raise DataError(f"world seed and index must be >= 0, got seed={seed} index={index}")
    rng = np.random.default_rng([seed, _STREAMS[split], index])
    scene = render_scene(
        rng, config.image_size, config.min_objects, config.max_objects, config.object_scale, config.preset
    )
    caption = compose_caption(rng, scene, config.min_pixels, config.caption_noise)
    objects = tuple(n for i, n in enumerate(WORLD_CLASSES) if scene.class_pixels[i] >= config.min_pixels)
    return WorldSample(
        image=scene.image,
        label=scene.label,
        caption=caption.text,
        objects=objects,
        mentioned=caption.mentioned,
        caption_noise=caption.noise,
    )


def voc_id(split: Split, index: int) -> str:
    return f"{'train' if split == 'labeled_train' else split}_{index:06d}"


@dataclass(frozen=True)
class WorldSummary:
    root: Path
    config: WorldConfig
    shard_paths: tuple[Path, ...]
    voc_root: Path
    counts: dict[str, int]  # images per split: train (captioned), val, labeled_train
    class_image_counts: dict[str, dict[str, int]]  # split -> class -> images where it is present
    noisy_captions: int  # in the train shards
    generated: bool  # False when ensure_world found the world already there

    @property
    def shard_pattern(self) -> str:
        """Brace pattern for webdataset, e.g. ``.../shards/{00000..00019}.tar``."""
        last = len(self.shard_paths) - 1
        return str(self.root / "shards" / f"{{00000..{last:05d}}}.tar")


# ----------------------------------------------------------------------------- generation tasks


def _empty_counts() -> dict[str, int]:
    return {name: 0 for name in WORLD_CLASSES}


def _write_shard(out_dir: str, shard: int, config_json: dict[str, Any]) -> dict[str, Any]:
    config = WorldConfig.model_validate(config_json)
    start = shard * config.shard_size
    stop = min(config.num_train, start + config.shard_size)
    counts = _empty_counts()
    noisy = 0
    shard_dir = Path(out_dir) / "shards"
    with ShardWriter(shard_dir / f"{shard:05d}.tar") as writer:
        for index in range(start, stop):
            sample = render_sample(config.seed, index, config, "train")
            jpg = encode_jpeg(sample.image, config.jpeg_quality)
            key = f"{index:09d}"
            record = img2dataset_record(
                key, sample.caption, f"world://{config.seed}/{index}", jpg,
                config.image_size, config.image_size,
            )
            writer.write(key, [
                ("jpg", jpg),
                ("txt", sample.caption.encode("utf-8")),
                ("json", json.dumps(record).encode("utf-8")),
            ])
            for name in sample.objects:
                counts[name] += 1
            noisy += sample.caption_noise != "none"
    stats = {
        "count": stop - start,
        "successes": stop - start,
        "failed_to_download": 0,
        "failed_to_resize": 0,
        "status_dict": {"success": stop - start},
        "class_image_counts": counts,
        "noisy_captions": noisy,
    }
    write_json(shard_dir / f"{shard:05d}_stats.json", stats)
    return {"task": "shard", "count": stop - start, "class_image_counts": counts, "noisy": noisy}


def _write_voc_range(out_dir: str, split: Split, start: int, stop: int, config_json: dict[str, Any]) -> dict[str, Any]:
    config = WorldConfig.model_validate(config_json)
    dirs = voc_dirs(Path(out_dir) / "voc")
    counts = _empty_counts()
    for index in range(start, stop):
        sample = render_sample(config.seed, index, config, split)
        label = mark_boundaries(sample.label) if config.ignore_boundaries else sample.label
        name = voc_id(split, index)
        (dirs["images"] / f"{name}.jpg").write_bytes(encode_jpeg(sample.image, config.jpeg_quality))
        (dirs["labels"] / f"{name}.png").write_bytes(encode_label_png(label))
        for cls in sample.objects:
            counts[cls] += 1
    return {"task": split, "count": stop - start, "class_image_counts": counts}


def _run_tasks(tasks: list[tuple[Any, ...]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        return [fn(*args) for fn, *args in tasks]
    # spawn, not fork: the parent may hold torch/Ray threads that a fork would copy mid-state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        futures = [pool.submit(fn, *args) for fn, *args in tasks]
        return [f.result() for f in futures]


def generate_world(out_dir: str | Path, config: WorldConfig, workers: int = 1) -> WorldSummary:
    """Write the whole world into ``out_dir`` (created if needed; existing files are overwritten).

    ``workers`` > 1 renders shards in that many processes; the bytes do not depend on it.
    """
    out = Path(out_dir)
    config_json = config.model_dump(mode="json")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    dirs = voc_dirs(out / "voc")
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    (out / "world.json").unlink(missing_ok=True)  # written last: its presence means "complete"

    tasks: list[tuple[Any, ...]] = [(_write_shard, str(out), s, config_json) for s in range(config.num_shards)]
    labelled: list[tuple[Split, int]] = [("val", config.num_val), ("labeled_train", config.num_labeled_train)]
    for split, total in labelled:
        for start in range(0, total, config.shard_size):
            tasks.append((_write_voc_range, str(out), split, start, min(total, start + config.shard_size), config_json))
    results = _run_tasks(tasks, workers)

    class_counts = {"train": _empty_counts(), "val": _empty_counts(), "labeled_train": _empty_counts()}
    counts = {"train": 0, "val": 0, "labeled_train": 0}
    noisy = 0
    for result in results:
        split = "train" if result["task"] == "shard" else result["task"]
        counts[split] += result["count"]
        noisy += result.get("noisy", 0)
        for name, value in result["class_image_counts"].items():
            class_counts[split][name] += value

    (dirs["sets"] / "val.txt").write_text("".join(f"{voc_id('val', i)}\n" for i in range(config.num_val)))
    if config.num_labeled_train:
        (dirs["sets"] / "train.txt").write_text(
            "".join(f"{voc_id('labeled_train', i)}\n" for i in range(config.num_labeled_train))
        )
    (out / "voc" / "class_names.txt").write_text("".join(f"{name}\n" for name in WORLD_CLASSES))
    shards = [f"shards/{s:05d}.tar" for s in range(config.num_shards)]
    write_json(out / "shards" / "_SUCCESS", {
        "count": counts["train"], "successes": counts["train"], "failed_to_download": 0,
        "failed_to_resize": 0, "num_shards": config.num_shards, "noisy_captions": noisy,
    })
    write_json(out / "world.json", {
        "format": WORLD_FORMAT,
        "config": config_json,
        "classes": list(WORLD_CLASSES),
        "thing_classes": list(THING_CLASSES),
        "stuff_classes": list(STUFF_CLASSES),
        "class_synonyms": {k: list(v) for k, v in CLASS_SYNONYMS.items()},
        "shards": shards,
        "voc_root": "voc",
        "counts": counts,
        "class_image_counts": class_counts,
        "noisy_captions": noisy,
    })
    return load_world_summary(out, generated=True)


def load_world_summary(out_dir: str | Path, generated: bool = False) -> WorldSummary:
    """Read ``out_dir/world.json`` back into a :class:`WorldSummary`."""
    out = Path(out_dir)
    path = out / "world.json"
    if not path.is_file():
        raise DataError(f"no generated world at {out} (world.json missing)")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path} is not valid JSON") from None
    if payload.get("format") != WORLD_FORMAT:
        raise DataError(f"{path} has format {payload.get('format')!r}, expected {WORLD_FORMAT!r}")
    return WorldSummary(
        root=out,
        config=WorldConfig.model_validate(payload["config"]),
        shard_paths=tuple(out / s for s in payload["shards"]),
        voc_root=out / payload["voc_root"],
        counts=dict(payload["counts"]),
        class_image_counts={k: dict(v) for k, v in payload["class_image_counts"].items()},
        noisy_captions=int(payload["noisy_captions"]),
        generated=generated,
    )


def _existing_config(out: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads((out / "world.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return payload.get("config") if payload.get("format") == WORLD_FORMAT else None


def ensure_world(out_dir: str | Path, config: WorldConfig, workers: int = 1) -> WorldSummary:
    """Return the world at ``out_dir``, generating it first if absent or made with another config.

    Generation goes to a sibling temp dir that is renamed into place, so a crash never leaves a
    half world behind. An existing non-world directory (no world.json, not empty) is never replaced.
    """
    out = Path(out_dir)
    if _existing_config(out) == config.model_dump(mode="json"):
        return load_world_summary(out, generated=False)
    if out.exists() and not (out / "world.json").exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not a generated world (no world.json); refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    stale = out.with_name(f".{out.name}.stale-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        generate_world(partial, config, workers=workers)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if _existing_config(out) == config.model_dump(mode="json"):  # another process finished first
        shutil.rmtree(partial, ignore_errors=True)
        return load_world_summary(out, generated=False)
    if out.exists():
        os.replace(out, stale)
    os.replace(partial, out)
    shutil.rmtree(stale, ignore_errors=True)
    return load_world_summary(out, generated=True)
