"""The paper's K-Means baseline: cluster pixels on CIE Lab colour plus weighted position.

Pixels are first averaged over ``stride x stride`` cells (K-Means on every pixel of a 224 image
is ~50k points per image for little gain), clustered per image with the batched K-Means, and the
label grid is upsampled back to the image.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from sseg.pseudo_masks.generator import (
    PseudoMaskConfig,
    PseudoMaskGenerator,
    register_generator,
    upsample_labels,
)
from sseg.pseudo_masks.kmeans import batched_kmeans

log = logging.getLogger(__name__)

# sRGB (D65) -> CIE XYZ, and the D65 reference white.
_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_WHITE_D65 = torch.tensor([0.95047, 1.0, 1.08883])
_LAB_EPSILON = (6.0 / 29.0) ** 3


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], channels last [..., 3] -> CIE L*a*b* (D65) [..., 3].

    L is in [0, 100]; a and b roughly in [-128, 127].
    """
    rgb = rgb.float().clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    xyz = linear @ _RGB_TO_XYZ.to(rgb.device).T / _WHITE_D65.to(rgb.device)
    f = torch.where(
        xyz > _LAB_EPSILON,
        xyz.clamp_min(_LAB_EPSILON).pow(1.0 / 3.0),
        xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0,
    )
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=-1)


def pixel_features(images: Tensor, stride: int, position_weight: float) -> Tensor:
    """uint8 [B, H, W, 3] -> features [B, h, w, 5] on the ceil(H/stride) x ceil(W/stride) grid.

    Features are (L, a, b) / 100 and position_weight * (y, x), positions scaled so that the
    longer side of the image spans [0, 1]: with weight 0.15, crossing the whole image weighs as
    much as a 15-unit Lab colour difference.
    """
    batch, height, width, _ = images.shape
    grid_h, grid_w = -(-height // stride), -(-width // stride)
    rgb = images.permute(0, 3, 1, 2).float() / 255.0
    rgb = F.adaptive_avg_pool2d(rgb, (grid_h, grid_w)).permute(0, 2, 3, 1)
    lab = rgb_to_lab(rgb) / 100.0
    scale = position_weight / max(grid_h - 1, grid_w - 1, 1)
    ys = torch.arange(grid_h, device=images.device, dtype=torch.float32) * scale
    xs = torch.arange(grid_w, device=images.device, dtype=torch.float32) * scale
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    position = torch.stack([yy, xx], dim=-1).expand(batch, grid_h, grid_w, 2)
    return torch.cat([lab, position], dim=-1)


@register_generator("pixel")
class PixelKMeansGenerator(PseudoMaskGenerator):
    """K-Means on Lab colour + position per image (the paper's Table 1 "K-Means" baseline)."""

    def __init__(self, config: PseudoMaskConfig) -> None:
        super().__init__(config)
        log.warning(
            "pseudo-masks: using the PIXEL K-Means baseline (Lab colour + position, stride %d), "
            "not DINO features; set generator=dino with a DINO checkpoint for the paper's masks",
            config.pixel_stride,
        )

    @classmethod
    def output_settings(cls, config: PseudoMaskConfig) -> dict:
        return {
            **super().output_settings(config),
            "pixel_stride": config.pixel_stride,
            "pixel_position_weight": config.pixel_position_weight,
        }

    def generate(self, images: Tensor) -> Tensor:
        cfg = self.config
        images = images.to(self.device)
        features = pixel_features(images, cfg.pixel_stride, cfg.pixel_position_weight)
        batch, grid_h, grid_w, dims = features.shape
        result = batched_kmeans(
            features.reshape(batch, grid_h * grid_w, dims),
            k=min(cfg.num_segments, grid_h * grid_w),
            max_iter=cfg.max_iter,
            tol=cfg.tol,
            generator=self.kmeans_generator(),
            n_local_trials=cfg.kmeans_local_trials,
        )
        labels = result.labels.view(batch, grid_h, grid_w)
        mode = "nearest" if cfg.upsample == "auto" else cfg.upsample
        return upsample_labels(labels, tuple(images.shape[1:3]), cfg.num_segments, mode)
