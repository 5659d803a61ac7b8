"""Arrow schemas of what one stage writes and another reads. Readers validate with ``check_schema``."""

from __future__ import annotations

import pyarrow as pa

from sseg.errors import DataError

SCHEMA_VERSION = "1"

# One row per sample of the pseudo-mask cache (jobs/pseudo_masks.py → jobs/pretrain.py).
PSEUDO_MASK_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("words", pa.list_(pa.string()), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("num_segments", pa.int16(), nullable=False),
        # The image the mask was computed on (JPEG, same size as the mask), so training needs no join.
        pa.field("image", pa.binary(), nullable=False),
        # Segment ids 0..K-1 as an 8-bit grayscale PNG of size height×width.
        pa.field("mask_png", pa.binary(), nullable=False),
        pa.field("generator", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
    ],
    metadata={b"sseg.schema": b"pseudo_masks", b"sseg.schema_version": SCHEMA_VERSION.encode()},
)


def check_schema(actual: pa.Schema, expected: pa.Schema, source: str) -> None:
    """Raise a one-line DataError if ``actual`` lacks a field of ``expected`` or has another type."""
    for field in expected:
        idx = actual.get_field_index(field.name)
        if idx < 0:
            raise DataError(f"{source}: missing column '{field.name}' (expected {expected.metadata[b'sseg.schema'].decode()} schema)")
        if not actual.field(idx).type.equals(field.type):
            raise DataError(f"{source}: column '{field.name}' has type {actual.field(idx).type}, expected {field.type}")

# One row per target train image of the S-Seg+ pseudo-label cache (pipelines/io/pseudo_label_cache.py):
# written by the pseudo-labelling stage, read by the self-training data stage. One Parquet file per chunk.
PSEUDO_LABEL_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),  # position in the target split's image list
        pa.field("chunk", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        # The image the labels were predicted on, lossless (PNG), so training needs no join.
        pa.field("image", pa.binary(), nullable=False),
        # Class ids into the cache's class list (uint8 PNG, height×width): the S-Seg prediction.
        pa.field("label_png", pa.binary(), nullable=False),
        # The prediction's confidence (its normalised class probability) × 255, rounded (uint8 PNG).
        pa.field("confidence_png", pa.binary(), nullable=False),
        pa.field("cache_key", pa.string(), nullable=False),
    ],
    metadata={b"sseg.schema": b"pseudo_labels", b"sseg.schema_version": SCHEMA_VERSION.encode()},
)

# One row per image of the TUSS mask-embedding cache (pipelines/io/tuss_cache.py): written by the embedding
# stage (pipelines/stages/tuss_embed.py), read by the classification (pipelines/evaluation/tuss.py). One Parquet
# file per chunk of a split's images; the cache is keyed by the VLM's digest, the mask source and its settings,
# the embedding method and its settings, the dataset and split (its manifest).
TUSS_MASK_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),  # position in the split's image list
        pa.field("chunk", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        # "ok", or why the image has no masks (sseg.tuss.masks.SKIP_REASONS); a skipped image has 0 masks
        pa.field("status", pa.string(), nullable=False),
        pa.field("dropped_masks", pa.int32(), nullable=False),  # empty / too small masks left out
        pa.field("num_masks", pa.int32(), nullable=False),
        # The masks as segment ids (16-bit PNG, height×width; 65535 = no mask); empty when skipped.
        pa.field("segments_png", pa.binary(), nullable=False),
        pa.field("area", pa.list_(pa.int64()), nullable=False),  # [num_masks] pixels
        pa.field("embed_dim", pa.int32(), nullable=False),
        pa.field("embeddings", pa.list_(pa.float32()), nullable=False),  # [num_masks × embed_dim], row-major
        # Ground truth per mask (row-major [num_masks × classes]; empty for a split without labels): labelled
        # pixels of each class inside the mask, and the pixels the mask paints (sseg/tuss/table.py).
        pa.field("gt_counts", pa.list_(pa.int64()), nullable=False),
        pa.field("owned_counts", pa.list_(pa.int64()), nullable=False),
        pa.field("cache_key", pa.string(), nullable=False),
    ],
    metadata={b"sseg.schema": b"tuss_masks", b"sseg.schema_version": SCHEMA_VERSION.encode()},
)
