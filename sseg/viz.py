"""Pictures of predictions: colour palettes, overlays, legends, comparison grids, IoU charts.

All images are ``uint8 [H, W, 3]`` RGB numpy arrays. Matplotlib is used through its object API
on the Agg canvas (no pyplot global state), so this is safe inside worker processes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sseg.errors import DataError

IGNORE_COLOUR = (255, 255, 255)


def voc_palette(num_colours: int = 256) -> np.ndarray:
    """The Pascal VOC colour map ``uint8 [num_colours, 3]`` (bit-interleaved label id)."""
    palette = np.zeros((num_colours, 3), dtype=np.uint8)
    for label in range(num_colours):
        value, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (r, g, b)
    return palette


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"image must be uint8 [H, W, 3] (got {getattr(image, 'dtype', None)} "
                        f"{getattr(image, 'shape', None)})")
    return image


def colourise(labels: np.ndarray, palette: np.ndarray | None = None,
              ignore_index: int | None = 255) -> np.ndarray:
    """Label map ``[H, W]`` → colour image; ignored pixels are white."""
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    labels = np.asarray(labels).astype(np.int64)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(palette):
        raise DataError(f"label ids must lie in [0, {len(palette)}) for a palette of that size")
    colours = palette[labels]
    if ignore_index is not None:
        colours[labels == ignore_index] = IGNORE_COLOUR
    return colours


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5,
            palette: np.ndarray | None = None, ignore_index: int | None = 255) -> np.ndarray:
    """``(1 - alpha) · image + alpha · colour(label)``; ignored pixels keep the image."""
    image = _check_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise DataError(f"alpha must lie in [0, 1] (got {alpha})")
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise DataError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    colours = colourise(labels, palette, ignore_index=None).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    out = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    if ignore_index is not None:
        keep = labels == ignore_index
        out[keep] = image[keep]
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def legend(class_names: Sequence[str], palette: np.ndarray | None = None,
           present: Sequence[int] | None = None, row_height: int = 20, width: int = 220) -> np.ndarray:
    """A white column of colour swatches with class names (only ``present`` ids if given)."""
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    ids = list(range(len(class_names))) if present is None else sorted(set(int(i) for i in present))
    ids = [i for i in ids if 0 <= i < len(class_names)]
    canvas = Image.new("RGB", (width, max(1, len(ids)) * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, row_height - 6))
    swatch = row_height - 4
    for row, class_id in enumerate(ids):
        top = row * row_height + 2
        draw.rectangle((2, top, 2 + swatch, top + swatch), fill=tuple(int(c) for c in palette[class_id]),
                       outline=(0, 0, 0))
        draw.text((swatch + 8, top), f"{class_id} {class_names[class_id]}", fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    out[:image.shape[0], :image.shape[1]] = image
    return out


def upscale_nearest(array: np.ndarray, factor: int) -> np.ndarray:
    """Repeat every pixel ``factor`` × ``factor`` times (images HxWx3 and label maps HxW)."""
    if factor < 1:
        raise DataError(f"upscale factor must be >= 1, got {factor}")
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def grid(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None]], alpha: float = 0.5,
         palette: np.ndarray | None = None, ignore_index: int | None = 255, gap: int = 4,
         upscale: int = 1) -> np.ndarray:
    """One image: a row per sample with ``input | prediction overlay | ground-truth overlay``.

    ``rows`` holds ``(image, pred, gt)``; ``gt`` may be None (its cell stays white). Rows of
    different sizes are padded with white to the widest / tallest cell. ``upscale``: every cell is
    enlarged that many times (nearest), so small images stay readable.
    """
    if not rows:
        raise DataError("grid needs at least one row")
    if upscale > 1:
        rows = [(upscale_nearest(_check_image(image), upscale), upscale_nearest(np.asarray(pred), upscale),
                 None if gt is None else upscale_nearest(np.asarray(gt), upscale)) for image, pred, gt in rows]
    cells = []
    for image, pred, gt in rows:
        image = _check_image(image)
        row = [image, overlay(image, pred, alpha, palette, ignore_index)]
        row.append(overlay(image, gt, alpha, palette, ignore_index) if gt is not None
                   else np.full_like(image, 255))
        cells.append(row)
    cell_h = max(c[0].shape[0] for c in cells)
    cell_w = max(c[0].shape[1] for c in cells)
    out_h = len(cells) * cell_h + (len(cells) - 1) * gap
    out_w = 3 * cell_w + 2 * gap
    out = np.full((out_h, out_w, 3), 255, dtype=np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            out[y:y + cell_h, x:x + cell_w] = _pad_to(cell, cell_h, cell_w)
    return out


def per_class_iou_bar_chart(class_names: Sequence[str], ious: Sequence[float], title: str = "per-class IoU"):
    """A horizontal bar chart (matplotlib ``Figure`` on an Agg canvas) of IoU per class in %.

    Classes whose IoU is NaN (absent) are drawn as empty rows labelled "n/a".
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(class_names) != len(ious):
        raise DataError(f"{len(class_names)} class names but {len(ious)} IoU values")
    values = np.asarray(ious, dtype=np.float64)
    figure = Figure(figsize=(6, max(2.0, 0.22 * len(class_names) + 1)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(class_names))
    shown = np.nan_to_num(values, nan=0.0) * 100
    axes.barh(positions, shown, color="tab:blue")
    for y, value in zip(positions, values):
        if np.isnan(value):
            axes.text(1, y, "n/a", va="center", fontsize=7, color="grey")
    axes.set_yticks(positions)
    axes.set_yticklabels(list(class_names), fontsize=7)
    axes.invert_yaxis()
    axes.set_xlim(0, 100)
    axes.set_xlabel("IoU (%)")
    valid = values[~np.isnan(values)]
    mean = f" (mIoU {100 * valid.mean():.1f}%)" if valid.size else ""
    axes.set_title(title + mean)
    figure.tight_layout()
    return figure


def figure_to_array(figure) -> np.ndarray:
    """Render a matplotlib Figure (Agg canvas) to ``uint8 [H, W, 3]``."""
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_png(path, image: np.ndarray) -> None:
    Image.fromarray(_check_image(image)).save(path, format="PNG")
