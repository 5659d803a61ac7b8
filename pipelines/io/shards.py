"""Reading img2dataset WebDataset shards with Ray Data and decoding them into fixed-size samples."""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from typing import Literal, Sequence

import numpy as np
import ray

from pipelines.io import stats
from pipelines.io.webdataset_source import TolerantWebDatasetDatasource
from sseg.data.captions import extract_words
from sseg.data.decode import decode_image, skip_reason
from sseg.data.transforms import center_square, random_resized_crop
from sseg.errors import DataError

MIN_IMAGE_SIDE = 2  # a smaller image is skipped as too_small
REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """img2dataset-style ``{00000..00010}.tar`` ranges (inclusive, zero padding kept)."""
    match = _BRACES.search(pattern)
    if not match:
        return [pattern]
    start, end = match.group(1), match.group(2)
    width = len(start)
    out = []
    for i in range(int(start), int(end) + 1):
        out.extend(expand_braces(pattern[:match.start()] + str(i).zfill(width) + pattern[match.end():]))
    return out


def resolve_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard paths from a directory, a glob, a brace range, a list, or remote URLs (s3://, gs://)."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for item in specs:
        for pattern in expand_braces(str(item)):
            if REMOTE.match(pattern):
                if any(c in pattern for c in "*?["):
                    import fsspec

                    fs, _, found = fsspec.get_fs_token_paths(pattern)
                    protocol = pattern.split("://", 1)[0]
                    paths.extend(sorted(f"{protocol}://{p}" for p in found))
                else:
                    paths.append(pattern)  # a remote file or prefix: Ray lists it
            elif os.path.isdir(pattern):
                paths.extend(sorted(glob.glob(os.path.join(pattern, "*.tar"))))
            elif any(c in pattern for c in "*?["):
                paths.extend(sorted(glob.glob(pattern)))
            elif os.path.isfile(pattern):
                paths.append(pattern)
            else:
                raise DataError(f"shard path not found: {pattern}")
    if not paths:
        raise DataError(f"no .tar shards found in {spec}")
    # absolute local paths: Ray workers run in another working directory
    return [p if REMOTE.match(p) else os.path.abspath(p) for p in paths]


def read_shards(paths: Sequence[str], *, shuffle_files: bool = False, seed: int | None = None,
                concurrency: int | None = None) -> ray.data.Dataset:
    """Raw rows (key, shard, image bytes, caption, meta, error) from WebDataset shards."""
    from ray.data import FileShuffleConfig

    shuffle = FileShuffleConfig(seed=seed) if shuffle_files else None
    source = TolerantWebDatasetDatasource(list(paths), shuffle=shuffle, file_extensions=["tar"])
    return ray.data.read_datasource(source, concurrency=concurrency,
                                    override_num_blocks=len(paths))


class DecodeSamples:
    """map_batches function: raw rows → decoded, fixed-size RGB samples; bad rows skipped and counted.

    mode "train": random-resized crop + flip to size×size; "eval"/"cache": short side → size, centre crop.
    Skip reasons: a shard's marker row names ``empty_shard``, ``corrupt_shard`` or ``truncated_shard``
    (pipelines/webdataset_source.py); a sample is ``missing_image``, ``missing_caption``, ``empty_image``
    (no bytes, 0 pixels), ``undecodable_image`` or ``too_small`` (a side below MIN_IMAGE_SIDE).
    """

    def __init__(self, size: int, mode: Literal["train", "eval", "cache"] = "train",
                 crop_scale: tuple[float, float] = (0.5, 1.0), counter=None, seed: int | None = None):
        self.size = size
        self.mode = mode
        self.crop_scale = tuple(crop_scale)
        self.counter = counter
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: dict) -> dict:
        skipped: Counter = Counter()
        out: dict[str, list] = {"key": [], "shard": [], "caption": [], "words": [], "image": []}
        for i in range(len(batch["key"])):
            error = batch["error"][i]
            if error:
                skipped[str(error)] += 1
                continue
            image_bytes, caption = batch["image"][i], batch["caption"][i]
            if image_bytes is None:
                skipped["missing_image"] += 1
                continue
            if not caption:
                skipped["missing_caption"] += 1
                continue
            try:
                image = decode_image(bytes(image_bytes), min_side=MIN_IMAGE_SIDE)
            except DataError as exc:
                skipped[skip_reason(exc)] += 1
                continue
            if self.mode == "train":
                image, _ = random_resized_crop(image, self.size, self.rng, scale=self.crop_scale)
            else:
                image = center_square(image, self.size)
            out["key"].append(str(batch["key"][i]))
            out["shard"].append(os.path.basename(str(batch["shard"][i])))
            out["caption"].append(str(caption))
            out["words"].append(" ".join(extract_words(str(caption))))
            out["image"].append(image)
        stats.report(self.counter, skipped)
        result = {k: np.array(v, dtype=object) for k, v in out.items() if k != "image"}
        result["image"] = (np.stack(out["image"]) if out["image"]
                           else np.zeros((0, self.size, self.size, 3), np.uint8))
        return result
