"""MaskFormer's transformer decoder (DETR-style, post-norm) and its building blocks.

Learnable query embeddings (N × hidden) act as positional queries over a zero target; every
layer does self-attention → cross-attention to the image tokens (with sine positional encoding)
→ FFN, and a shared LayerNorm is applied to every layer's output (auxiliary outputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """DETR's normalised 2-D sine positional encoding: [B,C,H,W] → [B, 2·num_pos_feats, H, W]."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        y_embed = torch.arange(1, h + 1, device=x.device, dtype=torch.float32)[:, None].expand(h, w)
        x_embed = torch.arange(1, w + 1, device=x.device, dtype=torch.float32)[None, :].expand(h, w)
        y_embed = y_embed / (h + eps) * self.scale
        x_embed = x_embed / (w + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, None] / dim_t
        pos_y = y_embed[:, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, 0::2].sin(), pos_x[:, :, 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[:, :, 0::2].sin(), pos_y[:, :, 1::2].cos()), dim=3).flatten(2)
        pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(b, -1, -1, -1).to(x.dtype)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (DETR's MLP; MaskFormer's mask embed)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class FeedForward(nn.Module):
    def __init__(self, dim: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm self-attention encoder layer with positional encoding added to queries/keys."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout(self.self_attn(q, k, value=src, need_weights=False)[0]))
        return self.norm2(src + self.dropout(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention, cross-attention, FFN."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.ffn = FeedForward(dim, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, value=tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + pos, value=memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(attended))
        return self.norm3(tgt + self.dropout(self.ffn(tgt)))


class TransformerDecoder(nn.Module):
    """Queries × image tokens → per-layer query features [L, B, N, hidden] (all LayerNorm'ed)."""

    def __init__(self, hidden_dim: int, num_queries: int, num_layers: int, nheads: int,
                 dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_dim)
        self.pos_embed = PositionEmbeddingSine(hidden_dim // 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, memory_map: torch.Tensor) -> torch.Tensor:
        """``memory_map``: [B, hidden, h, w] (already projected to hidden_dim)."""
        b = memory_map.shape[0]
        pos = self.pos_embed(memory_map).flatten(2).transpose(1, 2)
        memory = memory_map.flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)
