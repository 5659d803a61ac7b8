"""Decode encoded images (jpg/png/webp/...) to ``uint8 [H, W, 3]`` RGB with Pillow.

torchvision.io is unavailable with CPU-only torch (sseg/_compat.py), and Pillow covers every mode a web-scraped
shard or a benchmark dataset contains. Rules, so results are deterministic:

* EXIF orientation is applied (a phone photo comes out upright);
* transparency (RGBA, LA, palette with a transparent entry) is composited on black;
* 16-bit and 32-bit integer images are scaled to 8 bit by ``value / 257`` (0..65535 → 0..255);
  values of an ``I`` image that already fit 0..255 are kept as they are;
* float (``F``) images in [0, 1] are scaled by 255, others clipped to 0..255;
* everything else (L, 1, P, CMYK, YCbCr, LAB, HSV) goes through Pillow's RGB conversion.

Label maps are decoded with :func:`decode_label`, which keeps palette indices as class ids.

Every failure is a one-line :class:`DecodeError` (a ``DataError``) whose ``reason`` is the key a
pipeline counts skipped samples under: ``empty_image`` (no bytes, or a 0-pixel image),
``undecodable_image`` (not an image Pillow reads), ``too_small`` (a side below ``min_side``).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sseg.errors import DataError, first_line

EMPTY_IMAGE = "empty_image"
UNDECODABLE_IMAGE = "undecodable_image"
TOO_SMALL = "too_small"


class DecodeError(DataError):
    """Why bytes gave no usable image: a one-line message and a short ``reason`` to count it under."""

    def __init__(self, message: str, reason: str = UNDECODABLE_IMAGE) -> None:
        super().__init__(message)
        self.reason = reason


def skip_reason(error: Exception) -> str:
    """The skip-counter key of a decoding failure (``undecodable_image`` unless it names another)."""
    return getattr(error, "reason", UNDECODABLE_IMAGE)


def _open(data: bytes, what: str) -> Image.Image:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"undecodable {what}: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise DecodeError(f"undecodable {what}: empty data", EMPTY_IMAGE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"undecodable {what}: {first_line(exc)}") from None
    if image.width == 0 or image.height == 0:
        raise DecodeError(f"undecodable {what}: zero-size image ({image.width}x{image.height})",
                          EMPTY_IMAGE)
    return image


def _composite_on_black(rgba: Image.Image) -> np.ndarray:
    array = np.asarray(rgba, dtype=np.uint16)
    rgb, alpha = array[..., :3], array[..., 3:4]
    # round(rgb * alpha / 255) in integer arithmetic
    return ((rgb * alpha + 127) // 255).astype(np.uint8)


def _high_bit_depth_to_uint8(image: Image.Image) -> np.ndarray:
    values = np.asarray(image)
    if image.mode == "F":
        values = values.astype(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.max() <= 1.0:
            values = values * 255.0
        gray = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    else:
        values = values.astype(np.int64)
        if image.mode == "I" and values.max(initial=0) <= 255:
            gray = np.clip(values, 0, 255).astype(np.uint8)
        else:
            gray = ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def decode_image(data: bytes, apply_exif: bool = True, min_side: int = 1) -> np.ndarray:
    """Encoded image bytes → contiguous ``uint8 [H, W, 3]`` RGB array.

    ``apply_exif=False`` keeps the stored pixel grid; labelled-dataset readers use it because
    their label maps are aligned with the stored pixels, not with the displayed orientation.
    An image with a side below ``min_side`` pixels is refused (reason ``too_small``).
    """
    image = _open(data, "image")
    if image.width < min_side or image.height < min_side:
        raise DecodeError(f"image too small: {image.width}x{image.height} (a side below {min_side} px)",
                          TOO_SMALL)
    if apply_exif:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block should not lose the picture
            pass
    mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        out = _high_bit_depth_to_uint8(image)
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in image.info):
        out = _composite_on_black(image.convert("RGBA"))
    elif mode == "RGB":
        out = np.asarray(image)
    else:
        out = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(out, dtype=np.uint8)


def decode_label(data: bytes) -> np.ndarray:
    """Encoded label map (palette or grayscale PNG) → ``[H, W]`` class ids.

    Palette images keep their indices (VOC-style label PNGs); ``L`` stays uint8; 16/32-bit
    images come back as int32. Colour label images are rejected: their ids are ambiguous.
    """
    image = _open(data, "label map")
    if image.mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8).copy()
    if image.mode == "I" or image.mode.startswith("I;16"):
        return np.asarray(image).astype(np.int32)
    raise DecodeError(f"undecodable label map: mode {image.mode} is not a single-channel id image")
