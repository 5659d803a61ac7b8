"""The TagCLIP model config (what a checkpoint needs to rebuild the model, seen classes included)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sseg.config import StrictModel
from sseg.semivl.config import vlm_context_length


class TagCLIPModelConfig(StrictModel):
    """A frozen vision-language model (``vlm``) + the TagCLIP decoder.

    ``vlm="sseg"``: our S-Seg model (``sseg`` holds its ModelConfig as a dict): patch embeddings = its
    semantic pixel map through the image projection, global = its image-level embedding. ``vlm="clip"``:
    an open_clip CLIP ViT (``clip_model`` name, or ``clip_model_cfg``), plain ViT tokens through
    ``ln_post`` and the projection, optionally with deep visual prompt tuning (``prompt_tokens``).

    Variants (the paper's Table 1 and one control): ``trusty_token`` appends one learnable query whose map
    is the trusty map; ``trusty_learner`` puts multi-head self-attention (+ shortcut + LayerNorm) over the
    queries before the attention-to-mask layers — with the token it is TagCLIP's trusty learner, without
    it the control "query self-attention, no token". ``inference_weighting``: seen-class scores are
    multiplied by (1 - trusty probability), unseen ones by it (only with the token).
    """

    vlm: Literal["sseg", "clip"] = "sseg"
    sseg: dict | None = None  # S-Seg ModelConfig fields (vlm="sseg")
    clip_model: str = "ViT-B-16"  # open_clip model name (vlm="clip")
    clip_model_cfg: dict | None = None  # an open_clip model config dict instead of the name (tests)
    prompt_tokens: int = Field(0, ge=0)  # deep visual prompt tuning: tokens per block (CLIP only; 0 = off)
    prompt_layers: int | None = Field(None, ge=1)  # blocks with prompts (None: every block)
    image_size: int = Field(64, ge=16)  # training crop; inference windows default to it

    seen_classes: tuple[str, ...]  # the class names trained on; any other name is unseen at inference
    layers: int = Field(3, ge=1)  # attention-to-mask layers (only the last one's map is used)
    heads: int = Field(8, ge=1)
    ffn_ratio: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    trusty_token: bool = True
    trusty_learner: bool = True
    inference_weighting: bool = True  # without trusty_token there is nothing to weight by
    seen_bias: float = Field(0.1, ge=0.0, lt=1.0)  # subtracted from seen-class probabilities at inference
    # the query projection's start: "xavier" (the public head) or "text_identity" (a deviation: the text half
    # starts as the identity, the image-product half and the bias at zero). Only seen names train it, so its
    # response to the part of an unseen name outside the seen names' span stays what it started as
    # (docs/results.md, TagCLIP); the identity carries that part through instead of a random projection.
    query_init: Literal["xavier", "text_identity"] = "xavier"
    # a deviation (0 = the paper): at inference each class probability is a geometric mix with the VLM's own
    # dense zero-shot probability, weighted towards the decoder on seen classes and towards the VLM on unseen
    # ones (sseg.tagclip.scores.ensemble_zero_shot; the zsseg baseline's rule, 0.8 there); training is unchanged
    zero_shot_ensemble: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> "TagCLIPModelConfig":
        if self.vlm == "sseg" and self.sseg is None:
            raise ValueError("vlm=sseg needs the S-Seg model config (model.sseg)")
        if self.vlm == "sseg" and self.prompt_tokens:
            raise ValueError("visual prompt tuning (prompt_tokens) needs vlm=clip")
        if not self.seen_classes:
            raise ValueError("seen_classes is empty: TagCLIP needs at least one seen class")
        lowered = [c.lower() for c in self.seen_classes]
        if len(set(lowered)) != len(lowered):
            raise ValueError("seen_classes lists a class twice")
        return self

    @property
    def context_length(self) -> int:
        return vlm_context_length(self.vlm, self.sseg, self.clip_model_cfg)

    @property
    def variant(self) -> str:
        """A short name of the decoder variant (ablation rows, MLflow tags)."""
        if self.trusty_token:
            return "tagclip" if self.trusty_learner else "token_no_learner"
        return "query_self_attention" if self.trusty_learner else "baseline"
