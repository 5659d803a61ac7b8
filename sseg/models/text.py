"""Text tower: open_clip's causal TextTransformer (pooled at the end-of-text token) + MLP projection.

The pooling takes the position of the largest token id, which is the end-of-text token (49407)
of the CLIP BPE vocabulary; keep the full 49408-entry vocabulary so that stays true.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

import sseg  # noqa: F401  (torchvision import fix before open_clip)
from sseg.errors import DataError
from sseg.models.config import ModelConfig


@lru_cache(maxsize=1)
def _simple_tokenizer():  # type: ignore[no-untyped-def]
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()  # BPE vocab ships inside the wheel: no network


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.LongTensor:
    """CLIP BPE ids [len(texts), context_length]: <start> text <end> 0-padding; long texts are
    truncated with <end> kept as the last token."""
    if isinstance(texts, str):
        raise DataError("tokenize expects a list of strings, got a single string")
    if context_length < 2:
        raise DataError(f"context_length must be >= 2, got {context_length}")
    return _simple_tokenizer()(list(texts), context_length=context_length)


def projection_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The paper's 2-layer MLP projection (Linear-GELU-Linear)."""
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


class TextEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.transformer = TextTransformer(
            context_length=cfg.context_length, vocab_size=cfg.vocab_size, width=cfg.text_width,
            heads=cfg.text_heads, layers=cfg.text_layers, output_dim=None, pool_type="argmax")
        self.projection = projection_mlp(cfg.text_width, cfg.embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: long [B, L ≤ context_length] → [B, embed_dim] (projected, not normalised)."""
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise DataError(f"tokens must be an integer tensor [B,L], got {tuple(tokens.shape)} {tokens.dtype}")
        length = tokens.shape[1]
        if length > self.context_length:
            raise DataError(f"token sequences have length {length} > context_length {self.context_length}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise DataError(f"token ids must lie in [0, {self.vocab_size}), got "
                            f"[{int(tokens.min())}, {int(tokens.max())}]")
        if length < self.context_length:
            # zero padding after <end> changes nothing under the causal mask and argmax pooling
            tokens = F.pad(tokens, (0, self.context_length - length))
        pooled = self.transformer(tokens.long())
        return self.projection(pooled)
