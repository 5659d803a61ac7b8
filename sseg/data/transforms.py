"""Image (+ mask) transforms on uint8 numpy arrays: random resized crop, resize, normalisation, mmseg's
segmentation training pipeline (resize ratio, crop with cat_max_ratio, flip, photometric distortion, pad)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def random_resized_crop_box(height: int, width: int, rng: np.random.Generator,
                            scale: tuple[float, float] = (0.5, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop with torchvision's RandomResizedCrop sampling rule."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    side = min(height, width)  # fallback: centre crop
    return (height - side) // 2, (width - side) // 2, side, side


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image to (height, width)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW label map."""
    if labels.shape[:2] == tuple(size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        labels: np.ndarray | None = None, scale: tuple[float, float] = (0.5, 1.0),
                        hflip: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop the same box from the image and its label map, resize to size×size, maybe flip both."""
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng, scale)
    image = resize_image(image[top:top + h, left:left + w], (size, size))
    if labels is not None:
        labels = resize_labels(labels[top:top + h, left:left + w], (size, size))
    if hflip and rng.random() < 0.5:
        image = image[:, ::-1]
        labels = labels[:, ::-1] if labels is not None else None
    return np.ascontiguousarray(image), (np.ascontiguousarray(labels) if labels is not None else None)


def short_side_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) scaled so that the short side is ``short_side`` (aspect kept, rounded)."""
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_short_side(image: np.ndarray, short_side: int) -> np.ndarray:
    return resize_image(image, short_side_shape(*image.shape[:2], short_side))


def _centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    h, w = array.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(array[top:top + size, left:left + size])


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` and take the centre size×size crop (eval transform)."""
    return _centre_crop(resize_short_side(image, size), size)


def center_square_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """:func:`center_square` for a label map (nearest-neighbour resize): the labels of that crop."""
    return _centre_crop(resize_labels(labels, short_side_shape(*labels.shape[:2], size)), size)


def to_normalized_tensor(images: np.ndarray | torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [B,H,W,3] → float [B,3,H,W] normalised."""
    import torch  # here, not at the top: Ray Data's decode workers use this module without torch

    x = torch.as_tensor(images)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


# ----------------------------------------------------------------------------- mmseg's training pipeline
# BEiT/MAE's UperNet (mmseg's ADE20K/VOC pipelines): Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0)),
# RandomCrop(512, cat_max_ratio=0.75), RandomFlip(0.5), PhotoMetricDistortion, Normalize, Pad(512).


def mmseg_resize(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 scale: tuple[int, int] = (2048, 512),
                 ratio_range: tuple[float, float] = (0.5, 2.0)) -> tuple[np.ndarray, np.ndarray]:
    """mmseg's ``Resize(img_scale=scale, ratio_range=ratio_range, keep_ratio=True)``: a ratio drawn
    uniformly, the scale ``int(scale × ratio)``, then the largest size whose long side fits the long edge
    and short side the short edge (mmcv's ``imrescale``); bilinear image, nearest labels."""
    ratio = rng.uniform(*ratio_range)
    edges = (int(scale[0] * ratio), int(scale[1] * ratio))
    h, w = image.shape[:2]
    factor = min(max(edges) / max(h, w), min(edges) / min(h, w))
    size = (max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5)))
    return resize_image(image, size), resize_labels(labels, size)


def random_crop_box(height: int, width: int, crop: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a crop×crop box at a uniform offset (the whole side where it is shorter)."""
    y0 = int(rng.integers(0, max(height - crop, 0) + 1))
    x0 = int(rng.integers(0, max(width - crop, 0) + 1))
    return y0, min(y0 + crop, height), x0, min(x0 + crop, width)


def random_crop_cat_max(image: np.ndarray, labels: np.ndarray, crop: int, rng: np.random.Generator,
                        cat_max_ratio: float = 0.75,
                        ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """mmseg's ``RandomCrop(crop, cat_max_ratio)``: up to 10 redraws until the crop holds more than one
    class and no class covers ``cat_max_ratio`` or more of its labelled pixels (the last draw is kept)."""
    box = random_crop_box(*labels.shape[:2], crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(10):
            y0, y1, x0, x1 = box
            values, counts = np.unique(labels[y0:y1, x0:x1], return_counts=True)
            counts = counts[values != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = random_crop_box(*labels.shape[:2], crop, rng)
    y0, y1, x0, x1 = box
    return image[y0:y1, x0:x1], labels[y0:y1, x0:x1]


def _convert(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range: tuple[float, float] = (0.5, 1.5),
                           saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """mmseg's ``PhotoMetricDistortion``, each step with probability 1/2: brightness ± 32, contrast
    × [0.5, 1.5] (before or after the colour steps, at random), saturation × [0.5, 1.5], hue ± 18 (in
    OpenCV's 180-step hue; here on PIL's 8-bit HSV, 256 steps, so ± 18 × 256/180)."""
    image = _convert(image, beta=rng.uniform(-brightness_delta, brightness_delta)) if rng.integers(2) else image
    contrast_last = rng.integers(2) == 0

    def contrast(img: np.ndarray) -> np.ndarray:
        return _convert(img, alpha=rng.uniform(*contrast_range)) if rng.integers(2) else img

    if not contrast_last:
        image = contrast(image)
    if rng.integers(2):  # saturation
        hsv = np.asarray(Image.fromarray(image).convert("HSV")).copy()
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        image = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    if rng.integers(2):  # hue
        hsv = np.asarray(Image.fromarray(image).convert("HSV")).copy()
        shift = round(int(rng.integers(-hue_delta, hue_delta)) * 256 / 180)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
        image = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    if contrast_last:
        image = contrast(image)
    return np.ascontiguousarray(image)


def mmseg_train_view(image: np.ndarray, labels: np.ndarray, crop: int, rng: np.random.Generator, *,
                     scale: tuple[int, int] = (2048, 512), ratio_range: tuple[float, float] = (0.5, 2.0),
                     cat_max_ratio: float = 0.75, hflip: bool = True, photometric: bool = True,
                     ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """One training view as mmseg's pipeline makes it: resize, crop, flip, photometric distortion, pad to
    crop×crop (image with the ImageNet mean colour, so it normalises to 0 like mmseg's post-Normalize
    zero padding; labels with ``ignore_index``). uint8 [crop, crop, 3] and [crop, crop]."""
    image, labels = mmseg_resize(image, labels, rng, scale, ratio_range)
    image, labels = random_crop_cat_max(image, labels, crop, rng, cat_max_ratio, ignore_index)
    if hflip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if photometric:
        image = photometric_distortion(np.ascontiguousarray(image), rng)
    h, w = labels.shape
    out_image = np.empty((crop, crop, 3), np.uint8)
    out_image[:] = np.round(np.asarray(IMAGENET_MEAN) * 255).astype(np.uint8)
    out_labels = np.full((crop, crop), ignore_index, np.uint8)
    out_image[:h, :w] = image
    out_labels[:h, :w] = labels
    return out_image, out_labels
