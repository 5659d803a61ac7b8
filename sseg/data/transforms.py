"""Image (+ mask) transforms on uint8 numpy arrays: random resized crop, resize, normalisation."""

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
