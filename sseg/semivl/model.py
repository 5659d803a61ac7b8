"""The SemiVL segmenter: a vision-language model + the language-guided decoder (or DeepLabV3+).

Open-vocabulary through the text tower: ``forward`` takes the text embeddings of any concept list and
returns one logit map per class, a class scoring the max over its concepts (SemiVL Sec. 3.6). The
DeepLabV3+ head (the "language decoder off" switch) has a fixed class list.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sseg.errors import ConfigError
from sseg.models.registry import register_model
from sseg.semivl.config import SemiVLModelConfig
from sseg.semivl.decoder import DeepLabV3PlusHead, LanguageGuidedDecoder
from sseg.semivl.vlm import build_vlm


def max_over_concepts(concept_scores: torch.Tensor, concept_to_class: torch.Tensor,
                      num_classes: int) -> torch.Tensor:
    """[B, K, H, W] concept scores → [B, C, H, W]: each class takes the max over its concepts."""
    b, k, h, w = concept_scores.shape
    if concept_to_class.numel() != k:
        raise ValueError(f"{k} concept maps but {concept_to_class.numel()} concept → class entries")
    index = concept_to_class.to(concept_scores.device).view(1, k, 1, 1).expand(b, k, h, w)
    out = concept_scores.new_full((b, num_classes, h, w), float("-inf"))
    return out.scatter_reduce(1, index, concept_scores, reduce="amax", include_self=True)


def perturb(features: torch.Tensor, rows: tuple[int, int], rate: float) -> torch.Tensor:
    """dropout2d(rate) on ``features[rows[0]:rows[1]]``, the other rows unchanged."""
    a, b = rows
    return torch.cat([features[:a], F.dropout2d(features[a:b], rate, training=True), features[b:]])


@register_model("semivl", SemiVLModelConfig)
class SemiVLModel(nn.Module):
    """Segments with class names (:class:`sseg.segmenting.SegmentingModel`) per pixel."""

    closed_vocabulary = False

    def __init__(self, cfg: SemiVLModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vlm = build_vlm(cfg)
        if cfg.decoder == "language":
            self.head = LanguageGuidedDecoder(
                self.vlm.embed_dim, self.vlm.skip_in_channels, cfg.channels, cfg.conv1_kernel, cfg.aspp_rates,
                cfg.transformer_layers, cfg.transformer_heads, cfg.text_channels, cfg.pool_size,
                cfg.up_channels, cfg.skip_channels)
        else:
            self.head = DeepLabV3PlusHead(self.vlm.embed_dim, self.vlm.skip_in_channels[-1], cfg.num_classes,
                                          cfg.deeplab_channels, cfg.aspp_rates)

    # -- text side
    @property
    def context_length(self) -> int:
        return self.cfg.context_length

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vlm.encode_text(tokens)

    # -- parameters
    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"head.{n}", p) for n, p in self.head.named_parameters()]

    def set_trainable(self, spatial_only: bool) -> list[str]:
        """Text tower (and VLM parts the dense path does not use, e.g. S-Seg's query decoder) frozen; the vision tower trains whole or (spatial fine-tuning) only the parameters
        matching ``cfg.spatial``; the head trains. Returns the names of the trainable parameters."""
        for p in self.vlm.parameters():  # text tower and anything the dense path does not use
            p.requires_grad_(False)
        spatial = set(self.vlm.spatial_parameter_names(self.cfg.spatial)) if spatial_only else None
        for name, p in self.vlm.vision_parameters():
            p.requires_grad_(spatial is None or name in spatial)
        if spatial is not None and not spatial:
            raise ConfigError(f"spatial fine-tuning: no vision parameter matches {list(self.cfg.spatial)}")
        for _, p in self.head_parameters():
            p.requires_grad_(True)
        return [f"vlm.{n}" for n, p in self.vlm.named_parameters() if p.requires_grad] + \
            [n for n, p in self.head_parameters()]

    def train(self, mode: bool = True) -> "SemiVLModel":
        """BatchNorm layers whose parameters are frozen keep their running statistics (eval mode)."""
        super().train(mode)
        if mode:
            for m in self.vlm.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None \
                        and not m.weight.requires_grad:
                    m.eval()
        return self

    # -- image side
    def forward(self, images: torch.Tensor, text: torch.Tensor | None = None,
                concept_to_class: torch.Tensor | None = None, num_classes: int | None = None,
                fp_range: tuple[int, int] | None = None) -> torch.Tensor:
        """Class logits ``[B, C, H, W]`` at the input size.

        ``text`` [K, D]: concept embeddings, ``concept_to_class`` [K] their classes (language decoder).
        ``fp_range`` (start, stop): those images are decoded from dropout2d-perturbed encoder features
        (UniMatch's feature perturbation: dense features and skips; one backbone pass for the batch).
        """
        dense, skips = self.vlm.dense(images)
        if self.cfg.dense_pool > 1:
            dense = F.avg_pool2d(dense, self.cfg.dense_pool, ceil_mode=True)
        if fp_range is not None and self.cfg.fp_rate > 0:
            dense, *skips = [perturb(f, fp_range, self.cfg.fp_rate) for f in (dense, *skips)]
        if self.cfg.decoder == "language":
            if text is None or concept_to_class is None:
                raise ValueError("the language-guided decoder needs the concept text embeddings")
            concepts = self.head(dense, skips, text)
            logits = max_over_concepts(concepts, concept_to_class, int(num_classes or int(concept_to_class.max()) + 1))
        else:
            logits = self.head(dense, skips)
            if num_classes is not None and num_classes != logits.shape[1]:
                raise ConfigError(f"this SemiVL model has a DeepLabV3+ head over {logits.shape[1]} fixed classes; "
                                  f"{num_classes} classes were asked for")
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def segment_scores(self, windows: torch.Tensor, classifier) -> torch.Tensor:
        """Per-pixel class probabilities ``[B, C, h, w]`` for :class:`sseg.inference.Segmenter`."""
        logits = self.forward(windows, classifier.embeddings.to(windows.device),
                              classifier.concept_to_class.to(windows.device), classifier.num_classes)
        return logits.float().softmax(dim=1)


def build_semivl_model(model_config: dict, vlm_kind: str, vlm_checkpoint: str | None, vl_init: bool) -> "SemiVLModel":
    """The SemiVL model (random init), with the VLM's weights loaded when ``vl_init``: an S-Seg checkpoint
    (``vlm_kind="sseg"``) or a local open_clip state dict (``"clip"``)."""
    from sseg.models.registry import create_model

    model = create_model("semivl", model_config)
    if vl_init:
        if vlm_kind == "sseg":
            from sseg.checkpoints import load_checkpoint

            state = load_checkpoint(vlm_checkpoint, kinds=["sseg-pretrain"])
            model.vlm.load_pretrained(state["model"])
        else:
            from sseg.semivl.vlm import read_clip_state

            model.vlm.load_pretrained(read_clip_state(vlm_checkpoint))
    return model


@torch.no_grad()
def dense_class_similarity(vlm, images: torch.Tensor, text: torch.Tensor, concept_to_class: torch.Tensor,
                           num_classes: int) -> torch.Tensor:
    """Zero-shot dense cosine similarity per class ``[B, C, h, w]`` (max over concepts) of a VLM."""
    dense, _ = vlm.dense(images)
    sim = torch.einsum("bdhw,kd->bkhw", F.normalize(dense.float(), dim=1), F.normalize(text.float(), dim=-1))
    return max_over_concepts(sim, concept_to_class, num_classes)


def count_parameters(params: Sequence[tuple[str, nn.Parameter]]) -> int:
    return sum(p.numel() for _, p in params)
