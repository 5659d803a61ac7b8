"""A WebDataset datasource that survives corrupt shards.

Ray's ``read_webdataset`` fails the whole read task when a tar is truncated or not a tar at all. This
subclass of Ray's own ``WebDatasetDatasource`` reads the same img2dataset layout with the same tar/grouping
helpers, but normalises every sample to a fixed set of columns (so blocks from different shards share one
schema) and turns a broken stream into one marker row (``error`` set) after the samples read before the
break, so the other shards and the good part of this one still flow and the loss is counted. A shard with
no samples (a 0-byte file, a tar with no files) gets a marker row too, so it is counted, not lost quietly.
"""

from __future__ import annotations

import json
import logging
import tarfile
import zlib
from typing import Iterator

import pyarrow as pa
from pipelines.io.ray_private import webdataset_internals

WebDatasetDatasource, _group_by_keys, _tar_file_iterator = webdataset_internals()

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt", "caption", "text")
_CHUNK = 64

RAW_COLUMNS = ("key", "shard", "image", "caption", "meta", "error")


def _raw_row(key: str, shard: str, image: bytes | None, caption: str | None, meta: str | None,
             error: str | None) -> dict:
    return {"key": key, "shard": shard, "image": image, "caption": caption, "meta": meta, "error": error}


def normalise_sample(sample: dict, shard: str) -> dict:
    image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
    caption_bytes = next((sample[e] for e in CAPTION_EXTENSIONS if e in sample), None)
    meta = sample.get("json")
    caption = None
    if caption_bytes is not None:
        caption = caption_bytes.decode("utf-8", errors="replace").strip()
    if not caption and meta:
        try:  # img2dataset also stores the caption in the json
            caption = (json.loads(meta).get("caption") or "").strip() or None
        except (ValueError, AttributeError):
            pass
    return _raw_row(sample["__key__"], shard, image, caption,
                    meta.decode("utf-8", errors="replace") if isinstance(meta, bytes) else meta, None)


class _CountingReader:
    """A read-only stream that counts the bytes read through it (tarfile's stream mode only reads)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.bytes += len(data)
        return data

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def iterate_shard(stream, shard: str) -> Iterator[dict]:
    """Rows of one tar stream. A shard that gives no sample ends with one row whose ``error`` names
    the reason: ``empty_shard`` (no bytes at all, or a valid tar holding no files), else
    ``corrupt_shard`` (not a readable tar); a stream that breaks after some samples ends with
    ``truncated_shard``."""
    read = 0
    counted = _CountingReader(stream)
    try:
        files = _tar_file_iterator(counted)
        for sample in _group_by_keys(files, meta=dict(__url__=shard)):
            yield normalise_sample(sample, shard)
            read += 1
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        reason = "truncated_shard" if read else ("empty_shard" if counted.bytes == 0 else "corrupt_shard")
        log.warning("shard %s: %s after %d samples (%s)", shard, reason, read, exc)
        yield _raw_row(f"{shard}#error", shard, None, None, None, reason)
        return
    if read == 0:
        log.warning("shard %s: empty_shard (no samples)", shard)
        yield _raw_row(f"{shard}#error", shard, None, None, None, "empty_shard")


def rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pydict(
        {name: [r[name] for r in rows] for name in RAW_COLUMNS},
        schema=pa.schema([
            ("key", pa.string()), ("shard", pa.string()), ("image", pa.binary()),
            ("caption", pa.string()), ("meta", pa.string()), ("error", pa.string()),
        ]),
    )


class TolerantWebDatasetDatasource(WebDatasetDatasource):
    def __init__(self, paths, **kwargs):
        super().__init__(paths, decoder=None, **kwargs)

    def _read_stream(self, stream, path: str) -> Iterator[pa.Table]:
        rows: list[dict] = []
        for row in iterate_shard(stream, path):
            rows.append(row)
            if len(rows) >= _CHUNK:
                yield rows_to_table(rows)
                rows = []
        if rows:
            yield rows_to_table(rows)
