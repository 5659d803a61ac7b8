"""The SemiVL model config (what a checkpoint needs to rebuild the model)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sseg.config import StrictModel

# Spatial fine-tuning (SemiVL Sec. 3.3): only the vision backbone's parameters that mix information
# between positions train. ViT (open_clip naming): attention (names containing "attn") and the
# position embedding (open_clip calls it "positional_embedding"; mmseg's ViT "pos_embed").
VIT_SPATIAL_PATTERNS: tuple[str, ...] = ("attn", "pos_embed", "positional_embedding")
# The embedded S-Seg model's convnet has no attention; its analogue is the layers that aggregate over
# neighbouring positions *across scales*: the backbone's stride-2 (downsampling) 3x3 convolutions and
# the FPN pixel decoder's 3x3 output convolutions (with their norms). The stride-1 3x3 convs, every 1x1
# lateral / projection and the per-pixel MLP to the text space stay frozen (README, "SemiVL").
SSEG_SPATIAL_PATTERNS: tuple[str, ...] = (
    r"backbone\.stem\.[01]\.", r"backbone\.stages\.\d+\.0\.",
    r"pixel_decoder\.top_output\.", r"pixel_decoder\.output\.")


def vlm_context_length(vlm: str, sseg: dict | None, clip_model_cfg: dict | None) -> int:
    """The text tower's context length of a VL model config (S-Seg's model config, or an open_clip one)."""
    if vlm == "sseg":
        return int(sseg.get("context_length", 77))
    return int((clip_model_cfg or {}).get("text_cfg", {}).get("context_length", 77))


class SemiVLModelConfig(StrictModel):
    """The SemiVL segmenter: a vision-language model (``vlm``) + a decoder head.

    ``vlm="sseg"``: our S-Seg model (``sseg`` holds its ModelConfig as a dict); dense features = its
    semantic pixel map through the image projection, per pixel. ``vlm="clip"``: an open_clip CLIP
    (``clip_model`` name, or ``clip_model_cfg`` for any size); dense features as MaskCLIP.
    """

    vlm: Literal["sseg", "clip"] = "sseg"
    sseg: dict | None = None  # S-Seg ModelConfig fields (vlm="sseg")
    clip_model: str = "ViT-B-16"  # open_clip model name (vlm="clip")
    clip_model_cfg: dict | None = None  # an open_clip model config dict instead of the name (tests)
    clip_skip_blocks: tuple[int, int] = (1, 4)  # 1-based ViT blocks whose tokens feed the skips
    image_size: int = Field(64, ge=16)  # training crop; inference windows default to it

    decoder: Literal["language", "deeplab"] = "language"
    num_classes: int | None = Field(None, ge=1)  # deeplab only: its fixed output classes
    channels: int = Field(128, ge=16)  # language decoder width (paper 128)
    conv1_kernel: int = Field(7, ge=1)
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    transformer_layers: int = Field(2, ge=0)
    transformer_heads: int = Field(4, ge=1)
    text_channels: int = Field(128, ge=8)  # text anchors projected to this width
    # average-pool the dense VLM features by this factor before the decoder (1 = none): the 64-px world's
    # S-Seg map is at stride 4, the paper's ViT at stride 16; 2 puts the decoder at stride 8 → output stride 2
    dense_pool: int = Field(1, ge=1)
    pool_size: int = Field(4, ge=1)  # the class transformer runs on pool_size x pool_size-pooled maps
    up_channels: tuple[int, int] = (64, 32)
    skip_channels: tuple[int, int] = (32, 16)
    deeplab_channels: int = Field(256, ge=16)  # DeepLabV3+ ASPP width (its low-level branch: /5)
    fp_rate: float = Field(0.5, ge=0.0, lt=1.0)  # UniMatch feature perturbation: dropout2d rate

    spatial_patterns: tuple[str, ...] | None = None  # None: the VLM's default (see above)

    @model_validator(mode="after")
    def _check(self) -> "SemiVLModelConfig":
        if self.vlm == "sseg" and self.sseg is None:
            raise ValueError("vlm=sseg needs the S-Seg model config (model.sseg)")
        if self.decoder == "deeplab" and self.num_classes is None:
            raise ValueError("decoder=deeplab needs model.num_classes (its output classes are fixed)")
        if (self.channels + self.text_channels) % self.transformer_heads:
            raise ValueError("channels + text_channels must be divisible by transformer_heads")
        return self

    @property
    def context_length(self) -> int:
        return vlm_context_length(self.vlm, self.sseg, self.clip_model_cfg)

    @property
    def spatial(self) -> tuple[str, ...]:
        if self.spatial_patterns is not None:
            return self.spatial_patterns
        return SSEG_SPATIAL_PATTERNS if self.vlm == "sseg" else VIT_SPATIAL_PATTERNS
