"""UniMatch's augmentations (LiheYoung/UniMatch dataset/transform.py, as SemiVL uses them).

Weak view (numpy, on the data path): random rescale by [0.5, 2.0], pad to the crop (image 0, label /
ignore 255), random crop, horizontal flip. Strong views (torch, in the step): ColorJitter(0.5, 0.5, 0.5,
0.25) with p=0.8, grayscale p=0.2, Gaussian blur σ ∈ [0.1, 2] p=0.5; CutMix with p=0.5, box area
0.02–0.4 of the image, aspect ratio 0.3–1/0.3.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

import sseg  # noqa: F401 - torchvision fix
import torchvision.transforms.functional as TF

IGNORE = 255


def rescaled_shape(height: int, width: int, ratio: float,
                   img_scale: tuple[int, int] | None = None) -> tuple[int, int]:
    """The weak view's size before the crop. ``img_scale`` None: the image's size × ``ratio``; else
    mmseg's ``Resize(img_scale=(long, short), ratio_range)`` with keep_ratio: the largest size whose long
    side ≤ long × ratio and short side ≤ short × ratio (the public SemiVL code: (2048, 512))."""
    if img_scale is None:
        factor = ratio
    else:
        long_max, short_max = max(img_scale) * ratio, min(img_scale) * ratio
        factor = min(long_max / max(height, width), short_max / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


def weak_view(image: np.ndarray, label: np.ndarray | None, crop: int, rng: np.random.Generator,
              scale: tuple[float, float] = (0.5, 2.0),
              img_scale: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H,W,3] (+ label [H,W] or None) → (image [crop,crop,3], label [crop,crop]); without a label the
    returned map is 0 inside the image and 255 where the crop was padded (UniMatch's ignore mask).
    ``img_scale``: see :func:`rescaled_shape`."""
    h, w = image.shape[:2]
    if label is None:
        label = np.zeros((h, w), np.uint8)
    ratio = rng.uniform(*scale)
    nh, nw = rescaled_shape(h, w, ratio, img_scale)
    img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
    ph, pw = max(crop - nh, 0), max(crop - nw, 0)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=0)
        lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=IGNORE)
    y = int(rng.integers(0, img.shape[0] - crop + 1))
    x = int(rng.integers(0, img.shape[1] - crop + 1))
    img, lab = img[y:y + crop, x:x + crop], lab[y:y + crop, x:x + crop]
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def strong_view(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """float [3,H,W] in [0, 1] → colour-jittered / grayscale / blurred copy (UniMatch's strong view)."""
    x = image
    if rng.random() < 0.8:
        ops = [("b", rng.uniform(0.5, 1.5)), ("c", rng.uniform(0.5, 1.5)), ("s", rng.uniform(0.5, 1.5)),
               ("h", rng.uniform(-0.25, 0.25))]
        for i in rng.permutation(4):
            kind, value = ops[i]
            if kind == "b":
                x = TF.adjust_brightness(x, value)
            elif kind == "c":
                x = TF.adjust_contrast(x, value)
            elif kind == "s":
                x = TF.adjust_saturation(x, value)
            else:
                x = TF.adjust_hue(x, value)
    if rng.random() < 0.2:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if rng.random() < 0.5:
        sigma = float(rng.uniform(0.1, 2.0))
        kernel = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x.unsqueeze(0), [kernel, kernel], [sigma, sigma])[0]
    return x.clamp(0, 1)


def cutmix_box(size: int, rng: np.random.Generator, p: float = 0.5, area: tuple[float, float] = (0.02, 0.4),
               ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """bool [size, size]: a box covering area ∈ ``area`` of the image with aspect ``ratio``, or all
    False with probability 1 - p (UniMatch's obtain_cutmix_box)."""
    box = torch.zeros(size, size, dtype=torch.bool)
    if rng.random() > p:
        return box
    target = rng.uniform(*area) * size * size
    while True:
        r = rng.uniform(*ratio)
        cw, ch = int(math.sqrt(target / r)), int(math.sqrt(target * r))
        x, y = int(rng.integers(0, size)), int(rng.integers(0, size))
        if x + cw <= size and y + ch <= size:
            break
    box[y:y + ch, x:x + cw] = True
    return box


def cutmix(base: torch.Tensor, other: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Paste ``other`` into ``base`` inside ``boxes`` [B, H, W]; images [B,3,H,W] or maps [B,H,W]."""
    mask = boxes if base.dim() == 3 else boxes.unsqueeze(1)
    return torch.where(mask.to(base.device), other, base)
