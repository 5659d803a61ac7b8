"""The TagCLIP segmenter: a frozen vision-language model (+ deep visual prompts for a CLIP ViT) and the
TagCLIP decoder. Open-vocabulary through the text tower: any class list at inference; the classes named
in ``cfg.seen_classes`` are seen, every other one is unseen (:mod:`sseg.tagclip.scores`)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sseg.errors import ConfigError
from sseg.models.registry import register_model
from sseg.semivl.vlm import ClipVLM, SSegVLM, VisionLanguageModel
from sseg.tagclip.config import TagCLIPModelConfig
from sseg.tagclip.decoder import TagCLIPDecoder
from sseg.tagclip.prompts import DeepVisualPrompts
from sseg.tagclip.scores import combine_scores, dense_zero_shot, max_over_concepts


def build_vlm(cfg: TagCLIPModelConfig) -> VisionLanguageModel:
    if cfg.vlm == "sseg":
        return SSegVLM(cfg.sseg)
    return ClipVLM(cfg.clip_model, cfg.clip_model_cfg, skip_blocks=(1, 1))  # TagCLIP uses no skip features


def seen_flags(class_names: Sequence[str], concepts_per_class: Sequence[Sequence[str]],
               seen_classes: Sequence[str]) -> list[bool]:
    """Per class: seen when its name or one of its concepts is a seen class (case-insensitive)."""
    seen = {c.lower() for c in seen_classes}
    return [name.lower() in seen or any(c.lower() in seen for c in concepts)
            for name, concepts in zip(class_names, concepts_per_class)]


@register_model("tagclip", TagCLIPModelConfig)
class TagCLIPModel(nn.Module):
    closed_vocabulary = False

    def __init__(self, cfg: TagCLIPModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vlm = build_vlm(cfg)
        self.prompts: DeepVisualPrompts | None = None
        if cfg.prompt_tokens:
            visual = self.vlm.clip.visual
            blocks = len(visual.transformer.resblocks)
            layers = cfg.prompt_layers or blocks
            if layers > blocks:
                raise ConfigError(f"prompt_layers {layers} > the {blocks} blocks of the CLIP ViT")
            self.prompts = DeepVisualPrompts(layers, cfg.prompt_tokens, visual.conv1.out_channels,
                                             visual.conv1.kernel_size[0])
        self.decoder = TagCLIPDecoder(self.vlm.embed_dim, cfg.layers, cfg.heads, cfg.ffn_ratio, cfg.dropout,
                                      cfg.trusty_token, cfg.trusty_learner, cfg.query_init)
        for p in self.vlm.parameters():  # the VLM stays frozen; prompts and decoder train
            p.requires_grad_(False)

    # -- parameters
    def unfreeze_vision(self) -> None:
        """Train the VLM's vision tower too (the text tower stays frozen: unseen names keep their
        embeddings). Its normalisation statistics stay frozen (:meth:`train` keeps the VLM in eval mode)."""
        for _, p in self.vlm.vision_parameters():
            p.requires_grad_(True)

    @property
    def vision_trained(self) -> bool:
        return any(p.requires_grad for _, p in self.vlm.vision_parameters())

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """``{"head": decoder, "prompts": visual prompts, "vision": the vision tower once unfrozen}`` (the
        groups TagCLIP's optimizer scales)."""
        groups = {"head": list(self.decoder.parameters())}
        if self.prompts is not None:
            groups["prompts"] = list(self.prompts.parameters())
        vision = [p for _, p in self.vlm.vision_parameters() if p.requires_grad]
        if vision:
            groups["vision"] = vision
        return groups

    def train(self, mode: bool = True) -> "TagCLIPModel":
        """The frozen VLM always runs in eval mode (batch-norm statistics and dropout untouched)."""
        super().train(mode)
        self.vlm.eval()
        return self

    # -- text side
    @property
    def context_length(self) -> int:
        return self.cfg.context_length

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vlm.encode_text(tokens)

    # -- image side
    def embed_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prompts is not None:  # gradients flow through the frozen ViT into the prompts
            return self.vlm.embed_image(images, self.prompts())
        if self.training and self.vision_trained:
            return self.vlm.embed_image(images)
        with torch.no_grad():
            return self.vlm.embed_image(images)

    def forward(self, images: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """images [B, 3, H, W] (normalised), text [K, D] -> {"class_logits" [B, K, h, w], "trusty_logits"
        [B, 1, h, w] or None}, at the patch resolution."""
        patches, image = self.embed_image(images)
        class_logits, trusty_logits = self.decoder(patches, image, text)
        return {"class_logits": class_logits, "trusty_logits": trusty_logits}

    @torch.no_grad()
    def segment_scores(self, images: torch.Tensor, classifier) -> torch.Tensor:
        """Per-pixel class scores ``[B, C, H, W]`` for :class:`sseg.inference.Segmenter` (argmax = the
        prediction). Classes of the checkpoint's ``seen_classes`` get the seen rule, all others the unseen
        one; a class with several concepts takes the max over them. The scores are shifted by
        ``seen_bias`` so that none is negative (the Segmenter clamps at 0); the argmax is unchanged."""
        text = classifier.embeddings.to(images.device)
        patches, image = self.embed_image(images)
        class_logits, trusty = self.decoder(patches, image, text)
        size = images.shape[-2:]
        logits = F.interpolate(class_logits.float(), size=size, mode="bilinear", align_corners=False)
        zero_shot = None
        if self.cfg.zero_shot_ensemble > 0:
            zero_shot = F.interpolate(dense_zero_shot(patches, text, self.vlm.logit_scale()), size=size,
                                      mode="bilinear", align_corners=False)
        if trusty is not None:
            trusty = F.interpolate(trusty.float(), size=size, mode="bilinear", align_corners=False)
        concept_to_class = classifier.concept_to_class.to(images.device)
        concepts = [[] for _ in classifier.class_names]
        for concept, cls in zip(classifier.concepts, concept_to_class.tolist()):
            concepts[cls].append(concept)
        per_class = torch.tensor(seen_flags(classifier.class_names, concepts, self.cfg.seen_classes),
                                 device=images.device)
        scores = combine_scores(logits, trusty, per_class[concept_to_class], self.cfg.seen_bias,
                                self.cfg.inference_weighting, zero_shot, self.cfg.zero_shot_ensemble)
        return max_over_concepts(scores, concept_to_class, classifier.num_classes) + self.cfg.seen_bias

    @torch.no_grad()
    def trusty_map(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor | None:
        """The trusty probability ``[B, 1, H, W]`` at the input size (None without the token)."""
        trusty = self.forward(images, text)["trusty_logits"]
        if trusty is None:
            return None
        return F.interpolate(trusty.float(), size=images.shape[-2:], mode="bilinear", align_corners=False).sigmoid()

