"""Deep visual prompt tuning (VPT-deep, as TagCLIP and ZegCLIP tune a frozen CLIP ViT): a few learnable
tokens per transformer block, inserted after the CLS token.

The public code keeps 1 + 11 prompt sets for a 12-block ViT-B/16 (one inserted before the first block,
one replacing it before each later block), i.e. prompts before every block; each set goes through a
shared linear projection and dropout 0.1. Initialisation as VPT: uniform(+-sqrt(6 / (3 * patch^2 +
width))) for the tokens, Kaiming-normal (fan_out) for the projection.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DeepVisualPrompts(nn.Module):
    def __init__(self, layers: int, tokens: int, width: int, patch_size: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + width))
        self.embeddings = nn.Parameter(torch.empty(layers, tokens, width).uniform_(-bound, bound))
        self.proj = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.proj.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.proj.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> torch.Tensor:
        """[layers, tokens, width]: the prompt tokens of every prompted block."""
        return self.dropout(self.proj(self.embeddings))
