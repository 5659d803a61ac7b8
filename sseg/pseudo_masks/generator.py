"""Pseudo-mask generator interface, its config, and the name -> class registry.

A generator maps a batch of uint8 RGB images ``[B, H, W, 3]`` (what the data pipeline decodes)
to uint8 segment-id maps ``[B, H, W]`` with ids in ``[0, num_segments)``. Implementations:
``pixel`` (K-Means on Lab colour + position, the paper's K-Means baseline) and ``dino``
(K-Means on DINO ViT-S/8 patch features, the paper's generator). ``output_settings(config)`` names
everything that changes the output (DINO weights by their file's digest) without building the model, so a
pseudo-mask cache can be keyed by it (pipelines.io.cache.pseudo_mask_cache_key).
"""

from __future__ import annotations

import abc
from functools import lru_cache
from pathlib import Path
from typing import Callable, ClassVar, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from sseg.config import StrictModel, config_hash
from sseg.errors import ConfigError, DataError


class PseudoMaskConfig(StrictModel):
    generator: Literal["pixel", "dino"] = "pixel"
    num_segments: int = Field(default=8, ge=1, le=255)
    max_iter: int = Field(default=20, ge=1)
    tol: float = Field(default=1e-4, ge=0)
    # 1 = standard k-means++; 2 + ln K (= 4 for K=8) is scikit-learn's greedy variant: better
    # seeds (fewer one-token segments) for one extra distance pass per trial.
    kmeans_local_trials: int = Field(default=1, ge=1)
    seed: int = 0
    dino_checkpoint: str | None = None  # local path to e.g. dino_deitsmall8_pretrain.pth
    dino_feature: Literal["tokens", "keys"] = "tokens"
    # Only for tests / smoke runs: a randomly initialised ViT gives meaningless masks.
    dino_allow_random_init: bool = False
    pixel_stride: int = Field(default=2, ge=1)
    # Tuned on the procedural world (64 px, val): 0.15 -> oracle mIoU 79% at stride 1, 70% at 2.
    pixel_position_weight: float = Field(default=0.15, ge=0)
    # "auto": nearest for pixel (already near full resolution), bilinear-on-one-hot for dino.
    upsample: Literal["auto", "nearest", "bilinear"] = "auto"
    device: str = "auto"  # "auto" = cuda if available, else cpu
    bf16: bool = True  # bf16 autocast for the ViT and bf16 K-Means distances where supported


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"pseudo_masks.device: unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"pseudo_masks.device is '{name}' but CUDA is not available")
    return device


@lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 matrix products pay off on GPUs and on CPUs with AVX512-BF16 / AMX; elsewhere they
    are emulated and slower than float32."""
    return device.type == "cuda" or (device.type == "cpu" and _cpu_has_native_bf16())


def as_image_batch(images: Tensor | np.ndarray) -> Tensor:
    """Validate a uint8 RGB batch [B, H, W, 3] (a single [H, W, 3] image is also accepted)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise DataError(f"pseudo-mask input must be a uint8 tensor [B, H, W, 3], got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
        raise DataError(
            f"pseudo-mask input must be uint8 RGB [B, H, W, 3], got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"pseudo-mask input is empty: shape {tuple(images.shape)}")
    return images


def upsample_labels(labels: Tensor, size: tuple[int, int], num_segments: int, mode: str) -> Tensor:
    """Label grids [B, h, w] (long) -> uint8 maps [B, H, W].

    ``bilinear`` interpolates the one-hot maps and takes the argmax, which gives smooth segment
    borders instead of the staircase of nearest-neighbour upsampling.
    """
    if mode == "nearest":
        grid = labels.unsqueeze(1).float()
        return F.interpolate(grid, size=size, mode="nearest").squeeze(1).to(torch.uint8)
    one_hot = F.one_hot(labels, num_segments).permute(0, 3, 1, 2).float()
    smooth = F.interpolate(one_hot, size=size, mode="bilinear", align_corners=False)
    return smooth.argmax(dim=1).to(torch.uint8)


class PseudoMaskGenerator(abc.ABC):
    """uint8 RGB [B, H, W, 3] -> uint8 segment ids [B, H, W] in [0, num_segments)."""

    name: ClassVar[str]

    def __init__(self, config: PseudoMaskConfig) -> None:
        self.config = config
        self.num_segments = config.num_segments
        self.device = resolve_device(config.device)

    def __call__(self, images: Tensor | np.ndarray) -> Tensor:
        batch = as_image_batch(images)
        with torch.inference_mode():
            return self.generate(batch).cpu()

    @abc.abstractmethod
    def generate(self, images: Tensor) -> Tensor:
        """Segment a validated uint8 batch [B, H, W, 3]; returns uint8 [B, H, W]."""

    _COMMON_SETTINGS: ClassVar[tuple[str, ...]] = (
        "num_segments", "max_iter", "tol", "kmeans_local_trials", "seed", "upsample")

    @classmethod
    def output_settings(cls, config: PseudoMaskConfig) -> dict:
        """The settings that change this generator's output, from the config alone (no model is built;
        subclasses add their own), so a pseudo-mask cache can be keyed before any generator exists."""
        return {key: getattr(config, key) for key in cls._COMMON_SETTINGS}

    def hashed_settings(self) -> dict:
        """The settings that change this generator's output."""
        return self.output_settings(self.config)

    def config_hash(self) -> str:
        return config_hash({"generator": self.name, **self.hashed_settings()})

    def kmeans_generator(self) -> torch.Generator:
        """A fresh seeded RNG per call: a batch's masks do not depend on what ran before it."""
        return torch.Generator().manual_seed(self.config.seed)


G = TypeVar("G", bound=type[PseudoMaskGenerator])
_REGISTRY: dict[str, type[PseudoMaskGenerator]] = {}


def register_generator(name: str) -> Callable[[G], G]:
    def add(cls: G) -> G:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def available_generators() -> list[str]:
    return sorted(_REGISTRY)


def generator_class(name: str) -> type[PseudoMaskGenerator]:
    """The generator class registered as ``name`` (pixel and dino register on package import)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown pseudo-mask generator '{name}' (known: {', '.join(available_generators())})"
        ) from None


def build_generator(config: PseudoMaskConfig) -> PseudoMaskGenerator:
    """The generator named by ``config.generator``."""
    return generator_class(config.generator)(config)
