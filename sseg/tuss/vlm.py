"""The frozen vision-language model TUSS embeds masks with: our S-Seg checkpoint or a local CLIP file, through
the VLM interface SemiVL uses (``sseg.semivl.vlm``), plus its text classifier and its logit scale."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from sseg.inference import TextClassifier, build_text_classifier

VLMKind = Literal["sseg", "clip"]


def load_vlm(kind: VLMKind, checkpoint: str | None, clip_model: str = "ViT-B-16",
             clip_model_cfg: dict | None = None) -> nn.Module:
    """An eval-mode VLM with its weights: ``kind="sseg"`` an ``sseg-pretrain`` checkpoint (path), ``"clip"`` an
    open_clip / OpenAI CLIP ViT file. A file of another kind or of another model: one-line CheckpointError.
    ``checkpoint=None`` builds the architecture with random weights (tests only)."""
    from sseg.semivl.vlm import ClipVLM, SSegVLM

    if kind == "sseg":
        from sseg.checkpoints import load_checkpoint, upgrade_model_config
        from sseg.models.registry import load_model_config

        if checkpoint is None:
            return SSegVLM(load_model_config("sseg_tiny")[1]).eval()
        state = load_checkpoint(checkpoint, kinds=["sseg-pretrain"])
        vlm = SSegVLM(upgrade_model_config("sseg", state["model_config"], str(checkpoint)))
        vlm.load_pretrained(state["model"])
        return vlm.eval()
    from sseg.clip_weights import clip_architecture, read_clip_weights

    weights = read_clip_weights(checkpoint) if checkpoint is not None else None
    name, model_cfg = clip_architecture(clip_model, clip_model_cfg, weights)
    vlm = ClipVLM(name, model_cfg, skip_blocks=(1, 1))  # the skips feed SemiVL's decoder, unused here
    if weights is not None:
        vlm.load_pretrained(weights.state)
    return vlm.eval()


def vlm_logit_scale(vlm: nn.Module) -> float:
    """The temperature the VLM was trained with: S-Seg's learned (capped) scale, CLIP's ``exp(logit_scale)``
    (100 for the released CLIP models — the TUSS paper's ×100)."""
    model = getattr(vlm, "model", None)
    if model is not None and hasattr(model, "current_logit_scale"):
        return float(model.current_logit_scale().detach())
    return float(vlm.clip.logit_scale.detach().exp())


class _TextTower(nn.Module):
    """What ``build_text_classifier`` needs of an open-vocabulary model, taken from a VLM."""

    closed_vocabulary = False

    def __init__(self, vlm: nn.Module) -> None:
        super().__init__()
        self.vlm = vlm
        self.context_length = vlm.context_length

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vlm.encode_text(tokens)


def text_classifier(vlm: nn.Module, classes: Any, templates: str | list[str]) -> TextClassifier:
    """Unit text embeddings of every class concept in every template (CLIP's prompt ensemble)."""
    return build_text_classifier(_TextTower(vlm), classes, templates)
