"""The S-Seg+ pseudo-label Parquet cache: one file per chunk of the target's train images, written
atomically with a done marker; finished chunks are never redone (``pipelines/io/chunked_cache.py``).

A cache is identified by what decides its rows (:func:`pseudo_label_identity`): the S-Seg checkpoint's
SHA-256 (not its path), the class list, the inference settings, the target dataset and split, the chunk
size and the list of image keys. ``manifest.json`` records that identity; opening a directory whose
manifest differs is refused with a one-line error naming the first difference.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.io.chunked_cache import ChunkedParquetCache, file_sha256, keys_sha256
from schemas.arrow import PSEUDO_LABEL_SCHEMA
from sseg.config import config_hash

# Bump when the row layout or the image / label encoding changes.
CACHE_FORMAT = 1


def pseudo_label_identity(*, checkpoint_file: str | Path, class_names: list[str], segment: dict, dataset: str,
                          split: str, keys: list[str], chunk_size: int) -> dict:
    """What decides the cache's rows (the manifest)."""
    return {"format": CACHE_FORMAT, "checkpoint_sha256": file_sha256(checkpoint_file),
            "class_names": list(class_names), "segment": dict(sorted(segment.items())), "dataset": dataset,
            "split": split, "keys_sha256": keys_sha256(keys), "num_images": len(keys), "chunk_size": int(chunk_size)}


class PseudoLabelCache(ChunkedParquetCache):
    label = "pseudo-label"
    schema = PSEUDO_LABEL_SCHEMA
    fields = {"format": "cache format", "checkpoint_sha256": "checkpoint", "class_names": "class list",
              "segment": "inference settings", "dataset": "dataset", "split": "split", "keys_sha256": "image list",
              "chunk_size": "chunk size"}
    mismatch_hint = "use another pseudo_labels.cache_dir or delete that one"
    foreign_dir_hint = "use another pseudo_labels.cache_dir"

    @classmethod
    def default_root(cls, base_dir: str | Path, identity: dict) -> Path:
        return Path(base_dir) / "pseudo_labels" / f"{identity['dataset']}-{config_hash(identity)}"
