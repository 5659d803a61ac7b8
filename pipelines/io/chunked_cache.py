"""A resumable Parquet cache of one split: one file per chunk of its images, written atomically with a done
marker, so finished chunks are never redone. ``manifest.json`` records the cache's identity (what decides its
rows); opening a directory whose manifest differs is refused with a one-line error naming the first difference,
so nothing already cached is lost or mixed. Each cache (pseudo-labels, TUSS mask embeddings) names its
schema, its identity fields and its messages."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import check_schema
from sseg.config import config_hash
from sseg.errors import DataError

MANIFEST = "manifest.json"

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, computed once per process per (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def keys_sha256(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def describe(value) -> str:
    """A manifest value in an error message: digests shortened, long values cut."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}…"
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "…"


class ChunkedParquetCache:
    """``root/manifest.json``, ``root/chunk-00000.parquet``, ``root/_done/chunk-00000.json``."""

    label: ClassVar[str]  # "pseudo-label", "mask-embedding": the cache's name in messages
    schema: ClassVar[pa.Schema]
    fields: ClassVar[dict[str, str]]  # identity field -> its name in the mismatch message, checked in this order
    mismatch_hint: ClassVar[str]  # what to do about a manifest that differs
    foreign_dir_hint: ClassVar[str]  # what to do about a non-empty directory without a manifest

    def __init__(self, root: str | Path, identity: dict):
        self.root = Path(root).resolve()  # absolute: Ray workers read and write these files from elsewhere
        self.identity = identity
        self.key = config_hash(identity)

    def open(self):
        """Create the directory and manifest, or check that an existing manifest is this identity."""
        manifest = self.root / MANIFEST
        if manifest.is_file():
            saved = json.loads(manifest.read_text())
            for field, name in self.fields.items():
                if saved.get(field) != self.identity.get(field):
                    raise DataError(f"{self.label} cache {self.root} was built with another {name} "
                                    f"({describe(saved.get(field))}, this run has "
                                    f"{describe(self.identity.get(field))}): {self.mismatch_hint}")
            return self
        if self.root.is_dir() and any(self.root.iterdir()):
            raise DataError(f"{self.root} is not empty and holds no {self.label} manifest: {self.foreign_dir_hint}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.identity, "cache_key": self.key}, sort_keys=True, indent=1))
        os.replace(tmp, manifest)
        return self

    def num_chunks(self) -> int:
        n, size = self.identity["num_images"], self.identity["chunk_size"]
        return (n + size - 1) // size

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        size = self.identity["chunk_size"]
        return chunk * size, min(self.identity["num_images"], (chunk + 1) * size)

    def _marker(self, chunk: int) -> Path:
        return self.root / "_done" / f"chunk-{chunk:05d}.json"

    def parquet_path(self, chunk: int) -> Path:
        return self.root / f"chunk-{chunk:05d}.parquet"

    def is_done(self, chunk: int) -> bool:
        return self._marker(chunk).is_file()

    def todo(self) -> list[int]:
        return [c for c in range(self.num_chunks()) if not self.is_done(c)]

    def write_chunk(self, chunk: int, rows: list[dict]) -> int:
        start, stop = self.chunk_range(chunk)
        if len(rows) != stop - start:
            raise DataError(f"{self.label} chunk {chunk} has {len(rows)} rows, expected {stop - start}")
        (self.root / "_done").mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["index"]), schema=self.schema)
        target = self.parquet_path(chunk)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
        marker = self._marker(chunk)
        marker_tmp = marker.with_suffix(".tmp")
        marker_tmp.write_text(json.dumps({"chunk": chunk, "rows": len(rows), "cache_key": self.key}))
        os.replace(marker_tmp, marker)
        return len(rows)

    def files(self) -> list[str]:
        """The finished chunks' Parquet files (schema-checked); an unfinished cache is an error."""
        missing = self.todo()
        if missing:
            raise DataError(f"{self.label} cache {self.root} misses {len(missing)} of {self.num_chunks()} chunks")
        files = [str(self.parquet_path(c)) for c in range(self.num_chunks())]
        check_schema(pq.read_schema(files[0]), self.schema, files[0])
        return files

    def num_rows(self) -> int:
        return sum(json.loads(m.read_text())["rows"] for m in (self.root / "_done").glob("*.json"))
