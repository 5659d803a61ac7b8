"""Ray Data plane: shard resolution, corrupt shards skipped and counted, the pseudo-mask cache and its resume."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sseg.errors import DataError


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture()
def corrupt_shards(tmp_path, tiny_world):
    """One good shard, a truncated one, a non-tar file and a shard with bad members."""
    good = sorted((tiny_world / "shards").glob("*.tar"))[0]
    shutil.copy(good, tmp_path / "00000.tar")
    data = good.read_bytes()
    (tmp_path / "00001.tar").write_bytes(data[: len(data) // 2 + 100])  # truncated mid-member
    (tmp_path / "00002.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with tarfile.open(tmp_path / "00003.tar", "w") as tar:
        _add(tar, "k0.jpg", _jpeg(0)); _add(tar, "k0.txt", b"a ball on the grass")  # noqa: E702
        _add(tar, "k1.jpg", b"\xff\xd8 not really a jpeg"); _add(tar, "k1.txt", b"a box")  # noqa: E702
        _add(tar, "k2.jpg", b""); _add(tar, "k2.txt", b"a cup")  # noqa: E702
        _add(tar, "k3.jpg", _jpeg(3))  # no caption
        _add(tar, "k4.txt", b"only a caption")  # no image
        _add(tar, "k5.png", _png_gray16()); _add(tar, "k5.txt", b"a grey star")  # noqa: E702
    return tmp_path


def _png_gray16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)).save(buf, format="PNG")
    return buf.getvalue()


def test_resolve_shards_dir_glob_braces_and_missing(tiny_world):
    from pipelines.io.shards import expand_braces, resolve_shards

    shard_dir = tiny_world / "shards"
    all_shards = resolve_shards(str(shard_dir))
    assert len(all_shards) == 3 and all_shards == sorted(all_shards)
    assert resolve_shards(str(shard_dir / "*.tar")) == all_shards
    assert resolve_shards(str(shard_dir / "{00000..00002}.tar")) == all_shards
    assert expand_braces("s3://b/{08..10}.tar") == ["s3://b/08.tar", "s3://b/09.tar", "s3://b/10.tar"]
    assert resolve_shards(["s3://bucket/cc12m/00000.tar"]) == ["s3://bucket/cc12m/00000.tar"]
    with pytest.raises(DataError, match="not found"):
        resolve_shards(str(shard_dir / "nope.tar"))
    with pytest.raises(DataError, match="no .tar shards"):
        resolve_shards(str(shard_dir / "*.zip"))


def test_corrupt_members_and_shards_are_skipped_and_counted(ray_session, corrupt_shards, tiny_world):
    from pipelines.io import stats
    from pipelines.io.shards import DecodeSamples, read_shards, resolve_shards

    counter = stats.make_counter("test-corrupt")
    ds = read_shards(resolve_shards(str(corrupt_shards))).map_batches(
        DecodeSamples(32, "eval", counter=counter), batch_size=16, batch_format="numpy")
    rows = ds.take_all()
    skipped = stats.fetch(counter)
    keys = Counter(r["shard"] for r in rows)
    assert keys["00000.tar"] == 32  # the good shard is complete
    assert 0 < keys["00001.tar"] < 32  # samples before the truncation are kept
    assert {r["key"] for r in rows if r["shard"] == "00003.tar"} == {"k0", "k5"}
    assert skipped == {"truncated_shard": 1, "corrupt_shard": 1, "undecodable_image": 1,
                       "empty_image": 1, "missing_caption": 1, "missing_image": 1}
    assert all(r["image"].shape == (32, 32, 3) and r["image"].dtype == np.uint8 for r in rows)
    assert "ball" in next(r["words"] for r in rows if r["key"] == "k0").split()


def _png(height: int, width: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_skip_reasons_without_ray(tmp_path):
    """Every reason, shard-level and sample-level, through iterate_shard and DecodeSamples directly."""
    from pipelines.io.shards import DecodeSamples
    from pipelines.io.webdataset_source import RAW_COLUMNS, iterate_shard

    (tmp_path / "zero.tar").write_bytes(b"")  # a 0-byte file: empty, not corrupt
    with tarfile.open(tmp_path / "no_files.tar", "w"):
        pass  # a valid tar that holds nothing: empty too
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with tarfile.open(tmp_path / "members.tar", "w") as tar:
        _add(tar, "k0.jpg", _jpeg(0)); _add(tar, "k0.txt", b"a ball")  # noqa: E702
        _add(tar, "k1.png", _png(1, 1)); _add(tar, "k1.txt", b"a dot")  # noqa: E702 - 1x1: too small
        _add(tar, "k2.png", _png(1, 40)); _add(tar, "k2.txt", b"a line")  # noqa: E702 - too small
        _add(tar, "k3.png", _png(2, 2)); _add(tar, "k3.txt", b"a tiny square")  # noqa: E702 - kept
        _add(tar, "k4.jpg", b""); _add(tar, "k4.txt", b"a cup")  # noqa: E702 - no bytes
        _add(tar, "k5.jpg", b"\xff\xd8 not really a jpeg"); _add(tar, "k5.txt", b"a box")  # noqa: E702
    counts: Counter = Counter()
    counter = SimpleNamespace(add=SimpleNamespace(remote=counts.update))  # the skip-counter actor's API
    decode = DecodeSamples(16, "eval", counter=counter)
    kept = []
    for shard in sorted(tmp_path.glob("*.tar")):
        with open(shard, "rb") as stream:
            rows = list(iterate_shard(stream, str(shard)))
        batch = {name: np.array([r[name] for r in rows], dtype=object) for name in RAW_COLUMNS}
        kept += decode(batch)["key"].tolist()
    assert sorted(kept) == ["k0", "k3"]
    assert counts == {"empty_shard": 2, "corrupt_shard": 1, "too_small": 2, "empty_image": 1,
                             "undecodable_image": 1}


def test_pseudo_mask_runs_are_named_like_pretraining_runs():
    import re

    from pipelines.runs.pseudo_masks import run_name
    from schemas.configs import PseudoMaskJobConfig

    assert re.fullmatch(r"pseudo-masks-pixel-\d{8}-\d{6}", run_name(PseudoMaskJobConfig()))
    dino = PseudoMaskJobConfig.model_validate({"pseudo_masks": {"generator": "dino"}})
    assert re.fullmatch(r"pseudo-masks-dino-\d{8}-\d{6}", run_name(dino))
    named = PseudoMaskJobConfig.model_validate({"tracking": {"run_name": "cc12m-dino-k8"}})
    assert run_name(named) == "cc12m-dino-k8"


def _digest(paths) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_cache_job_writes_schema_skips_done_shards_and_counts(ray_session, tiny_world, tmp_path, mlflow_uri,
                                                            capsys):
    from jobs.pseudo_masks import main
    from schemas.arrow import PSEUDO_MASK_SCHEMA, check_schema

    cache = tmp_path / "cache"
    args = ["world=null", f"data.shards={tiny_world / 'shards'}", "data.image_size=64",
            f"cache_dir={cache}", f"labeled_split={tiny_world / 'voc'}", "shards_per_pass=2",
            "pseudo_masks.max_iter=5"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["samples"] == 96 and first["shards_processed"] == 3 and first["skipped_total"] == 0
    assert 0.0 < first["oracle_miou"] <= 1.0 and first["mlflow_run_id"]
    assert Path(first["cache_dir"]).parent == cache
    cache = Path(first["cache_dir"])  # <base>/<generator>-<config hash>
    files = sorted(cache.glob("*.parquet"))
    assert len(files) == 3
    table = pq.read_table(files[0])
    check_schema(table.schema, PSEUDO_MASK_SCHEMA, str(files[0]))
    row = table.slice(0, 1).to_pylist()[0]
    mask = np.asarray(Image.open(io.BytesIO(row["mask_png"])))
    assert mask.shape == (64, 64) and mask.max() < row["num_segments"] == 8
    assert row["generator"] == "pixel" and row["words"] and row["caption"]
    assert row["config_hash"] == first["cache_key"] and cache.name == f"pixel-{first['cache_key']}"
    assert table.column("key").to_pylist() == sorted(table.column("key").to_pylist())
    before = _digest(files)

    assert main(args) == 0  # second run: nothing to do, files untouched
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["shards_processed"] == 0 and second["samples"] == 0 and second["cache_rows"] == 96
    assert _digest(sorted(cache.glob("*.parquet"))) == before

    keys_before = pq.read_table(cache / "00001.parquet", columns=["key"]).column("key").to_pylist()
    (cache / "_done" / "00001.tar.json").unlink()  # an interrupted shard is redone, the others untouched
    assert main(args) == 0
    third = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert third["shards_processed"] == 1 and third["cache_rows"] == 96
    after = _digest(sorted(cache.glob("*.parquet")))
    assert {k: v for k, v in after.items() if k != "00001.parquet"} == \
        {k: v for k, v in before.items() if k != "00001.parquet"}
    assert pq.read_table(cache / "00001.parquet", columns=["key"]).column("key").to_pylist() == keys_before

    assert main(args[:-1] + ["pseudo_masks.max_iter=6"]) == 0  # another config: a cache beside it
    other = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert other["shards_processed"] == 3 and Path(other["cache_dir"]) != cache


def test_cache_reader_rejects_foreign_parquet(tmp_path):
    import pyarrow as pa

    from pipelines.io.cache import PseudoMaskCache

    cache = PseudoMaskCache(tmp_path, "abc", "pixel")
    (cache.root / "_done").mkdir(parents=True)
    pq.write_table(pa.table({"key": ["a"]}), cache.root / "00000.parquet")
    (cache.root / "_done" / "00000.tar.json").write_text(json.dumps({"shard": "00000.tar", "rows": 1}))
    with pytest.raises(DataError, match="missing column 'shard'"):
        cache.files()


def test_cache_rows_keep_their_jpeg_bytes_and_name_their_cache_key():
    from pipelines.stages.pseudo_masks import EncodeCacheRows

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 24, 24, 3), dtype=np.uint8)
    batch = {"key": np.array(["a", "b"], dtype=object), "shard": np.array(["s", "s"], dtype=object),
             "caption": np.array(["x", "y"], dtype=object), "words": np.array(["x", "y"], dtype=object),
             "image": images, "segments": np.zeros((2, 24, 24), np.uint8)}
    rows = EncodeCacheRows("pixel", {"num_segments": 8}, "k123")(batch)
    for image, encoded in zip(images, rows["image"]):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=95)  # what the cache has always held
        assert encoded == buf.getvalue()
    assert rows["config_hash"].tolist() == ["k123", "k123"]


def _dino(path, **kw):
    from sseg.pseudo_masks import PseudoMaskConfig

    return PseudoMaskConfig(generator="dino", dino_checkpoint=str(path), **kw)


def test_cache_key_follows_the_dino_weights_not_their_path(tmp_path, monkeypatch):
    import os

    from pipelines.io.cache import PseudoMaskCache, pseudo_mask_cache_key
    from sseg.pseudo_masks import dino

    hashed = []
    real_sha256 = dino.hashlib.sha256
    monkeypatch.setattr(dino, "hashlib", SimpleNamespace(sha256=lambda: hashed.append(1) or real_sha256()))
    weights = tmp_path / "a" / "dino.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"weights-one" * 1000)
    first = pseudo_mask_cache_key(_dino(weights))
    assert pseudo_mask_cache_key(_dino(weights).model_dump(mode="json")) == first
    assert len(hashed) == 1  # hashed once per process while the file is unchanged
    # the device does not count
    assert pseudo_mask_cache_key(_dino(weights, device="cpu")) == first
    assert pseudo_mask_cache_key(_dino(weights), image_size=64) != pseudo_mask_cache_key(_dino(weights), 96)

    stat = weights.stat()
    weights.write_bytes(b"weights-two" * 1000)  # other weights, same path and size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = pseudo_mask_cache_key(_dino(weights))
    assert second != first

    moved = tmp_path / "b" / "renamed.pth"
    moved.parent.mkdir()
    os.replace(weights, moved)  # the same weights at another path
    assert pseudo_mask_cache_key(_dino(moved)) == second
    copy = tmp_path / "copy.pth"
    copy.write_bytes(moved.read_bytes())
    assert pseudo_mask_cache_key(_dino(copy)) == second
    assert PseudoMaskCache.for_config(tmp_path, _dino(copy)).root == tmp_path.resolve() / f"dino-{second}"
    assert pseudo_mask_cache_key(_dino(copy, dino_feature="keys")) != second


def test_cache_key_follows_the_caption_word_extractor(monkeypatch):
    from pipelines.io.cache import pseudo_mask_cache_key
    from sseg.data import captions
    from sseg.pseudo_masks import PseudoMaskConfig

    monkeypatch.setattr(captions, "caption_words_method", lambda: "nltk-pos")
    tagged = pseudo_mask_cache_key(PseudoMaskConfig())
    monkeypatch.setattr(captions, "caption_words_method", lambda: "stopword-filter")
    assert pseudo_mask_cache_key(PseudoMaskConfig()) != tagged


def test_pixel_cache_key_ignores_dino_fields_and_missing_checkpoints_fail_in_one_line(tmp_path):
    from pipelines.io.cache import pseudo_mask_cache_key
    from sseg.errors import CheckpointError, ConfigError
    from sseg.pseudo_masks import PseudoMaskConfig

    pixel = pseudo_mask_cache_key(PseudoMaskConfig())
    assert pseudo_mask_cache_key(PseudoMaskConfig(
        dino_checkpoint=str(tmp_path / "nowhere.pth"), dino_feature="keys", dino_allow_random_init=True,
        bf16=False, device="cpu")) == pixel
    assert pseudo_mask_cache_key(PseudoMaskConfig(pixel_stride=4)) != pixel
    assert pseudo_mask_cache_key(PseudoMaskConfig(num_segments=6)) != pixel
    with pytest.raises(CheckpointError, match=r"^DINO checkpoint not found: .*nowhere.pth$"):
        pseudo_mask_cache_key(_dino(tmp_path / "nowhere.pth"))
    with pytest.raises(ConfigError, match="dino_checkpoint is required"):
        pseudo_mask_cache_key(PseudoMaskConfig(generator="dino"))
    random_init = PseudoMaskConfig(generator="dino", dino_allow_random_init=True)
    assert pseudo_mask_cache_key(random_init) != pseudo_mask_cache_key(random_init.model_copy(update={"seed": 1}))


def test_training_text_modes():
    from pipelines.stages.train_data import training_text

    batch = {"caption": np.array(["Two balls lying on the sand", "a photo"], dtype=object),
             "words": np.array([["balls", "lying", "sand"], []], dtype=object)}
    assert training_text(batch, "caption").tolist() == ["Two balls lying on the sand", "a photo"]
    assert training_text(batch, "words").tolist() == ["balls lying sand", "a photo"]  # caption fallback


def test_caption_words_keep_nouns_and_verbs():
    from sseg.data.captions import caption_words_method, extract_words

    words = extract_words("Two small red balls are lying in the sand under a blue sky.")
    assert {"balls", "lying", "sand", "sky"} <= set(words)
    assert not {"two", "small", "red", "the", "a", "under", "blue"} & set(words)
    assert caption_words_method() in ("nltk-pos", "stopword-filter")


def test_seeded_crops_follow_seed_key_and_epoch(monkeypatch):
    """CropCachedSamples with a seed: the same (seed, key, epoch) crops alike in any batch order, another
    epoch or seed crops anew; without a seed the crops are random."""
    from pipelines.stages import train_data

    rng = np.random.default_rng(0)

    def png(array: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(array).save(out, format="PNG")
        return out.getvalue()

    n = 6
    images = [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(n)]
    masks = [rng.integers(0, 8, (48, 48), dtype=np.uint8) for _ in range(n)]
    batch = {"key": np.array([f"s{i:03d}" for i in range(n)], dtype=object),
             "image": np.array([png(a) for a in images], dtype=object),
             "mask_png": np.array([png(m) for m in masks], dtype=object),
             "caption": np.array(["a car"] * n, dtype=object),
             "words": np.array([["car"]] * n + [[]], dtype=object)[:n]}
    epoch = {"value": 0}
    monkeypatch.setattr(train_data, "_execution_index", lambda: epoch["value"])

    def crops(seed, order=range(n)):
        order = list(order)
        out = train_data.CropCachedSamples(32, (0.3, 1.0), seed=seed)({k: v[order] for k, v in batch.items()})
        return {batch["key"][i]: (out["image"][j], out["segments"][j]) for j, i in enumerate(order)}

    first = crops(7)
    again = crops(7, order=reversed(range(n)))
    assert all(np.array_equal(first[k][0], again[k][0]) and np.array_equal(first[k][1], again[k][1])
               for k in first)
    other_seed = crops(8)
    assert sum(not np.array_equal(first[k][0], other_seed[k][0]) for k in first) >= n - 1
    epoch["value"] = 1
    next_epoch = crops(7)
    assert sum(not np.array_equal(first[k][0], next_epoch[k][0]) for k in first) >= n - 1
    unseeded = [crops(None), crops(None)]
    assert sum(not np.array_equal(unseeded[0][k][0], unseeded[1][k][0]) for k in first) >= n - 1
