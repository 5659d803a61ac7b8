"""MaskFormer without a class head: backbone → FPN pixel decoder → transformer decoder → N masks.

Every decoder layer yields query features and mask logits (the last layer is the prediction, the
earlier ones are auxiliary outputs for deep supervision).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sseg.errors import DataError
from sseg.models.backbones import build_backbone
from sseg.models.config import ModelConfig
from sseg.models.pixel_decoder import FPNPixelDecoder
from sseg.models.transformer_decoder import MLP, TransformerDecoder

BACKBONE_STRIDE = 32


@dataclass
class MaskFormerOutput:
    query_features: torch.Tensor  # [L, B, N, hidden] per decoder layer (LayerNorm'ed)
    pred_masks: torch.Tensor  # [L, B, N, H/4, W/4] mask logits per decoder layer
    pixel_features: torch.Tensor  # [B, conv_dim, H/4, W/4] stride-4 FPN feature


class MaskFormer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.pixel_decoder = FPNPixelDecoder(
            self.backbone.out_channels, conv_dim=cfg.mask_dim, mask_dim=cfg.mask_dim,
            encoder_layers=cfg.pixel_decoder_encoder_layers, nheads=cfg.nheads,
            dim_feedforward=cfg.dim_feedforward, dropout=cfg.decoder_dropout)
        self.input_proj = nn.Conv2d(self.pixel_decoder.memory_channels, cfg.hidden_dim, 1)
        nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
        nn.init.zeros_(self.input_proj.bias)
        self.decoder = TransformerDecoder(cfg.hidden_dim, cfg.num_queries, cfg.dec_layers, cfg.nheads,
                                          cfg.dim_feedforward, cfg.decoder_dropout)
        self.mask_embed = MLP(cfg.hidden_dim, cfg.hidden_dim, cfg.mask_dim, 3)

    def forward(self, images: torch.Tensor) -> MaskFormerOutput:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must be float [B,3,H,W], got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % BACKBONE_STRIDE or w % BACKBONE_STRIDE:
            raise DataError(f"image height and width must be multiples of {BACKBONE_STRIDE}, got {h}x{w}")
        features = self.backbone(images)
        pixels = self.pixel_decoder(features)
        queries = self.decoder(self.input_proj(pixels.decoder_memory))  # [L,B,N,C]
        mask_embed = self.mask_embed(queries)
        pred_masks = torch.einsum("lbqc,bchw->lbqhw", mask_embed, pixels.mask_features)
        return MaskFormerOutput(query_features=queries, pred_masks=pred_masks,
                                pixel_features=pixels.pixel_features)
