"""S-Seg model: MaskFormer (no class head) + open_clip text transformer, 2-layer MLP projections."""

from sseg.models.backbones import build_backbone
from sseg.models.config import ModelConfig, tiny_model_config
from sseg.models.diagnostics import query_collapse
from sseg.models.maskformer import MaskFormer
from sseg.models.sseg_model import SSegModel, mask_pooled_features
from sseg.models.text import TextEncoder, tokenize

__all__ = [
    "MaskFormer",
    "ModelConfig",
    "SSegModel",
    "TextEncoder",
    "build_backbone",
    "mask_pooled_features",
    "query_collapse",
    "tiny_model_config",
    "tokenize",
]
