"""Reproducible WebDataset shard writing in the img2dataset layout.

Two runs over the same samples give byte-identical tar files: members are written in the order given,
with fixed mtime, uid/gid, owner names and mode, in the plain ustar format (no pax headers), and the
JPEGs come from Pillow with fixed settings. A shard is written to ``<name>.tmp`` and renamed when
complete, so readers never see half a shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from sseg.errors import DataError

FIXED_MTIME = 0
MEMBER_MODE = 0o644


def encode_jpeg(image: np.ndarray, quality: int, subsampling: int = 0) -> bytes:
    """Baseline JPEG of an HxWx3 uint8 image. ``subsampling`` is Pillow's: 0 = 4:4:4 (the default: small
    images keep their colour edges), 2 = 4:2:0 (Pillow's own default)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"encode_jpeg needs an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality), subsampling=subsampling,
                                optimize=False, progressive=False)
    return buffer.getvalue()


def img2dataset_record(
    key: str, caption: str, url: str, jpg: bytes, width: int, height: int, **extra: Any
) -> dict[str, Any]:
    """The per-sample ``.json`` img2dataset writes (``extra`` = additional columns)."""
    record: dict[str, Any] = {
        "url": url,
        "key": key,
        "caption": caption,
        "status": "success",
        "error_message": None,
        "width": width,
        "height": height,
        "original_width": width,
        "original_height": height,
        "exif": None,
        "sha256": hashlib.sha256(jpg).hexdigest(),
    }
    record.update(extra)
    return record


class ShardWriter:
    """Writes one tar shard; use as a context manager, call :meth:`write` per sample."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".tmp")
        self._tar: tarfile.TarFile | None = None
        self.count = 0

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self._partial, mode="w", format=tarfile.USTAR_FORMAT)
        return self

    def write(self, key: str, members: list[tuple[str, bytes]]) -> None:
        """Add ``{key}.{ext}`` for each ``(ext, payload)``, in the order given."""
        if self._tar is None:
            raise DataError("ShardWriter.write called outside its 'with' block")
        if not key or "/" in key or "." in key:
            raise DataError(f"shard sample key must be a non-empty name without '/' or '.', got {key!r}")
        for extension, payload in members:
            info = tarfile.TarInfo(name=f"{key}.{extension}")
            info.size = len(payload)
            info.mtime = FIXED_MTIME
            info.mode = MEMBER_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            self._tar.addfile(info, io.BytesIO(payload))
        self.count += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tar is not None
        self._tar.close()
        self._tar = None
        if exc_type is None:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)


def write_json(path: str | Path, payload: Any) -> None:
    """Human-readable JSON with a trailing newline; keys keep their (deterministic) insertion order."""
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
