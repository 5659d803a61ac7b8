"""Model configuration: paper sizes by default (S-Seg: Swin-S, 6-layer decoder, 64 queries, 256-d)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from sseg.config import StrictModel

CLIP_BPE_VOCAB_SIZE = 49408  # open_clip's SimpleTokenizer; end-of-text = 49407 is the largest id


class ModelConfig(StrictModel):
    """S-Seg model sizes. Defaults are the paper's; :func:`tiny_model_config` is the CPU size."""

    backbone: str = "swin_small_patch4_window7_224"
    # widths of the four stages (strides 4, 8, 16, 32) of the "tiny_convnet" backbone only
    tiny_convnet_widths: tuple[int, int, int, int] = (32, 64, 128, 256)
    backbone_checkpoint: str | None = None
    image_size: int = Field(224, ge=32)

    hidden_dim: int = Field(256, ge=8)
    num_queries: int = Field(64, ge=1)
    dec_layers: int = Field(6, ge=1)
    nheads: int = Field(8, ge=1)
    dim_feedforward: int = Field(2048, ge=8)
    decoder_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    mask_dim: int = Field(256, ge=8)

    pixel_decoder: Literal["fpn"] = "fpn"
    # transformer encoder layers on the stride-32 feature before the FPN (MaskFormer's
    # TransformerEncoderPixelDecoder when > 0; plain BasePixelDecoder when 0)
    pixel_decoder_encoder_layers: int = Field(0, ge=0)

    text_layers: int = Field(12, ge=1)
    text_width: int = Field(256, ge=8)
    text_heads: int = Field(4, ge=1)
    context_length: int = Field(77, ge=2)
    vocab_size: int = CLIP_BPE_VOCAB_SIZE

    embed_dim: int = Field(256, ge=2)
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)

    # "query": the paper (decoder query outputs → MLP). "pooled": a semantic pixel map averaged under each
    # predicted mask (detached weights: the mask's sigmoid × the per-pixel softmax over queries, so a pixel
    # counts for the masks that claim it) → the same MLP. Why: docs/experiments.md.
    mask_feature_source: Literal["query", "pooled"] = "query"

    @model_validator(mode="after")
    def _check_sizes(self) -> "ModelConfig":
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by nheads ({self.nheads})")
        if self.hidden_dim % 2:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be even (sine positional encoding)")
        if self.text_width % self.text_heads:
            raise ValueError(
                f"text_width ({self.text_width}) must be divisible by text_heads ({self.text_heads})")
        if self.vocab_size < CLIP_BPE_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) must be >= {CLIP_BPE_VOCAB_SIZE}: the CLIP BPE tokenizer "
                f"emits ids up to {CLIP_BPE_VOCAB_SIZE - 1} and the text tower pools at the largest id")
        if self.image_size % 32:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of 32 (backbone stride)")
        if self.max_logit_scale < self.init_logit_scale:
            raise ValueError("max_logit_scale must be >= init_logit_scale")
        return self


def tiny_model_config(**overrides: object) -> ModelConfig:
    """CPU-sized config for tests and the embedded demo (64 px, 2 cores); the demo adds
    ``mask_feature_source="pooled"`` (named config ``sseg_tiny``)."""
    values: dict[str, object] = dict(
        backbone="tiny_convnet",
        tiny_convnet_widths=(32, 64, 96, 128),
        image_size=64,
        hidden_dim=128,
        num_queries=16,
        dec_layers=3,
        nheads=4,
        dim_feedforward=256,
        decoder_dropout=0.0,
        mask_dim=128,
        text_layers=3,
        text_width=128,
        text_heads=4,
        context_length=32,
        embed_dim=128,
    )
    values.update(overrides)
    return ModelConfig.model_validate(values)
