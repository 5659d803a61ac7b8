"""Procedural captioned world: determinism, presets, caption noise, class overlap, shard and VOC outputs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sseg  # noqa: F401  (before webdataset/ray pull in torchvision)
from sseg.config import load_config
from sseg.data.shards import ShardWriter
from sseg.world import (
    CLASS_SYNONYMS,
    STUFF_CLASSES,
    THING_CLASSES,
    WORLD_CLASSES,
    WorldConfig,
    ensure_world,
    generate_world,
    mentioned_classes,
    render_sample,
    voc_id,
)
from sseg.world import render as world_render
from sseg.world.render import APPEARANCES, preset_appearances, render_scene
from sseg.world.voc import mark_boundaries
from sseg.world.vocab import COLOURS, PRESETS, THING_COLOURS, plural
from sseg.errors import ConfigError, DataError

SMALL = WorldConfig(image_size=32, num_train=11, shard_size=4, num_val=5, num_labeled_train=3)
NOISE_SAMPLES = 1000


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    return generate_world(tmp_path_factory.mktemp("world") / "w", SMALL)


@pytest.fixture(scope="module")
def many_samples():
    config = WorldConfig(image_size=32)
    return [render_sample(3, i, config) for i in range(NOISE_SAMPLES)]


# ----------------------------------------------------------------------------- vocabulary


def test_class_lists_and_synonyms():
    assert WORLD_CLASSES == THING_CLASSES + STUFF_CLASSES
    assert len(THING_CLASSES) >= 10 and len(STUFF_CLASSES) >= 3
    assert len(set(WORLD_CLASSES)) == len(WORLD_CLASSES)
    assert set(CLASS_SYNONYMS) == set(WORLD_CLASSES)
    seen: dict[str, str] = {}
    for name, synonyms in CLASS_SYNONYMS.items():
        assert synonyms[0] == name
        for word in synonyms:  # a word must name one class only, or mention parsing is ambiguous
            assert seen.setdefault(word, name) == name
            assert seen.setdefault(plural(word), name) == name


def test_plural_and_mention_parsing():
    assert [plural(w) for w in ("ball", "box", "fish", "daisy", "bush", "sky")] == [
        "balls", "boxes", "fish", "daisies", "bushes", "skies"]
    assert mentioned_classes("Two Boxes and a daisy by the LAKE, under grey clouds.") == {
        "box", "flower", "water", "sky"}
    assert mentioned_classes("a photo of something") == set()


# ----------------------------------------------------------------------------- rendering


def test_render_sample_is_a_function_of_seed_split_index():
    config = WorldConfig(image_size=48)
    a = render_sample(7, 12, config)
    render_sample(7, 3, config)  # rendering other samples in between changes nothing
    b = render_sample(7, 12, config)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.caption == b.caption
    assert a.image.shape == (48, 48, 3) and a.image.dtype == np.uint8
    assert a.label.shape == (48, 48) and a.label.dtype == np.uint8
    assert int(a.label.max()) < len(WORLD_CLASSES)
    for other in (render_sample(7, 13, config), render_sample(8, 12, config), render_sample(7, 12, config, "val")):
        assert not np.array_equal(a.image, other.image)


def test_objects_are_the_classes_covering_the_minimum_area(many_samples):
    config = WorldConfig(image_size=32)
    for sample in many_samples[:100]:
        counts = np.bincount(sample.label.ravel(), minlength=len(WORLD_CLASSES))
        expected = tuple(n for i, n in enumerate(WORLD_CLASSES) if counts[i] >= config.min_pixels)
        assert sample.objects == expected
        assert any(n in STUFF_CLASSES for n in sample.objects)


def test_every_class_appears(many_samples):
    seen = set().union(*(s.objects for s in many_samples[:300]))
    assert seen == set(WORLD_CLASSES)


def test_classes_are_not_separable_by_mean_colour(many_samples):
    from sklearn.neighbors import NearestCentroid

    features, targets = [], []
    for sample in many_samples[:600]:
        for class_id in np.unique(sample.label):
            pixels = sample.image[sample.label == class_id].astype(np.float64)
            features.append(pixels.mean(axis=0))
            targets.append(class_id)
    features, targets = np.array(features), np.array(targets)
    half = len(targets) // 2
    accuracy = NearestCentroid().fit(features[:half], targets[:half]).score(features[half:], targets[half:])
    assert accuracy < 0.8


# ----------------------------------------------------------------------------- presets


def _digest(config: WorldConfig, split: str, seed: int, count: int) -> str:
    digest = hashlib.sha256()
    for index in range(count):
        sample = render_sample(seed, index, config, split)  # type: ignore[arg-type]
        digest.update(sample.image.tobytes())
        digest.update(sample.label.tobytes())
        digest.update(sample.caption.encode("utf-8"))
    return digest.hexdigest()


# Computed with the world code as it was before presets existed: preset v1 must keep every byte.
_V1_DIGESTS = [
    ({"image_size": 64}, "train", 0, "627ebccb80977b8030976c1a7a50c1cadaddd95134242f3c4e1524aef011752e"),
    ({"image_size": 64}, "val", 0, "f9e3c3b4ece60fcd9b00a6a92ab6274de265738e6627e7355571e6d245dcb271"),
    ({"image_size": 64}, "labeled_train", 0, "392f076c29085fe391833618a3b1cd38b8dbec16bdb40e5644a04c73a49a99f0"),
    ({"image_size": 32}, "train", 3, "739babb307fc69bfdcdba440f99597a241f65c9e13cf1cc62fd58dc9d371a4af"),
    ({"image_size": 32}, "val", 3, "48c10ea3424c0f15188f20802b2bbd258dbe859ce39a434de06fadc3748ca558"),
    ({"image_size": 32}, "labeled_train", 3, "e73ce574d6c112cf85d9f04474b855bd6ed13c099bdfefcaba4ef72c96d06da9"),
    ({"image_size": 48, "object_scale": 1.7, "min_objects": 0, "max_objects": 6}, "val", 1,
     "7a051d845189fb5f9e4347f0a0c99932bed74fed1e99fce396aa1d1a00a7a908"),
]


@pytest.mark.parametrize(("fields", "split", "seed", "expected"), _V1_DIGESTS)
def test_preset_v1_is_the_original_world_byte_for_byte(fields, split, seed, expected):
    assert _digest(WorldConfig(preset="v1", **fields), split, seed, 6) == expected


# Computed with the world code before it moved from sseg/data/world*.py into the sseg/world package
# (render split into drawing / render_v1 / render_v2): the move kept every byte of v2 and debug too.
_MOVED_DIGESTS = [
    ("v2", "train", 64, 0, "d5b4bd62825ffc9d7dc79da96087129d0918761df6ea34d93660385202d87c81"),
    ("v2", "val", 32, 3, "6f40a24a70a8d9199141deddb0d2e02b0d56559549096d93685b2ade9bfe2cd3"),
    ("v2", "labeled_train", 64, 0, "e86269410ac4b44c318d1cc59acb46eaeb8257ea87dbc8f54d90f79d2c9acd22"),
    ("debug", "val", 64, 0, "f5fe76ddf7988d606813b415d7f2ef802b1c648389f258f39bee5b144ada5a89"),
    ("debug", "train", 32, 3, "60314addc14e98a43ed8f9c4d9a0b4f86dc38acfbc74a5c007e63eb72228dc3a"),
]


@pytest.mark.parametrize(("preset", "split", "size", "seed", "expected"), _MOVED_DIGESTS)
def test_presets_v2_and_debug_keep_their_bytes(preset, split, size, seed, expected):
    assert _digest(WorldConfig(preset=preset, image_size=size), split, seed, 6) == expected


@pytest.mark.parametrize("preset", ["v2", "debug"])
def test_presets_render_deterministically_and_differ(preset):
    config = WorldConfig(image_size=64, preset=preset)
    first = _digest(config, "val", 0, 6)
    assert _digest(config, "val", 0, 6) == first
    assert first != _digest(config.model_copy(update={"preset": "v1"}), "val", 0, 6)
    assert first != _digest(config, "val", 1, 6)


def test_every_thing_class_has_an_appearance_in_every_preset():
    assert tuple(APPEARANCES) == PRESETS == tuple(THING_COLOURS)
    for preset in PRESETS:
        table = preset_appearances(preset)
        assert set(table) == set(THING_CLASSES) == set(THING_COLOURS[preset])
        for name, appearance in table.items():
            assert appearance.colours == THING_COLOURS[preset][name]
            assert set(appearance.colours) <= set(COLOURS) and appearance.textures
    v2 = preset_appearances("v2")
    assert all(len(a.textures) == 1 for a in v2.values())  # one signature texture per class
    assert {a.habitat for a in v2.values()} == {"ground", "water", "sky"}


def test_unknown_preset_or_missing_appearance_is_rejected(monkeypatch):
    with pytest.raises(ConfigError, match="preset"):
        load_config(WorldConfig, overrides=["preset=v3"])
    with pytest.raises(DataError, match="unknown world preset 'v3'"):
        render_scene(np.random.default_rng(0), 32, 1, 2, preset="v3")
    partial = {name: app for name, app in APPEARANCES["v2"].items() if name != "cup"}
    monkeypatch.setitem(world_render.APPEARANCES, "v2", partial)
    with pytest.raises(DataError, match="preset 'v2' has no appearance for thing class 'cup'") as err:
        render_sample(0, 0, WorldConfig(image_size=32))
    assert "\n" not in str(err.value)


def test_debug_colours_are_unique_per_class():
    colours = [THING_COLOURS["debug"][name] for name in THING_CLASSES]
    assert all(len(c) == 1 for c in colours)
    assert len({c[0] for c in colours}) == len(THING_CLASSES)
    for index in range(40):  # every drawn thing has its class's colour (the caption's colour word)
        scene = render_scene(np.random.default_rng([0, 0, index]), 32, 1, 4, preset="debug")
        assert all(t.colour == THING_COLOURS["debug"][t.name][0] for t in scene.things)


@pytest.mark.parametrize(("preset", "low", "high"), [("debug", 0.9, 1.0), ("v2", 0.0, 0.45)])
def test_mean_colour_names_things_in_debug_only(preset, low, high):
    from sklearn.neighbors import NearestCentroid

    config = WorldConfig(image_size=32, preset=preset)
    features, targets = [], []
    for index in range(300):
        sample = render_sample(0, index, config, "val")
        for class_id in np.unique(sample.label):
            if class_id < len(THING_CLASSES) and (sample.label == class_id).sum() >= 8:
                features.append(sample.image[sample.label == class_id].mean(axis=0))
                targets.append(class_id)
    features, targets = np.array(features), np.array(targets)
    half = len(targets) // 2
    accuracy = NearestCentroid().fit(features[:half], targets[:half]).score(features[half:], targets[half:])
    assert low <= accuracy <= high


def test_v2_colours_are_each_shared_by_three_or_four_things():
    table = THING_COLOURS["v2"]
    users = {colour: [n for n in THING_CLASSES if colour in table[n]] for colour in COLOURS}
    assert all(3 <= len(names) <= 4 for names in users.values()), users
    assert all(3 <= len(table[n]) <= 4 for n in THING_CLASSES)


def test_v2_things_are_larger_and_mostly_in_their_usual_place():
    usual = {"fish": {"water"}, "bird": {"sky"}, "star": {"sky"}}
    fractions, typical, total = [], 0, 0
    for index in range(150):
        scene = render_scene(np.random.default_rng([0, 1, index]), 64, 1, 4, preset="v2")
        fractions.append(float((scene.label < len(THING_CLASSES)).mean()))
        for thing in scene.things:
            assert thing.colour in THING_COLOURS["v2"][thing.name]
            typical += thing.ground in usual.get(thing.name, {"grass", "sand"})
            total += 1
    assert np.mean(fractions) > 0.18
    assert 0.78 < typical / total < 0.93


# ----------------------------------------------------------------------------- captions


def test_caption_noise_rate_and_kind(many_samples):
    noisy = 0
    for sample in many_samples:
        named = mentioned_classes(sample.caption)
        assert named == set(sample.mentioned), sample.caption
        differs = named != set(sample.objects)
        assert differs == (sample.caption_noise != "none"), sample.caption
        if differs:  # noise omits one present class or adds one absent class, never more
            assert len(named ^ set(sample.objects)) == 1
            if sample.caption_noise == "omit":
                assert named < set(sample.objects)
            else:
                extra = (named - set(sample.objects)).pop()
                assert WORLD_CLASSES.index(extra) not in set(np.unique(sample.label))
        noisy += differs
    assert abs(noisy / NOISE_SAMPLES - 0.2) < 0.05


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_caption_noise_extremes(rate):
    config = WorldConfig(image_size=24, caption_noise=rate)
    samples = [render_sample(0, i, config) for i in range(80)]
    noisy = [mentioned_classes(s.caption) != set(s.objects) for s in samples]
    assert all(noisy) if rate == 1.0 else not any(noisy)


def test_captions_are_varied_and_prefer_canonical_names(many_samples):
    captions = [s.caption for s in many_samples]
    assert len(set(captions)) > 0.95 * len(captions)
    assert len({c.split()[0].lower() for c in captions}) > 15  # varied openings / word order
    words = [w for c in captions for w in c.lower().replace(",", " ").replace(".", " ").split()]
    for name, synonyms in CLASS_SYNONYMS.items():
        uses = {s: words.count(s) + (words.count(plural(s)) if plural(s) != s else 0) for s in synonyms}
        assert max(uses, key=uses.get) == name, (name, uses)
    assert any(w in words for w in ("two", "2", "three", "pair"))  # counts
    assert any(w in words for w in ("rolls", "flies", "swims", "lying", "standing"))  # verbs


# ----------------------------------------------------------------------------- shards


def test_shards_have_img2dataset_layout(world):
    root = world.root
    assert [p.name for p in world.shard_paths] == ["00000.tar", "00001.tar", "00002.tar"]
    assert world.counts == {"train": 11, "val": 5, "labeled_train": 3}
    keys = []
    for shard, path in enumerate(world.shard_paths):
        stats = json.loads((root / "shards" / f"{shard:05d}_stats.json").read_text())
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644
                       for m in members)
            files = {m.name: tar.extractfile(m).read() for m in members}
        shard_keys = sorted({name.split(".")[0] for name in files})
        assert stats["count"] == stats["successes"] == len(shard_keys)
        for key in shard_keys:
            jpg, txt = files[f"{key}.jpg"], files[f"{key}.txt"].decode()
            meta = json.loads(files[f"{key}.json"])
            index = int(key)
            assert meta["key"] == key and len(key) == 9
            assert meta["caption"] == txt == render_sample(0, index, SMALL).caption
            assert meta["url"] == f"world://0/{index}" and meta["status"] == "success"
            assert meta["sha256"] == hashlib.sha256(jpg).hexdigest()
            assert meta["error_message"] is None and meta["exif"] is None
            assert meta["width"] == meta["height"] == meta["original_width"] == meta["original_height"] == 32
            assert Image.open(io.BytesIO(jpg)).size == (32, 32)
        keys += shard_keys
    assert keys == [f"{i:09d}" for i in range(11)]
    summary = json.loads((root / "world.json").read_text())
    assert summary["classes"] == list(WORLD_CLASSES) and summary["config"] == SMALL.model_dump(mode="json")
    assert sum(summary["class_image_counts"]["train"].values()) > 0


def test_shards_read_with_webdataset(world):
    import webdataset as wds

    samples = list(wds.WebDataset(world.shard_pattern, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(11)]
    for sample in samples:
        assert {"jpg", "txt", "json"} <= set(sample)
        assert json.loads(sample["json"])["caption"] == sample["txt"].decode()


def test_shards_read_with_ray_data(world, ray_session):
    rows = ray_session.data.read_webdataset([str(p) for p in world.shard_paths]).take_all()
    assert sorted(r["__key__"] for r in rows) == [f"{i:09d}" for i in range(11)]
    for row in rows:  # Ray's default decoder: jpg -> HxWx3 array, txt -> str, json -> dict
        assert row["jpg"].shape == (32, 32, 3)
        assert row["json"]["key"] == row["__key__"]
        assert row["txt"] == row["json"]["caption"] == render_sample(0, int(row["__key__"]), SMALL).caption


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world, tmp_path):
    again = generate_world(tmp_path / "again", SMALL, workers=2)  # process count must not matter
    assert _tree_bytes(again.root) == _tree_bytes(world.root)
    other = generate_world(tmp_path / "other", SMALL.model_copy(update={"seed": 1}))
    for mine, theirs in zip(world.shard_paths, other.shard_paths):
        assert mine.read_bytes() != theirs.read_bytes()
    assert (other.voc_root / "SegmentationClass" / "val_000000.png").read_bytes() != (
        world.voc_root / "SegmentationClass" / "val_000000.png").read_bytes()


def test_shard_writer_rejects_bad_keys(tmp_path):
    with ShardWriter(tmp_path / "x.tar") as writer:
        with pytest.raises(DataError):
            writer.write("a.b", [("txt", b"x")])
        writer.write("ok", [("txt", b"x")])
    assert not (tmp_path / "x.tar.tmp").exists()
    with tarfile.open(tmp_path / "x.tar") as tar:
        assert tar.getnames() == ["ok.txt"]


# ----------------------------------------------------------------------------- VOC split


def test_mark_boundaries_hand_computed():
    label = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1],
                      [2, 2, 2, 2],
                      [2, 2, 2, 2]], dtype=np.uint8)
    expected = np.array([[0, 255, 1, 1],
                         [255, 255, 255, 255],
                         [2, 2, 2, 2],
                         [2, 2, 2, 2]], dtype=np.uint8)
    assert np.array_equal(mark_boundaries(label), expected)


def test_voc_split_loads_with_pil(world):
    voc = world.voc_root
    val_ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    train_ids = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert val_ids == [voc_id("val", i) for i in range(5)] and len(train_ids) == 3
    assert (voc / "class_names.txt").read_text().split("\n")[:-1] == list(WORLD_CLASSES)
    allowed = set(range(len(WORLD_CLASSES))) | {255}
    for split, ids in (("val", val_ids), ("labeled_train", train_ids)):
        for index, name in enumerate(ids):
            png = Image.open(voc / "SegmentationClass" / f"{name}.png")
            assert png.mode == "P"
            assert png.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
            values = np.array(png)
            assert set(np.unique(values)) <= allowed and 255 in values
            expected = render_sample(SMALL.seed, index, SMALL, split)
            assert np.array_equal(values, mark_boundaries(expected.label))
            assert Image.open(voc / "JPEGImages" / f"{name}.jpg").size == (32, 32)
    # Labelled images come from their own stream, not from the captioned training shards.
    with tarfile.open(world.shard_paths[0]) as tar:
        first_train_jpg = tar.extractfile("000000000.jpg").read()
    assert (voc / "JPEGImages" / "val_000000.jpg").read_bytes() != first_train_jpg


def test_voc_without_ignore_band(tmp_path):
    config = SMALL.model_copy(update={"num_train": 1, "num_val": 2, "num_labeled_train": 0,
                                      "ignore_boundaries": False})
    summary = generate_world(tmp_path / "w", config)
    values = np.array(Image.open(summary.voc_root / "SegmentationClass" / "val_000001.png"))
    assert np.array_equal(values, render_sample(0, 1, config, "val").label)
    assert not (summary.voc_root / "ImageSets" / "Segmentation" / "train.txt").exists()


# ----------------------------------------------------------------------------- config / ensure


def test_config_validation():
    with pytest.raises(ConfigError, match="min_objects"):
        load_config(WorldConfig, overrides=["min_objects=5", "max_objects=2"])
    with pytest.raises(ConfigError, match="image_size"):
        load_config(WorldConfig, overrides=["image_size=0"])
    with pytest.raises(ConfigError, match="caption_noise"):
        load_config(WorldConfig, overrides=["caption_noise=1.5"])
    with pytest.raises(ConfigError, match="unknown config field"):
        load_config(WorldConfig, overrides=["colour=red"])
    assert SMALL.num_shards == 3
    with pytest.raises(DataError, match="split"):
        render_sample(0, 0, SMALL, "test")  # type: ignore[arg-type]


def test_ensure_world_generates_once_and_regenerates_on_change(tmp_path):
    config = WorldConfig(image_size=24, num_train=3, shard_size=2, num_val=1, num_labeled_train=0)
    out = tmp_path / "world"
    first = ensure_world(out, config)
    assert first.generated and first.root == out and first.shard_paths[0].is_file()
    stamp = (out / "world.json").stat().st_mtime_ns
    second = ensure_world(out, config)
    assert not second.generated and (out / "world.json").stat().st_mtime_ns == stamp
    changed = ensure_world(out, config.model_copy(update={"num_train": 5}))
    assert changed.generated and changed.counts["train"] == 5 and len(changed.shard_paths) == 3
    recoloured = ensure_world(out, changed.config.model_copy(update={"preset": "debug"}))
    assert recoloured.generated and recoloured.config.preset == "debug"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # no temp or stale dirs left
    foreign = tmp_path / "not_a_world"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a generated world"):
        ensure_world(foreign, config)
    assert (foreign / "precious.txt").read_text() == "keep me"
