"""Mask embeddings from a frozen vision-language model (the VLM interface SemiVL uses, ``sseg.semivl.vlm``).

A *dense source* gives, for a batch of windows and their masks on the token grid, a feature map and the
head applied after pooling:

* :class:`ClipDense` (``maskclip`` / ``dba``): CLIP's projected last-block output; the head is the identity.
* :class:`SSegDense` (``pooled``): the S-Seg model's semantic pixel map (``semantic_proj`` of the FPN
  features); the head is its image projection — pool under the mask, then project, as its contrastive
  loss was trained (``sseg.models.sseg_model``); ``pooled_dba`` adds an affinity-restricted analogue of DBA.

:class:`MaskEmbedder` runs a source over one image: resize (short side, rounded to the token stride), one
whole-image pass or sliding windows, optionally averaged 0.5 / 0.5 with a global pass at short side
``window`` (GSW), then every mask is averaged under the full-resolution mask (``pooling``) and headed.
"""

from __future__ import annotations

import contextlib
import math
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sseg.errors import ConfigError, DataError
from sseg.inference import eval_mode, model_device, sliding_windows
from sseg.tuss.clip_dba import clip_dense, dba_weights, token_share_bias
from sseg.tuss.config import EmbedConfig
from sseg.tuss.pooling import average_under_masks, masks_on_grid

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's preprocessing
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class DenseSource(Protocol):
    stride: int  # pixels per feature-map cell
    size_divisor: int  # inputs are zero-padded (normalised space) to a multiple of this
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def dense(self, images: Tensor, token_masks: Tensor) -> Tensor:
        """float ``[B, 3, H, W]`` normalised, bool ``[B, M, H/stride, W/stride]`` → ``[B, C, H/stride, W/stride]``."""

    def head(self, pooled: Tensor) -> Tensor:
        """``[M, C]`` pooled features → ``[M, D]`` embeddings in the text space."""


class ClipDense:
    """An open_clip ViT (:class:`sseg.semivl.vlm.ClipVLM`): MaskCLIP (``dba=False``) or DBA last block."""

    mean, std = CLIP_MEAN, CLIP_STD

    def __init__(self, vlm: nn.Module, dba: bool, dba_bias: float = -4.0) -> None:
        if not hasattr(vlm, "clip"):
            raise ConfigError("embedding methods maskclip and dba need a CLIP VLM (vlm=clip)")
        self.vlm, self.dba, self.dba_bias = vlm, dba, float(dba_bias)
        self.stride = self.size_divisor = int(vlm.dense_stride)

    def dense(self, images: Tensor, token_masks: Tensor) -> Tensor:
        weights = dba_weights(token_share_bias(token_masks, self.dba_bias)) if self.dba else None
        return clip_dense(self.vlm, images, weights)

    def head(self, pooled: Tensor) -> Tensor:
        return pooled


