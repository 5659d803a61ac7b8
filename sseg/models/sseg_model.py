"""S-Seg: MaskFormer (N masks + N mask features) and a text transformer in one embedding space."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sseg.errors import DataError

from sseg.models.config import ModelConfig
from sseg.models.mask_classification import mask_semantic_scores
from sseg.models.maskformer import MaskFormer
from sseg.models.registry import register_model
from sseg.models.text import TextEncoder, projection_mlp


def mask_pooled_features(pixel_features: torch.Tensor, mask_logits: torch.Tensor,
                         pooling: str = "sigmoid") -> torch.Tensor:
    """Average [B,C,h,w] pixel features under each mask [B,N,h,w] → [B,N,C].

    ``sigmoid``: weights = the mask's sigmoid. ``assignment``: weights = sigmoid × softmax over the N
    queries at each pixel (a pixel counts for the masks that claim it). The weights are detached: the
    pooled feature trains the semantic map, not the masks.
    """
    logits = mask_logits.detach()
    weights = logits.sigmoid()
    if pooling == "assignment":
        weights = weights * logits.softmax(dim=1)
    weights = weights.flatten(2)  # [B,N,hw]
    pooled = torch.einsum("bnp,bcp->bnc", weights, pixel_features.flatten(2))
    return pooled / (weights.sum(-1, keepdim=True) + 1e-6)


def words_mean_feature(word_features: torch.Tensor, caption_words: torch.Tensor) -> torch.Tensor:
    """[W,D] word features, bool [B,W] membership → [B,D]: the mean of each caption's L2-normalised
    word features (a caption without words gets a zero vector; the contrastive loss normalises)."""
    weights = caption_words.to(word_features.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    return weights @ F.normalize(word_features, dim=-1)


@register_model("sseg", ModelConfig)
class SSegModel(nn.Module):
    """Segments with class names (:class:`sseg.segmenting.SegmentingModel`) by mask classification."""

    closed_vocabulary = False

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.maskformer = MaskFormer(cfg)
        self.text_encoder = TextEncoder(cfg)
        self.image_projection = projection_mlp(cfg.hidden_dim, cfg.embed_dim)
        if cfg.mask_feature_source == "pooled":
            self.semantic_proj = nn.Conv2d(cfg.mask_dim, cfg.hidden_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))

    def _mask_features(self, query_features: torch.Tensor, mask_logits: torch.Tensor,
                       semantic_map: torch.Tensor | None) -> torch.Tensor:
        if semantic_map is None:
            return self.image_projection(query_features)
        return self.image_projection(mask_pooled_features(semantic_map, mask_logits, "assignment"))

    def encode_image(self, images: torch.Tensor) -> dict[str, Any]:
        """images: normalised float [B,3,H,W] (H, W multiples of 32).

        Returns "pred_masks" [B,N,H/4,W/4] logits, "mask_features" [B,N,embed_dim] (projected,
        not normalised) and "aux_outputs": one such dict per earlier decoder layer.
        """
        out = self.maskformer(images)
        semantic_map = (self.semantic_proj(out.pixel_features)
                        if self.cfg.mask_feature_source == "pooled" else None)
        layers = [
            {"pred_masks": out.pred_masks[i],
             "mask_features": self._mask_features(out.query_features[i], out.pred_masks[i], semantic_map)}
            for i in range(out.pred_masks.shape[0])
        ]
        final = dict(layers[-1])
        final["aux_outputs"] = layers[:-1]
        return final

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: long [B,L] CLIP BPE ids → [B, embed_dim] (projected, not normalised)."""
        return self.text_encoder(tokens)

    @property
    def context_length(self) -> int:
        return self.cfg.context_length

    def current_logit_scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.cfg.max_logit_scale).exp()

    def segment_scores(self, images: torch.Tensor, classifier) -> torch.Tensor:
        """MaskFormer semantic scores ``[B, C, H, W]`` at the input size: each mask's class probabilities
        (cosine to the concepts × the capped temperature, softmax over concepts, max per class) times the
        mask's sigmoid, summed over masks (:mod:`sseg.models.mask_classification`)."""
        out = self.encode_image(images)
        return mask_semantic_scores(out["pred_masks"], out["mask_features"], classifier,
                                    self.current_logit_scale().detach(), tuple(images.shape[-2:]))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None,
                word_tokens: torch.Tensor | None = None,
                caption_words: torch.Tensor | None = None) -> dict[str, Any]:
        """``word_tokens`` [W,L]: single-word prompts of the batch vocabulary (their features are
        returned as "word_features"); encoded here so DDP sees every use of the text tower.
        ``caption_words`` bool [B,W]: when given, ``tokens`` is not read and each caption's text
        feature is the mean of its words' normalised features (``caption_feature=word_mean``)."""
        outputs = self.encode_image(images)
        outputs["image_features"] = outputs["mask_features"].mean(dim=1)
        if caption_words is not None:
            if word_tokens is None or caption_words.shape != (images.shape[0], word_tokens.shape[0]):
                raise DataError("caption_words must be a [B, W] matrix over the W word prompts")
            words = self.encode_text(word_tokens)
            outputs["word_features"] = words
            outputs["text_features"] = words_mean_feature(words, caption_words)
        elif word_tokens is None:
            outputs["text_features"] = self.encode_text(tokens)
        else:  # one pass of the text tower for captions and word prompts
            texts = self.encode_text(torch.cat([tokens, word_tokens]))
            outputs["text_features"], outputs["word_features"] = texts[:len(tokens)], texts[len(tokens):]
        outputs["logit_scale"] = self.current_logit_scale()
        return outputs

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Call after every optimizer step (CLIP): keeps the temperature ≥ 1/100."""
        self.logit_scale.clamp_(0.0, self.cfg.max_logit_scale)
