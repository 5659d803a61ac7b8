"""The TUSS mask-embedding Parquet cache: one file per chunk of a split's images, written atomically with a
done marker; finished chunks are never redone (the pattern of ``pipelines/io/pseudo_label_cache.py``).

A cache is identified by what decides its rows (:func:`tuss_identity`): the VLM's weights by their SHA-256,
the mask source and its settings (a mask directory by the digest of its file list), the embedding method and
its settings, the dataset, split, class list and image list, and the chunk size. ``manifest.json`` records it;
a directory whose manifest differs is refused with a one-line error naming the first difference, so nothing
already cached is lost or mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.io.pseudo_label_cache import file_sha256
from schemas.arrow import TUSS_MASK_SCHEMA, check_schema
from sseg.config import config_hash
from sseg.errors import DataError
from sseg.tuss.table import MaskTable

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_FIELDS = {"format": "cache format", "vlm_sha256": "VLM", "masks": "mask source", "embed": "embedding method",
           "dataset": "dataset", "split": "split", "class_names": "class list", "keys_sha256": "image list",
           "chunk_size": "chunk size"}


def tuss_identity(*, vlm_file: str | None, vlm_kind: str, masks: dict, embed: dict, dataset: str, split: str,
                  class_names: list[str], keys: list[str], chunk_size: int) -> dict:
    return {"format": CACHE_FORMAT, "vlm_kind": vlm_kind,
            "vlm_sha256": file_sha256(vlm_file) if vlm_file else "random-init",
            "masks": dict(sorted(masks.items())), "embed": dict(sorted(embed.items())), "dataset": dataset,
            "split": split, "class_names": list(class_names),
            "keys_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(), "num_images": len(keys),
            "chunk_size": int(chunk_size)}


def _describe(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return f"sha256 {text[:12]}…"
    return text if len(text) <= 120 else text[:117] + "…"


class TussCache:
    """``root/manifest.json``, ``root/chunk-00000.parquet``, ``root/_done/chunk-00000.json``."""

    def __init__(self, root: str | Path, identity: dict):
        self.root = Path(root).resolve()  # absolute: Ray workers write from elsewhere
        self.identity = identity
        self.key = config_hash(identity)

    @classmethod
    def default_root(cls, base_dir: str | Path, identity: dict) -> Path:
        return Path(base_dir) / f"{identity['dataset']}-{identity['split']}-{config_hash(identity)}"

    def open(self) -> "TussCache":
        """Create the directory and manifest, or check that an existing manifest is this identity."""
        manifest = self.root / MANIFEST
        if manifest.is_file():
            saved = json.loads(manifest.read_text())
            for field, name in _FIELDS.items():
                if saved.get(field) != self.identity.get(field):
                    raise DataError(f"mask-embedding cache {self.root} was built with another {name} "
                                    f"({_describe(saved.get(field))}, this run has "
                                    f"{_describe(self.identity.get(field))}): use another cache_dir or delete it")
            return self
        if self.root.is_dir() and any(self.root.iterdir()):
            raise DataError(f"{self.root} is not empty and holds no mask-embedding manifest: use another cache_dir")
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

    def todo(self) -> list[int]:
        return [c for c in range(self.num_chunks()) if not self._marker(c).is_file()]

    def write_chunk(self, chunk: int, rows: list[dict]) -> int:
        start, stop = self.chunk_range(chunk)
        if len(rows) != stop - start:
            raise DataError(f"mask-embedding chunk {chunk} has {len(rows)} rows, expected {stop - start}")
        (self.root / "_done").mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["index"]), schema=TUSS_MASK_SCHEMA)
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
        missing = self.todo()
        if missing:
            raise DataError(f"mask-embedding cache {self.root} misses {len(missing)} of {self.num_chunks()} chunks")
        files = [str(self.parquet_path(c)) for c in range(self.num_chunks())]
        check_schema(pq.read_schema(files[0]), TUSS_MASK_SCHEMA, files[0])
        return files


def read_table(cache: TussCache, with_truth: bool = True) -> tuple[MaskTable, dict[str, int], list[str]]:
    """The cache as a :class:`MaskTable` (images without masks left out), the count of images per status
    (``ok`` and every skip reason) plus ``dropped_masks``, and the keys of the images kept."""
    columns = ["key", "status", "dropped_masks", "num_masks", "area", "embed_dim", "embeddings"]
    columns += ["gt_counts", "owned_counts"] if with_truth else []
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in cache.files()])
    status = table.column("status").to_pylist()
    counts: dict[str, int] = {}
    for s in status:
        counts[s] = counts.get(s, 0) + 1
    counts["dropped_masks"] = int(pc.sum(table.column("dropped_masks")).as_py() or 0)
    num = np.asarray(table.column("num_masks").to_pylist(), dtype=np.int64)
    keep = num > 0
    keys = [k for k, ok in zip(table.column("key").to_pylist(), keep) if ok]
    if not keys:
        raise DataError(f"no image of {cache.identity['dataset']} {cache.identity['split']} has a mask "
                        f"(statuses: {counts})")
    dims = set(np.asarray(table.column("embed_dim").to_pylist())[keep].tolist())
    if len(dims) != 1:
        raise DataError(f"mask-embedding cache {cache.root} mixes embedding sizes {sorted(dims)}")
    dim, classes = dims.pop(), len(cache.identity["class_names"])

    def flat(name: str, width: int, dtype) -> np.ndarray:
        values = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=dtype).reshape(-1, width)

    gt = owned = None
    if with_truth and all(len(v) for v, n in zip(table.column("gt_counts").to_pylist(), num) if n):
        gt, owned = flat("gt_counts", classes, np.int64), flat("owned_counts", classes, np.int64)
    mask_table = MaskTable(image_ids=keys, image_index=np.repeat(np.arange(len(keys)), num[keep]),
                           area=flat("area", 1, np.float64)[:, 0], embeddings=flat("embeddings", dim, np.float32),
                           gt_counts=gt, owned_counts=owned)
    return mask_table, counts, keys