class SSegDense:
    """Our S-Seg model (:class:`sseg.semivl.vlm.SSegVLM`): semantic map, pooled, then the image projection.

    ``dba_bias`` (not None) adds the affinity-restricted analogue of DBA (a named deviation: a convnet has no
    last attention block): ``x' = x + A x`` with ``A = softmax(x xᵀ/√C + B)`` over the semantic map's
    positions, ``B`` the same mask-sharing bias as CLIP's DBA."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD
    stride, size_divisor = 4, 32

    def __init__(self, vlm: nn.Module, dba_bias: float | None = None) -> None:
        model = getattr(vlm, "model", None)
        if model is None or not hasattr(model, "semantic_proj"):
            raise ConfigError("embedding methods pooled and pooled_dba need an S-Seg VLM whose model has a "
                              "semantic map (mask_feature_source=pooled)")
        self.model, self.dba_bias = model, dba_bias

    def dense(self, images: Tensor, token_masks: Tensor) -> Tensor:
        mf = self.model.maskformer
        semantic = self.model.semantic_proj(mf.pixel_decoder(mf.backbone(images)).pixel_features)
        if self.dba_bias is None:
            return semantic
        b, c, h, w = semantic.shape
        x = semantic.flatten(2).transpose(1, 2)  # [B, hw, C]
        bias = token_share_bias(token_masks, self.dba_bias)[:, 1:, 1:]  # no class token here
        attn = ((x @ x.transpose(1, 2)) / math.sqrt(c) + bias).softmax(dim=-1)
        return (x + attn @ x).transpose(1, 2).reshape(b, c, h, w)

    def head(self, pooled: Tensor) -> Tensor:
        return self.model.image_projection(pooled)


def dense_source(vlm: nn.Module, cfg: EmbedConfig) -> DenseSource:
    if cfg.method in ("pooled", "pooled_dba"):
        return SSegDense(vlm, dba_bias=cfg.dba_bias if cfg.method == "pooled_dba" else None)
    return ClipDense(vlm, dba=cfg.method == "dba", dba_bias=cfg.dba_bias)


def _round_to(size: int, multiple: int) -> int:
    return max(multiple, int(math.floor(size / multiple + 0.5)) * multiple)


def working_shape(height: int, width: int, short_side: int | None, multiple: int) -> tuple[int, int]:
    """The resized image: short side ``short_side`` (None: unchanged), both sides rounded to ``multiple``."""
    scale = 1.0 if short_side is None else short_side / min(height, width)
    return _round_to(height * scale, multiple), _round_to(width * scale, multiple)


class MaskEmbedder:
    """``embed(image uint8 [H, W, 3], masks bool [M, H, W]) -> [M, D]`` (not normalised)."""

    def __init__(self, source: DenseSource, cfg: EmbedConfig, device: torch.device | str | None = None,
                 module: nn.Module | None = None) -> None:
        self.source, self.cfg = source, cfg
        self.module = module
        self.device = torch.device(device) if device is not None else (
            model_device(module) if module is not None else torch.device("cpu"))
        if cfg.sliding and (cfg.window % source.stride or cfg.stride % source.stride):
            raise ConfigError(f"embed.window and embed.stride must be multiples of the token stride {source.stride}")

    @classmethod
    def for_vlm(cls, vlm: nn.Module, cfg: EmbedConfig, device: torch.device | str | None = None) -> "MaskEmbedder":
        return cls(dense_source(vlm, cfg), cfg, device, module=vlm)

    def _normalise(self, image: np.ndarray | Tensor, size: tuple[int, int]) -> Tensor:
        x = torch.as_tensor(np.array(image)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.source.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.source.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _run(self, images: Tensor, masks: Tensor) -> Tensor:
        """Windows ``[B, 3, h, w]`` and their masks ``[B, M, h, w]`` → dense ``[B, C, h/s, w/s]`` (padded to the
        size divisor for the forward pass and cropped back)."""
        s, div = self.source.stride, self.source.size_divisor
        h, w = images.shape[-2:]
        ph, pw = -h % div, -w % div
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph))
            masks = F.pad(masks, (0, pw, 0, ph))
        grid = (images.shape[-2] // s, images.shape[-1] // s)
        out = []
        for start in range(0, images.shape[0], self.cfg.batch_size):
            stop = start + self.cfg.batch_size
            out.append(self.source.dense(images[start:stop], masks_on_grid(masks[start:stop], grid)))
        return torch.cat(out)[..., :h // s, :w // s]

    def _pass(self, image: np.ndarray | Tensor, masks: Tensor, short_side: int | None, sliding: bool) -> Tensor:
        s = self.source.stride
        size = working_shape(masks.shape[-2], masks.shape[-1], short_side, s)
        x = self._normalise(image, size)
        small = F.interpolate(masks[None].float(), size=size, mode="nearest")[0] > 0.5
        if not sliding:
            return self._run(x, small[None])[0]
        windows = sliding_windows(size[0], size[1], self.cfg.window, self.cfg.stride)
        crops = torch.cat([x[..., y0:y1, x0:x1] for y0, y1, x0, x1 in windows])
        crop_masks = torch.stack([small[:, y0:y1, x0:x1] for y0, y1, x0, x1 in windows])
        dense = self._run(crops, crop_masks)
        total = dense.new_zeros(dense.shape[1], size[0] // s, size[1] // s)
        count = dense.new_zeros(1, size[0] // s, size[1] // s)
        for d, (y0, y1, x0, x1) in zip(dense, windows):
            total[:, y0 // s:y1 // s, x0 // s:x1 // s] += d
            count[:, y0 // s:y1 // s, x0 // s:x1 // s] += 1
        return total / count

    @torch.no_grad()
    def dense_map(self, image: np.ndarray | Tensor, masks: Tensor) -> Tensor:
        """The feature map ``[C, h, w]`` the masks are pooled from (sliding, or GSW's 0.5 / 0.5 average)."""
        cfg = self.cfg
        with eval_mode(self.module) if self.module is not None else contextlib.nullcontext():
            dense = self._pass(image, masks, cfg.short_side, cfg.sliding)
            if cfg.gsw:
                glob = self._pass(image, masks, cfg.window, sliding=False)
                glob = F.interpolate(glob[None], size=dense.shape[-2:], mode="bilinear", align_corners=False)[0]
                dense = 0.5 * (dense + glob)
        return dense

    @torch.no_grad()
    def embed(self, image: np.ndarray | Tensor, masks: Tensor) -> Tensor:
        image_hw = tuple(np.asarray(image).shape[:2])
        if masks.dim() != 3 or tuple(masks.shape[-2:]) != image_hw:
            raise DataError(f"masks {tuple(masks.shape)} do not match the image size {image_hw}")
        if masks.shape[0] == 0:
            raise DataError("an image without masks cannot be embedded")
        masks = masks.to(self.device)
        pooled = average_under_masks(self.dense_map(image, masks), masks)
        with eval_mode(self.module) if self.module is not None else contextlib.nullcontext():
            return self.source.head(pooled).float().cpu()
