"""The S-Seg+ pseudo-label Parquet cache: one file per chunk of the target's train images, written
atomically with a done marker; finished chunks are never redone (the pattern of ``pipelines/io/cache.py``).

A cache is identified by what decides its rows (:func:`pseudo_label_identity`): the S-Seg checkpoint's
SHA-256 (not its path), the class list, the inference settings, the target dataset and split, the chunk
size and the list of image keys. ``manifest.json`` records that identity; opening a directory whose
manifest differs is refused with a one-line error naming the first difference.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import PSEUDO_LABEL_SCHEMA, check_schema
from sseg.config import config_hash
from sseg.errors import DataError

# Bump when the row layout or the image / label encoding changes.
CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_FIELD_NAMES = {"checkpoint_sha256": "checkpoint", "class_names": "class list", "segment": "inference settings",
                "dataset": "dataset", "split": "split", "keys_sha256": "image list", "chunk_size": "chunk size",
                "format": "cache format"}

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


def pseudo_label_identity(*, checkpoint_file: str | Path, class_names: list[str], segment: dict, dataset: str,
                          split: str, keys: list[str], chunk_size: int) -> dict:
    """What decides the cache's rows (the manifest)."""
    return {"format": CACHE_FORMAT, "checkpoint_sha256": file_sha256(checkpoint_file),
            "class_names": list(class_names), "segment": dict(sorted(segment.items())), "dataset": dataset,
            "split": split, "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
            "num_images": len(keys), "chunk_size": int(chunk_size)}


def _describe(value) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}…"
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "…"


class PseudoLabelCache:
    """``root/manifest.json``, ``root/chunk-00000.parquet``, ``root/_done/chunk-00000.json``."""

    def __init__(self, root: str | Path, identity: dict):
        self.root = Path(root).resolve()  # absolute: Ray workers read these files from elsewhere
        self.identity = identity
        self.key = config_hash(identity)

    @classmethod
    def default_root(cls, base_dir: str | Path, identity: dict) -> Path:
        return Path(base_dir) / "pseudo_labels" / f"{identity['dataset']}-{config_hash(identity)}"

    def open(self) -> "PseudoLabelCache":
        """Create the directory and manifest, or check that an existing manifest is this identity."""
        manifest = self.root / MANIFEST
        if manifest.is_file():
            saved = json.loads(manifest.read_text())
            for field in ("format", "checkpoint_sha256", "class_names", "segment", "dataset", "split",
                          "keys_sha256", "chunk_size"):
                if saved.get(field) != self.identity.get(field):
                    raise DataError(
                        f"pseudo-label cache {self.root} was built with another {_FIELD_NAMES[field]} "
                        f"({_describe(saved.get(field))}, this run has {_describe(self.identity.get(field))}): "
                        "use another pseudo_labels.cache_dir or delete that one")
            return self
        if self.root.is_dir() and any(self.root.iterdir()):
            raise DataError(f"{self.root} is not empty and holds no pseudo-label manifest: use another "
                            "pseudo_labels.cache_dir")
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
            raise DataError(f"pseudo-label chunk {chunk} has {len(rows)} rows, expected {stop - start}")
        (self.root / "_done").mkdir(parents=True, exist_ok=True)
        rows = sorted(rows, key=lambda r: r["index"])
        table = pa.Table.from_pylist(rows, schema=PSEUDO_LABEL_SCHEMA)
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
            raise DataError(f"pseudo-label cache {self.root} misses {len(missing)} of {self.num_chunks()} chunks")
        files = [str(self.parquet_path(c)) for c in range(self.num_chunks())]
        check_schema(pq.read_schema(files[0]), PSEUDO_LABEL_SCHEMA, files[0])
        return files

    def num_rows(self) -> int:
        return sum(json.loads(m.read_text())["rows"] for m in (self.root / "_done").glob("*.json"))
