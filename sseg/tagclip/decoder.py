"""The TagCLIP decoder: ZegCLIP's query construction and attention-to-mask layers, the trusty token and
the trusty learner.

For K text embeddings t_k, the global image embedding h and the patch embeddings E (all L2-normalised)::

    queries q_k = Linear(2d -> d)(concat[t_k * h, t_k])        (+ the trusty token, projected alike)
    [trusty learner]  q = LayerNorm(q + Dropout(MHSA(q)))       (self-attention across the queries)
    3 x  q = LayerNorm(q + Dropout(CrossAttn(q, E)));  q = LayerNorm(q + Dropout(FFN(q)))
    mask logit of query k at patch p = the last layer's scaled q_k . k_p, averaged over heads

The width d is the embedding size of the VLM (the public code runs its head at CLIP's 512 with no input
projection). Initialisation follows the public head: Xavier-uniform for every matrix, the token included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sseg.errors import ConfigError


class CrossAttention(nn.Module):
    """Multi-head attention from queries to patches that also returns the pre-softmax scores averaged
    over heads (the mask logits)."""

    def __init__(self, dim: int, heads: int, attn_drop: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B, Q, d], memory [B, N, d] -> (output [B, Q, d], scores [B, Q, N])."""
        b, nq, d = queries.shape
        nk = memory.shape[1]
        h = self.heads
        q = self.q(queries).view(b, nq, h, d // h).transpose(1, 2)
        k = self.k(memory).view(b, nk, h, d // h).transpose(1, 2)
        v = self.v(memory).view(b, nk, h, d // h).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, h, Q, N]
        attn = self.attn_drop(scores.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, nq, d)
        return self.proj(out), scores.mean(dim=1)


class AttentionToMaskLayer(nn.Module):
    """Cross-attention to the patches + FFN, each with a residual and a LayerNorm (post-norm)."""

    def __init__(self, dim: int, heads: int, ffn_ratio: int, dropout: float) -> None:
        super().__init__()
        self.cross = CrossAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim * ffn_ratio), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim * ffn_ratio, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, scores = self.cross(queries, memory)
        queries = self.norm1(queries + self.drop1(out))
        queries = self.norm2(queries + self.drop2(self.ffn(queries)))
        return queries, scores


class TrustyLearner(nn.Module):
    """Multi-head self-attention across the queries (the C class queries and the trusty token) with a
    shortcut and a LayerNorm. Without the token it is plain query self-attention (the control)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        out = self.attn(queries, queries, queries, need_weights=False)[0]
        return self.norm(queries + self.drop(out))


class TagCLIPDecoder(nn.Module):
    def __init__(self, dim: int, layers: int = 3, heads: int = 8, ffn_ratio: int = 4, dropout: float = 0.1,
                 trusty_token: bool = True, trusty_learner: bool = True, query_init: str = "xavier") -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"the VLM embedding size {dim} is not divisible by {heads} decoder heads")
        self.dim = dim
        # the shared modules draw their initial values before the optional ones, so that under one seed every
        # variant (baseline, token, learner) starts from the same query projection and layers: a paired
        # ablation then compares the change, not two initialisation draws
        self.query_proj = nn.Linear(2 * dim, dim)
        self.layers = nn.ModuleList(AttentionToMaskLayer(dim, heads, ffn_ratio, dropout) for _ in range(layers))
        self._xavier(self.parameters())
        if query_init == "text_identity":  # drawn above all the same, so the optional modules below still pair
            with torch.no_grad():
                self.query_proj.weight.zero_()
                self.query_proj.weight[:, dim:].copy_(torch.eye(dim))
                self.query_proj.bias.zero_()
        elif query_init != "xavier":
            raise ConfigError(f"query_init {query_init!r}: use xavier or text_identity")
        self.learner = TrustyLearner(dim, heads, dropout) if trusty_learner else None
        self.trusty_token = nn.Parameter(torch.empty(1, dim)) if trusty_token else None
        if self.learner is not None:
            self._xavier(self.learner.parameters())
        if self.trusty_token is not None:
            nn.init.xavier_uniform_(self.trusty_token)

    @staticmethod
    def _xavier(parameters) -> None:
        for p in parameters:
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @property
    def has_token(self) -> bool:
        return self.trusty_token is not None

    def queries(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text [K, d], image [B, d] -> queries [B, K(+1), d] (the token last)."""
        t = F.normalize(text, dim=-1)
        if self.trusty_token is not None:
            t = torch.cat([t, self.trusty_token.to(t.dtype)])
        t = t.unsqueeze(0).expand(image.shape[0], -1, -1)
        h = F.normalize(image, dim=-1).unsqueeze(1)
        q = self.query_proj(torch.cat([t * h, t], dim=-1))
        return self.learner(q) if self.learner is not None else q

    def forward(self, patches: torch.Tensor, image: torch.Tensor,
                text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """patches [B, d, h, w], image [B, d], text [K, d] -> (class mask logits [B, K, h, w], trusty
        logits [B, 1, h, w] or None without the token), at the patch resolution."""
        b, d, h, w = patches.shape
        for name, size in (("patch", d), ("global image", image.shape[-1]), ("text", text.shape[-1])):
            if size != self.dim:
                raise ConfigError(f"{name} embedding size {size} does not fit the decoder width {self.dim}")
        memory = F.normalize(patches, dim=1).flatten(2).transpose(1, 2)
        q = self.queries(text, image)
        scores = None
        for layer in self.layers:
            q, scores = layer(q, memory)
        logits = scores.view(b, -1, h, w)
        if self.trusty_token is None:
            return logits, None
        return logits[:, :-1], logits[:, -1:]
