"""DBA-CLIP's equivalences with random weights, mask pooling, and the mask embedders (TUSS Sec. 4.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sseg.errors import ConfigError, DataError
from sseg.semivl.vlm import ClipVLM, SSegVLM
from sseg.tuss.clip_dba import (clip_dense, dba_weights, last_block, mixed_values, penultimate_tokens,
                                split_heads, token_share_bias)
from sseg.tuss.config import EmbedConfig
from sseg.tuss.embed import MaskEmbedder, working_shape
from sseg.tuss.pooling import average_under_masks, interpolation_matrix, masks_on_grid

TINY_CLIP = {  # open_clip ViT of the paper's shape, shrunk (patch 16)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
ONE_HEAD_CLIP = {**TINY_CLIP, "vision_cfg": {**TINY_CLIP["vision_cfg"], "head_width": 64}}
TINY_SSEG = {
    "backbone": "tiny_convnet", "tiny_convnet_widths": [8, 16, 16, 32], "image_size": 64, "hidden_dim": 32,
    "num_queries": 4, "dec_layers": 1, "nheads": 2, "dim_feedforward": 64, "decoder_dropout": 0.0,
    "mask_dim": 32, "text_layers": 1, "text_width": 32, "text_heads": 2, "context_length": 16,
    "embed_dim": 32, "mask_feature_source": "pooled",
}


def clip_vlm(cfg=TINY_CLIP) -> ClipVLM:
    torch.manual_seed(0)
    vlm = ClipVLM(model_cfg=cfg, skip_blocks=(1, 2)).eval()
    with torch.no_grad():  # random non-trivial layer norms and biases, so no term is silently zero
        for name, p in vlm.clip.visual.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return vlm


def two_region_masks(grid: tuple[int, int]) -> torch.Tensor:
    """[1, 2, h, w]: left third / the rest (on the token grid)."""
    masks = torch.zeros(1, 2, *grid, dtype=torch.bool)
    masks[0, 0, :, : grid[1] // 3 + 1] = True
    masks[0, 1] = ~masks[0, 0]
    return masks


# ----------------------------------------------------------------------------- the bias


def test_token_share_bias_zero_within_masks_and_on_the_class_token():
    masks = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    masks[0, 0, 0, :] = True  # tokens 0, 1
    masks[0, 1, :, 1] = True  # tokens 1, 3 (token 1 in both; token 2 in none)
    bias = token_share_bias(masks, -4.0)[0]
    assert bias.shape == (5, 5)
    assert torch.all(bias[0] == 0) and torch.all(bias[:, 0] == 0)
    patch = bias[1:, 1:]
    share = {(0, 1), (1, 0), (1, 3), (3, 1)} | {(i, i) for i in range(4)}
    for i in range(4):
        for j in range(4):
            assert patch[i, j].item() == (0.0 if (i, j) in share else -4.0), (i, j)


# ----------------------------------------------------------------------------- equivalences


def test_identity_attention_is_maskclips_path():
    vlm = clip_vlm()
    images = torch.randn(2, 3, 64, 96)
    ours = clip_dense(vlm, images, weights=None)
    theirs, _ = vlm.dense(images)  # the MaskCLIP value path SemiVL uses
    assert ours.shape == theirs.shape == (2, 32, 4, 6)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # the same block with an explicit identity mixing matrix
    eye = lambda q, k: torch.eye(q.shape[-2]).expand(q.shape[0], q.shape[1], -1, -1)  # noqa: E731
    torch.testing.assert_close(clip_dense(vlm, images, eye), theirs, rtol=1e-5, atol=1e-5)


def test_zero_bias_is_plain_qq_plus_kk_attention():
    vlm = clip_vlm()
    images = torch.randn(1, 3, 64, 64)
    x, h, w = penultimate_tokens(vlm, images)
    block = vlm.clip.visual.transformer.resblocks[-1]
    masks = two_region_masks((h, w))
    zero = token_share_bias(masks, 0.0)
    assert torch.all(zero == 0)
    ours = mixed_values(block, x, dba_weights(zero))
    # reference: torch's scaled-dot-product attention with q as the keys, then with k as the queries
    y = block.ln_1(x)
    q, k, v = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    heads = block.attn.num_heads
    qh, kh, vh = (split_heads(t, heads) for t in (q, k, v))
    ref = F.scaled_dot_product_attention(qh, qh, vh) + F.scaled_dot_product_attention(kh, kh, vh)
    ref = block.attn.out_proj(ref.transpose(1, 2).reshape(v.shape))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_minus_infinity_bias_one_head_no_residual_is_mask_restricted_reweighted_pooling():
    vlm = clip_vlm(ONE_HEAD_CLIP)
    block = vlm.clip.visual.transformer.resblocks[-1]
    assert block.attn.num_heads == 1
    x, h, w = penultimate_tokens(vlm, torch.randn(1, 3, 64, 80))
    masks = two_region_masks((h, w))
    out = mixed_values(block, x, dba_weights(token_share_bias(masks, float("-inf"))))  # no residual
    y = block.ln_1(x)[0]
    width = y.shape[-1]
    wq, wk, wv = block.attn.in_proj_weight.split(width)
    bq, bk, bv = block.attn.in_proj_bias.split(width)
    q, k, v = y @ wq.T + bq, y @ wk.T + bk, y @ wv.T + bv
    for m in range(2):
        inside = [0] + [1 + i for i in masks[0, m].flatten().nonzero().flatten().tolist()]  # class token + mask
        rows = inside[1:]
        # the average affinity of each token to the mask's tokens, by hand: softmax over the mask only
        weights = torch.zeros(x.shape[1])
        for i in rows:
            for t in (q, k):
                logits = torch.tensor([float((t[i] @ t[j]).detach()) / math.sqrt(width) for j in inside])
                weights[inside] += logits.softmax(0) / len(rows)
        outside = [j for j in range(1, x.shape[1]) if j not in inside]
        assert torch.all(weights[outside] == 0)
        expected = block.attn.out_proj(weights @ v)  # re-weighted pooling of the value embeddings
        torch.testing.assert_close(out[0, rows].mean(0), expected, rtol=1e-4, atol=1e-5)


def test_dba_differs_from_maskclip_and_depends_on_the_masks():
    vlm = clip_vlm()
    images = torch.randn(1, 3, 64, 64)
    a = two_region_masks((4, 4))
    b = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    maskclip = clip_dense(vlm, images, None)
    dba_a = clip_dense(vlm, images, dba_weights(token_share_bias(a, -4.0)))
    dba_b = clip_dense(vlm, images, dba_weights(token_share_bias(b, -4.0)))
    assert not torch.allclose(dba_a, maskclip, atol=1e-3)
    assert not torch.allclose(dba_a, dba_b, atol=1e-3)
    # one mask over the whole image: the bias is 0 everywhere, i.e. plain q-q + k-k attention
    zero = clip_dense(vlm, images, dba_weights(token_share_bias(b, 0.0)))
    torch.testing.assert_close(dba_b, zero)


# ----------------------------------------------------------------------------- pooling


def test_interpolation_matrix_is_torch_bilinear():
    feat = torch.randn(3, 4, 6)
    up = F.interpolate(feat[None], size=(13, 21), mode="bilinear", align_corners=False)[0]
    u_y, u_x = interpolation_matrix(13, 4).float(), interpolation_matrix(21, 6).float()
    torch.testing.assert_close(u_y @ feat @ u_x.T, up, rtol=1e-5, atol=1e-5)


def test_average_under_masks_equals_upsample_then_average():
    feat = torch.randn(5, 4, 6)
    masks = torch.rand(3, 37, 50) > 0.6
    up = F.interpolate(feat[None], size=(37, 50), mode="bilinear", align_corners=False)[0]
    expected = torch.stack([up[:, m].mean(dim=1) for m in masks])
    torch.testing.assert_close(average_under_masks(feat, masks), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="empty mask"):
        average_under_masks(feat, torch.zeros(1, 37, 50, dtype=torch.bool))


def test_masks_on_grid_is_nearest():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True
    assert masks_on_grid(masks, (2, 2)).tolist() == [[[True, False], [False, False]]]


# ----------------------------------------------------------------------------- embedders


def _image_and_masks(h=64, w=80):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, :, : w // 3] = True
    masks[1, : h // 2, w // 3:] = True
    masks[2, h // 2:, w // 3:] = True
    return image, masks


def test_clip_embedder_maskclip_matches_pooling_the_maskclip_map():
    vlm = clip_vlm()
    image, masks = _image_and_masks()
    emb = MaskEmbedder.for_vlm(vlm, EmbedConfig(method="maskclip"))
    out = emb.embed(image, masks)
    assert out.shape == (3, 32)
    x = (torch.as_tensor(image).permute(2, 0, 1)[None].float() / 255 - torch.tensor(emb.source.mean).view(1, 3, 1, 1)) \
        / torch.tensor(emb.source.std).view(1, 3, 1, 1)
    dense, _ = vlm.dense(x)
    torch.testing.assert_close(out, average_under_masks(dense[0], masks), rtol=1e-4, atol=1e-5)


def test_clip_embedder_dba_one_pass_equals_per_mask_passes_for_disjoint_masks():
    """All masks in one pass: with disjoint masks and -inf, the tokens of each mask get what a pass with only
    that mask gives (tokens outside never mix in; the class token is shared)."""
    vlm = clip_vlm()
    image, masks = _image_and_masks(64, 96)
    emb = MaskEmbedder.for_vlm(vlm, EmbedConfig(method="dba", dba_bias=float("-inf")))
    together = emb.dense_map(image, masks)
    grid = masks_on_grid(masks, together.shape[-2:])
    for m in range(3):
        alone = emb.dense_map(image, torch.stack([masks[m], ~masks[m]]))
        torch.testing.assert_close(together[:, grid[m]], alone[:, grid[m]], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(together[:, ~grid[m]], alone[:, ~grid[m]], atol=1e-3)


def test_sliding_windows_and_gsw_cover_the_image():
    vlm = clip_vlm()
    image, masks = _image_and_masks(48, 100)
    cfg = EmbedConfig(method="dba", short_side=64, sliding=True, window=32, stride=16, gsw=True)
    emb = MaskEmbedder.for_vlm(vlm, cfg)
    assert working_shape(48, 100, 64, 16) == (64, 128)
    dense = emb.dense_map(image, masks)
    assert dense.shape == (32, 4, 8) and torch.isfinite(dense).all()
    assert emb.embed(image, masks).shape == (3, 32)
    with pytest.raises(ConfigError, match="multiples of the token stride"):
        MaskEmbedder.for_vlm(vlm, EmbedConfig(method="dba", sliding=True, window=40, stride=20))
    with pytest.raises(DataError, match="do not match the image size"):
        emb.embed(image, masks[:, :10])


def test_sseg_embedder_pools_the_semantic_map_then_projects():
    torch.manual_seed(0)
    vlm = SSegVLM(TINY_SSEG).eval()
    image, masks = _image_and_masks(64, 64)
    emb = MaskEmbedder.for_vlm(vlm, EmbedConfig(method="pooled"))
    out = emb.embed(image, masks)
    x = (torch.as_tensor(image).permute(2, 0, 1)[None].float() / 255 - torch.tensor(emb.source.mean).view(1, 3, 1, 1)) \
        / torch.tensor(emb.source.std).view(1, 3, 1, 1)
    model = vlm.model
    with torch.no_grad():
        semantic = model.semantic_proj(model.maskformer.pixel_decoder(model.maskformer.backbone(x)).pixel_features)
        up = F.interpolate(semantic, size=(64, 64), mode="bilinear", align_corners=False)[0]
        expected = model.image_projection(torch.stack([up[:, m].mean(1) for m in masks]))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="CLIP VLM"):
        MaskEmbedder.for_vlm(vlm, EmbedConfig(method="dba"))


def test_sseg_affinity_analogue_mixes_only_within_masks():
    torch.manual_seed(0)
    vlm = SSegVLM(TINY_SSEG).eval()
    image, masks = _image_and_masks(64, 64)
    plain = MaskEmbedder.for_vlm(vlm, EmbedConfig(method="pooled")).dense_map(image, masks)  # [C, 16, 16]
    mixed = MaskEmbedder.for_vlm(vlm, EmbedConfig(method="pooled_dba", dba_bias=float("-inf"))).dense_map(image, masks)
    grid = masks_on_grid(masks, plain.shape[-2:])
    x = plain.flatten(1).T  # [hw, C]
    for m in range(3):
        inside = grid[m].flatten()
        xs = x[inside]
        attn = (xs @ xs.T / math.sqrt(x.shape[1])).softmax(-1)
        torch.testing.assert_close(mixed.flatten(1).T[inside], xs + attn @ xs, rtol=1e-4, atol=1e-5)
