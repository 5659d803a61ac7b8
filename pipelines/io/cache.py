"""The pseudo-mask Parquet cache: one file per input shard, written atomically, with a done marker.

Rows of a shard are sorted by key before writing, so a shard written twice from the same input gives the
same bytes; finished shards are never rewritten. A cache is keyed by what decides its rows
(``pseudo_mask_cache_key``): the generator's output settings (for DINO the checkpoint file's SHA-256, not
its path) and the caption-word extractor; a shard built under another key is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import PSEUDO_MASK_SCHEMA, check_schema
from sseg.config import config_hash as hash_of
from sseg.errors import DataError

if TYPE_CHECKING:
    from sseg.pseudo_masks.generator import PseudoMaskConfig

# Bump when the row layout or the image / mask encoding changes: older caches are then rebuilt.
CACHE_FORMAT = 1


def shard_id(shard_path: str) -> str:
    return os.path.basename(shard_path.rstrip("/"))


def pseudo_mask_cache_key(pm_config: PseudoMaskConfig | dict, image_size: int | None = None) -> str:
    """The cache's identity: the generator's output settings (DINO weights by the checkpoint file's SHA-256,
    hashed once per process per file version), the caption-word extractor, whose words the rows store,
    the size images are decoded at (``image_size``), and the cache format. Device, batch settings and the checkpoint's path do not count."""
    from sseg.data.captions import caption_words_method
    from sseg.pseudo_masks import PseudoMaskConfig, generator_class

    config = PseudoMaskConfig.model_validate(pm_config)
    key = hash_of({"format": CACHE_FORMAT, "generator": config.generator,
                   **generator_class(config.generator).output_settings(config),
                   "caption_words": caption_words_method(),
                   **({"image_size": image_size} if image_size is not None else {})})
    return key


class PseudoMaskCache:
    """``base_dir/<generator>-<key>/``: caches of different keys live side by side."""

    def __init__(self, base_dir: str | Path, config_hash: str, generator: str):
        # absolute: Ray workers read these files from another working directory
        self.root = Path(base_dir).resolve() / f"{generator}-{config_hash}"
        self.config_hash = config_hash

    @classmethod
    def for_config(cls, base_dir: str | Path, pm_config: PseudoMaskConfig | dict,
                   image_size: int | None = None) -> PseudoMaskCache:
        """The cache of ``pm_config`` under ``base_dir`` (its key from ``pseudo_mask_cache_key``)."""
        from sseg.pseudo_masks import PseudoMaskConfig

        config = PseudoMaskConfig.model_validate(pm_config)
        return cls(base_dir, pseudo_mask_cache_key(config, image_size), config.generator)

    def _marker(self, shard: str) -> Path:
        return self.root / "_done" / f"{shard_id(shard)}.json"

    def parquet_path(self, shard: str) -> Path:
        return self.root / f"{Path(shard_id(shard)).stem}.parquet"

    def is_done(self, shard: str) -> bool:
        marker = self._marker(shard)
        if not marker.is_file():
            return False
        info = json.loads(marker.read_text())
        if self.config_hash and info.get("config_hash") != self.config_hash:
            raise DataError(
                f"pseudo-mask cache {self.root} holds shard {shard_id(shard)} built under cache key "
                f"{info.get('config_hash')}, not {self.config_hash}: use another cache_dir")
        return True

    def write_shard(self, shard: str, rows: list[dict]) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "_done").mkdir(exist_ok=True)
        rows = sorted(rows, key=lambda r: r["key"])
        table = pa.Table.from_pylist(rows, schema=PSEUDO_MASK_SCHEMA)
        target = self.parquet_path(shard)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, target)
        marker = self._marker(shard)
        marker_tmp = marker.with_suffix(".tmp")
        marker_tmp.write_text(json.dumps({"shard": shard_id(shard), "rows": len(rows),
                                          "config_hash": self.config_hash}, sort_keys=True))
        os.replace(marker_tmp, marker)
        return len(rows)

    def files(self) -> list[str]:
        done = sorted((self.root / "_done").glob("*.json")) if (self.root / "_done").is_dir() else []
        files = [str(self.parquet_path(json.loads(m.read_text())["shard"])) for m in done]
        if not files:
            raise DataError(f"pseudo-mask cache {self.root} is empty: run jobs/pseudo_masks.py with the "
                            "same pseudo_masks settings first")
        check_schema(pq.read_schema(files[0]), PSEUDO_MASK_SCHEMA, files[0])
        return files

    def num_rows(self) -> int:
        return sum(json.loads(m.read_text())["rows"] for m in (self.root / "_done").glob("*.json"))
