"""The TUSS mask-embedding Parquet cache: one file per chunk of a split's images, written atomically with a
done marker; finished chunks are never redone (``pipelines/io/chunked_cache.py``).

A cache is identified by what decides its rows (:func:`tuss_identity`): the VLM's weights by their SHA-256,
the mask source and its settings (a mask directory by the digest of its file list), the embedding method and
its settings, the dataset, split, class list and image list, and the chunk size. ``manifest.json`` records it;
a directory whose manifest differs is refused with a one-line error naming the first difference, so nothing
already cached is lost or mixed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.io.chunked_cache import ChunkedParquetCache, file_sha256, keys_sha256
from schemas.arrow import TUSS_MASK_SCHEMA
from sseg.config import config_hash
from sseg.errors import DataError
from sseg.tuss.table import MaskTable

CACHE_FORMAT = 1


def tuss_identity(*, vlm_file: str | None, vlm_kind: str, masks: dict, embed: dict, dataset: str, split: str,
                  class_names: list[str], keys: list[str], chunk_size: int) -> dict:
    return {"format": CACHE_FORMAT, "vlm_kind": vlm_kind,
            "vlm_sha256": file_sha256(vlm_file) if vlm_file else "random-init",
            "masks": dict(sorted(masks.items())), "embed": dict(sorted(embed.items())), "dataset": dataset,
            "split": split, "class_names": list(class_names), "keys_sha256": keys_sha256(keys),
            "num_images": len(keys), "chunk_size": int(chunk_size)}


class TussCache(ChunkedParquetCache):
    label = "mask-embedding"
    schema = TUSS_MASK_SCHEMA
    fields = {"format": "cache format", "vlm_sha256": "VLM", "masks": "mask source", "embed": "embedding method",
              "dataset": "dataset", "split": "split", "class_names": "class list", "keys_sha256": "image list",
              "chunk_size": "chunk size"}
    mismatch_hint = "use another cache_dir or delete it"
    foreign_dir_hint = "use another cache_dir"

    @classmethod
    def default_root(cls, base_dir: str | Path, identity: dict) -> Path:
        return Path(base_dir) / f"{identity['dataset']}-{identity['split']}-{config_hash(identity)}"


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
