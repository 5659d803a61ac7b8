"""Average a low-resolution feature map under full-resolution masks, exactly and cheaply.

The paper upsamples the dense output to the image size (bilinear) and averages it under each mask.
Bilinear upsampling is linear and separable, ``up(F) = U_y F U_xᵀ``, so the average under mask ``m`` is
``Σ_q (U_yᵀ m U_x)_q F_q / |m|``: the mask is pulled back to the feature grid once, and the
``[D, H, W]`` upsampled map is never materialised (512 × 500 × 375 floats per image for CLIP on VOC).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from sseg.errors import DataError


@lru_cache(maxsize=64)
def _interpolation_matrix(n_out: int, n_in: int) -> Tensor:
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)  # [n_in, 1, n_in]: one basis vector per row
    columns = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)  # [n_in, 1, n_out]
    return columns.squeeze(1).T.contiguous()  # [n_out, n_in]


def interpolation_matrix(n_out: int, n_in: int) -> Tensor:
    """``U [n_out, n_in]`` with ``U @ v`` = 1-D linear interpolation of ``v`` as ``F.interpolate(mode="linear",
    align_corners=False)`` does it (2-D bilinear is ``U_y F U_xᵀ``)."""
    return _interpolation_matrix(int(n_out), int(n_in))


def pulled_back_masks(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """bool/float masks ``[M, H, W]`` → weights ``[M, h, w]`` on the feature grid such that
    ``(weights · F).sum() == (mask · bilinear_upsample(F, (H, W))).sum()`` for any map ``F [h, w]``."""
    if masks.dim() != 3:
        raise DataError(f"masks must be [M, H, W] (got shape {tuple(masks.shape)})")
    height, width = masks.shape[-2:]
    u_y = interpolation_matrix(height, grid[0]).to(masks.device, torch.float32)
    u_x = interpolation_matrix(width, grid[1]).to(masks.device, torch.float32)
    return u_y.T @ masks.float() @ u_x


def average_under_masks(features: Tensor, masks: Tensor) -> Tensor:
    """``features [C, h, w]`` upsampled (bilinear) to the masks' size ``[M, H, W]`` and averaged under each
    mask → ``[M, C]``. Every mask must have at least one pixel."""
    if features.dim() != 3:
        raise DataError(f"features must be [C, h, w] (got shape {tuple(features.shape)})")
    areas = masks.flatten(1).float().sum(dim=1)
    if bool((areas <= 0).any()):
        raise DataError("cannot average under an empty mask")
    weights = pulled_back_masks(masks, tuple(features.shape[-2:]))  # [M, h, w]
    pooled = weights.flatten(1) @ features.flatten(1).float().T  # [M, C]
    return pooled / areas[:, None]


def masks_on_grid(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Masks ``[..., M, H, W]`` downsampled to the token grid by nearest neighbour (bool)."""
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    small = F.interpolate(flat, size=grid, mode="nearest")
    return small.reshape(*lead, *grid) > 0.5
