"""The pseudo-mask Parquet cache: one file per input shard, written atomically, with a done marker.

Rows of a shard are sorted by key before writing, so a shard written twice from the same input gives the
same bytes; finished shards are never rewritten. A cache built with another generator config is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.arrow import PSEUDO_MASK_SCHEMA, check_schema
from sseg.errors import DataError


def shard_id(shard_path: str) -> str:
    return os.path.basename(shard_path.rstrip("/"))


class PseudoMaskCache:
    """``base_dir/<generator>-<config hash>/``: caches of different generator configs live side by side."""

    def __init__(self, base_dir: str | Path, config_hash: str, generator: str):
        # absolute: Ray workers read these files from another working directory
        self.root = Path(base_dir).resolve() / f"{generator}-{config_hash}"
        self.config_hash = config_hash

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
                f"pseudo-mask cache {self.root} holds shard {shard_id(shard)} built with generator config "
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
