"""MaskFormer's FPN pixel decoder (BasePixelDecoder / TransformerEncoderPixelDecoder).

Top-down FPN over the four backbone scales: a 3x3 output conv on the coarsest level, then for
each finer level ``lateral 1x1(f) + nearest-upsampled(y)`` followed by a 3x3 output conv
(GroupNorm + ReLU). A final 3x3 conv gives the per-pixel ``mask_features`` at stride 4.
With ``encoder_layers > 0`` the stride-32 feature first goes through a transformer encoder
(sine positions), whose output is also what the transformer decoder attends to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sseg.models.transformer_decoder import EncoderLayer, PositionEmbeddingSine


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def conv_norm(cin: int, cout: int, kernel: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                               group_norm(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    block = nn.Sequential(*layers)
    nn.init.kaiming_uniform_(block[0].weight, a=1)  # c2_xavier_fill, as detectron2
    return block


@dataclass
class PixelDecoderOutput:
    mask_features: torch.Tensor  # [B, mask_dim, H/4, W/4]
    pixel_features: torch.Tensor  # [B, conv_dim, H/4, W/4]: last FPN level before the mask conv
    decoder_memory: torch.Tensor  # [B, C, H/32, W/32]: what the transformer decoder attends to


class FPNPixelDecoder(nn.Module):
    def __init__(self, in_channels: Sequence[int], conv_dim: int, mask_dim: int,
                 encoder_layers: int = 0, nheads: int = 8, dim_feedforward: int = 2048,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"FPN pixel decoder needs 4 scales, got {len(in_channels)}")
        coarsest = in_channels[-1]
        self.encoder_layers = encoder_layers
        if encoder_layers > 0:
            self.input_proj = nn.Conv2d(coarsest, conv_dim, 1)
            nn.init.xavier_uniform_(self.input_proj.weight)
            nn.init.zeros_(self.input_proj.bias)
            self.pos_embed = PositionEmbeddingSine(conv_dim // 2)
            self.encoder = nn.ModuleList(
                EncoderLayer(conv_dim, nheads, dim_feedforward, dropout) for _ in range(encoder_layers))
            self.top_output = conv_norm(conv_dim, conv_dim, 3, relu=True)
            self.memory_channels = conv_dim
        else:
            self.top_output = conv_norm(coarsest, conv_dim, 3, relu=True)
            self.memory_channels = coarsest
        # finest first in these lists, matching in_channels[:-1]
        self.lateral = nn.ModuleList(conv_norm(c, conv_dim, 1, relu=False) for c in in_channels[:-1])
        self.output = nn.ModuleList(conv_norm(conv_dim, conv_dim, 3, relu=True) for _ in in_channels[:-1])
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)
        self.conv_dim = conv_dim

    def _encode(self, top: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(top)
        b, c, h, w = x.shape
        pos = self.pos_embed(x).flatten(2).transpose(1, 2)
        tokens = x.flatten(2).transpose(1, 2)
        for layer in self.encoder:
            tokens = layer(tokens, pos)
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def forward(self, features: Sequence[torch.Tensor]) -> PixelDecoderOutput:
        top = features[-1]
        memory = self._encode(top) if self.encoder_layers > 0 else top
        y = self.top_output(memory)
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.lateral[idx](features[idx])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = self.output[idx](y)
        return PixelDecoderOutput(mask_features=self.mask_features(y), pixel_features=y,
                                  decoder_memory=memory)
