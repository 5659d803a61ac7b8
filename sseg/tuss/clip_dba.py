"""CLIP's last ViT block for mask embeddings: MaskCLIP's value path and DBA (discrimination-bias alignment).

Both replace only the last block of an open_clip ``VisionTransformer`` (TUSS paper, Sec. 4.1):

* **MaskCLIP** (the baseline, Eq. 5): no attention mixing — every token keeps its own value embedding,
  ``x + out_proj(v)``, then the MLP, ``ln_post`` and the projection.
* **DBA** (Eq. 10, every head): ``A = softmax(q qᵀ/√d_h + B) + softmax(k kᵀ/√d_h + B)``,
  ``x' = x + out_proj(A v)``, ``x'' = x' + MLP(LN(x'))``. ``B_ij = 0`` when tokens ``i`` and ``j`` share at
  least one mask on the token grid (masks downsampled by nearest neighbour), a negative constant elsewhere
  (``-inf``: attention strictly inside the mask; a soft ``-4`` by default). The class token's row and
  column get 0, and a token always shares with itself. One bias holds every mask of the image, so all its
  masks are embedded in one pass.

``last_block`` takes the attention weights as a function, so MaskCLIP is the same code with the identity
(the tests prove the equivalences DBA rests on).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sseg.errors import DataError

# (q, k) per head [B, heads, N, d_h] -> mixing weights [B, heads, N, N]
AttentionWeights = Callable[[Tensor, Tensor], Tensor]


def token_share_bias(token_masks: Tensor, negative: float) -> Tensor:
    """bool ``[B, M, h, w]`` masks on the token grid → additive bias ``[B, 1 + hw, 1 + hw]`` (class token first):
    0 where two tokens share a mask (and on the diagonal, and in the class token's row and column),
    ``negative`` elsewhere."""
    if token_masks.dim() != 4:
        raise DataError(f"token masks must be [B, M, h, w] (got shape {tuple(token_masks.shape)})")
    member = token_masks.flatten(2).transpose(1, 2).float()  # [B, N, M]
    share = (member @ member.transpose(1, 2)) > 0
    n = share.shape[-1]
    share = share | torch.eye(n, dtype=torch.bool, device=share.device)
    bias = torch.full((share.shape[0], n + 1, n + 1), float(negative), device=share.device)
    bias[:, 0, :] = 0.0
    bias[:, :, 0] = 0.0
    bias[:, 1:, 1:] = torch.where(share, torch.zeros((), device=share.device), bias[:, 1:, 1:])
    return bias


def dba_weights(bias: Tensor) -> AttentionWeights:
    """DBA's mixing weights for a bias ``[B, N, N]`` (shared by every head)."""

    def weights(q: Tensor, k: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1])
        b = bias[:, None].to(q.dtype)
        return ((q @ q.transpose(-1, -2)) * scale + b).softmax(-1) + ((k @ k.transpose(-1, -2)) * scale + b).softmax(-1)

    return weights


def _qkv(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    attn: nn.MultiheadAttention = block.attn
    if getattr(attn, "in_proj_weight", None) is None:
        raise DataError("the CLIP block's attention has separate q/k/v projections; only a packed in_proj is "
                        "supported")
    y = block.ln_1(x)
    return F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def split_heads(t: Tensor, heads: int) -> Tensor:
    b, n, width = t.shape
    return t.view(b, n, heads, width // heads).transpose(1, 2)  # [B, heads, N, d_h]


def mixed_values(block: nn.Module, x: Tensor, weights: AttentionWeights | None) -> Tensor:
    """``out_proj(A v)`` of the block's attention for batch-first tokens ``x [B, N, width]`` (no residual);
    ``weights=None`` is the identity (MaskCLIP: ``out_proj(v)``)."""
    q, k, v = _qkv(block, x)
    if weights is not None:
        heads = block.attn.num_heads
        mixed = weights(split_heads(q, heads), split_heads(k, heads)) @ split_heads(v, heads)
        v = mixed.transpose(1, 2).reshape(v.shape)
    return block.attn.out_proj(v)


def last_block(block: nn.Module, x: Tensor, weights: AttentionWeights | None) -> Tensor:
    """One open_clip ``ResidualAttentionBlock`` with its attention map replaced: residual, MLP, layer scales."""
    out = x + block.ls_1(mixed_values(block, x, weights))
    return out + block.ls_2(block.mlp(block.ln_2(out)))


def penultimate_tokens(vlm, images: Tensor) -> tuple[Tensor, int, int]:
    """Batch-first tokens ``[B, 1 + hw, width]`` entering the last block of a :class:`~sseg.semivl.vlm.ClipVLM`,
    and the token grid ``(h, w)``."""
    visual = vlm.clip.visual
    x, h, w = vlm._tokens(images)  # patch embedding, class token, (interpolated) positions, ln_pre
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    if not batch_first:
        x = x.transpose(0, 1)
    return x, h, w


def clip_dense(vlm, images: Tensor, weights: AttentionWeights | None) -> Tensor:
    """Dense CLIP output in the text space ``[B, D, h, w]`` with the last block's attention replaced by
    ``weights`` (None: MaskCLIP)."""
    visual = vlm.clip.visual
    x, h, w = penultimate_tokens(vlm, images)
    x = last_block(visual.transformer.resblocks[-1], x, weights)
    out = visual.ln_post(x[:, 1:]) @ visual.proj
    return out.transpose(1, 2).reshape(out.shape[0], -1, h, w)
