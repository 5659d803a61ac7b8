"""The vision-language model behind SemiVL, one interface for every VLM.

A :class:`VisionLanguageModel` gives

* ``dense(images) -> (features [B, D, h, w], skips [f_a, f_b])``: dense image features in the text
  embedding space (not normalised) and two intermediate feature maps for the decoder's skips;
* ``encode_text(tokens [N, L]) -> [N, D]``: the text tower;
* ``vision_parameters()`` / ``text_parameters()`` and ``spatial_parameter_names(patterns)``: which
  parameters belong to which tower, and which vision parameters mix information between positions
  (spatial fine-tuning, SemiVL Sec. 3.3).

Two adapters:

* :class:`SSegVLM` (embedded default): our S-Seg model. Dense features = its semantic pixel map
  (``semantic_proj`` of the FPN pixel features) through its image projection MLP, applied per pixel
  instead of after mask pooling — MaskCLIP's idea (project every position, skip the pooling) applied to
  S-Seg. Skips: the backbone's stride-8 and stride-4 maps.
* :class:`ClipVLM` (paper config): an open_clip CLIP ViT. Dense features as MaskCLIP: the last block's
  attention is replaced by its value embedding (value projection, output projection, residual), then its
  MLP, ``ln_post`` and the visual projection — no attention pooling. Skips: the tokens after
  ``skip_blocks`` (SemiVL: blocks 1 and 4).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sseg.clip_weights import read_clip_weights  # noqa: F401 - re-exported
from sseg.errors import CheckpointError, ConfigError, first_line


def select_names(names: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The names matching any of the regular expressions ``patterns`` (``re.search``)."""
    compiled = [re.compile(p) for p in patterns]
    return [n for n in names if any(c.search(n) for c in compiled)]


class VisionLanguageModel(nn.Module):
    embed_dim: int
    context_length: int
    skip_in_channels: tuple[int, int]
    dense_stride: int

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(patch embeddings [B, D, h, w], global image embedding [B, D])`` in the text space (not
        normalised): the inputs of a ZegCLIP-style decoder (TagCLIP)."""
        raise NotImplementedError

    def logit_scale(self) -> float:
        """The temperature its contrastive training learned: cos(image, text) × it are the zero-shot logits."""
        raise NotImplementedError

    def vision_parameters(self) -> list[tuple[str, nn.Parameter]]:
        raise NotImplementedError

    def text_parameters(self) -> list[tuple[str, nn.Parameter]]:
        raise NotImplementedError

    def spatial_parameter_names(self, patterns: Sequence[str]) -> list[str]:
        return select_names([n for n, _ in self.vision_parameters()], patterns)


class SSegVLM(VisionLanguageModel):
    """Our S-Seg pretraining model as a VLM (``sseg.models.sseg_model.SSegModel``)."""

    def __init__(self, model_config: dict) -> None:
        super().__init__()
        from sseg.models.config import ModelConfig
        from sseg.models.sseg_model import SSegModel

        cfg = ModelConfig.model_validate(model_config)
        if cfg.mask_feature_source != "pooled":
            raise ConfigError("the S-Seg VLM needs a model with mask_feature_source=pooled (its semantic "
                              "pixel map gives the dense features)")
        self.model = SSegModel(cfg)
        self.embed_dim = cfg.embed_dim
        self.context_length = cfg.context_length
        widths = self.model.maskformer.backbone.out_channels
        self.skip_in_channels = (widths[1], widths[0])
        self.dense_stride = 4

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        mf = self.model.maskformer
        features = mf.backbone(images)
        pixels = mf.pixel_decoder(features).pixel_features  # [B, mask_dim, H/4, W/4]
        semantic = self.model.semantic_proj(pixels)  # [B, hidden, H/4, W/4]
        dense = self.model.image_projection(semantic.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return dense, [features[1], features[0]]

    def embed_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch embeddings = :meth:`dense`; global = the image-level embedding S-Seg's contrastive loss
        trained (the mean of its last decoder layer's projected mask-pooled features)."""
        from sseg.models.sseg_model import mask_pooled_features

        out = self.model.maskformer(images)
        semantic = self.model.semantic_proj(out.pixel_features)
        dense = self.model.image_projection(semantic.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = mask_pooled_features(semantic, out.pred_masks[-1], "assignment")
        return dense, self.model.image_projection(pooled).mean(dim=1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def logit_scale(self) -> float:
        return float(self.model.current_logit_scale())

    def _vision_modules(self) -> dict[str, nn.Module]:
        return {"model.maskformer.backbone": self.model.maskformer.backbone,
                "model.maskformer.pixel_decoder": self.model.maskformer.pixel_decoder,
                "model.semantic_proj": self.model.semantic_proj,
                "model.image_projection": self.model.image_projection}

    def vision_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"{prefix}.{n}", p) for prefix, m in self._vision_modules().items()
                for n, p in m.named_parameters()]

    def text_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"model.text_encoder.{n}", p) for n, p in self.model.text_encoder.named_parameters()]

    def load_pretrained(self, state: dict) -> None:
        """Load an S-Seg checkpoint's model state (query decoder and mask head included; unused)."""
        try:
            self.model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"the S-Seg checkpoint does not fit the VLM config: {first_line(exc)}") from None


class ClipVLM(VisionLanguageModel):
    """An open_clip CLIP ViT with MaskCLIP dense features."""

    def __init__(self, model_name: str = "ViT-B-16", model_cfg: dict | None = None,
                 skip_blocks: tuple[int, int] = (1, 4)) -> None:
        super().__init__()
        import sseg._compat  # noqa: F401 - torchvision fix before open_clip
        import open_clip

        if model_cfg is not None:
            from open_clip.model import CLIP

            self.clip = CLIP(**model_cfg)
        else:
            if model_name not in open_clip.list_models():
                raise ConfigError(f"unknown open_clip model '{model_name}'")
            self.clip = open_clip.create_model(model_name, pretrained=None)
        visual = self.clip.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "proj"):
            raise ConfigError("the CLIP VLM needs a ViT image tower (open_clip VisionTransformer)")
        blocks = visual.transformer.resblocks
        if not all(1 <= b <= len(blocks) for b in skip_blocks):
            raise ConfigError(f"clip_skip_blocks {skip_blocks} outside 1..{len(blocks)}")
        self.skip_blocks = tuple(skip_blocks)
        width = visual.conv1.out_channels
        self.embed_dim = int(visual.proj.shape[1])
        self.context_length = int(self.clip.context_length)
        self.skip_in_channels = (width, width)
        self.dense_stride = int(visual.conv1.stride[0])

    def _tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        visual = self.clip.visual
        x = visual.conv1(images)  # [B, width, h, w]
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        pos = visual.positional_embedding.to(x.dtype)
        grid = int(round((pos.shape[0] - 1) ** 0.5))
        if (h, w) != (grid, grid):  # interpolate the position grid to this input (SemiVL trains at 512)
            patch = pos[1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
            patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(h * w, -1)])
        x = visual.ln_pre(x + pos)
        return x, h, w

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        visual = self.clip.visual
        x, h, w = self._tokens(images)
        blocks = visual.transformer.resblocks
        batch_first = getattr(visual.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        skips = {}
        for i, block in enumerate(blocks[:-1], start=1):
            x = block(x)
            if i in self.skip_blocks:
                skips[i] = x
        last = blocks[-1]
        # MaskCLIP: value embedding of the last block, no attention mixing
        y = last.ln_1(x)
        width = y.shape[-1]
        attn = last.attn
        v = F.linear(y, attn.in_proj_weight[2 * width:], attn.in_proj_bias[2 * width:])
        v = attn.out_proj(v)
        v = x + (last.ls_1(v) if hasattr(last, "ls_1") else v)
        mlp = last.mlp(last.ln_2(v))
        v = v + (last.ls_2(mlp) if hasattr(last, "ls_2") else mlp)
        if not batch_first:
            v = v.transpose(0, 1)
            skips = {k: s.transpose(0, 1) for k, s in skips.items()}
        v = visual.ln_post(v[:, 1:]) @ visual.proj  # [B, hw, D]
        dense = v.transpose(1, 2).reshape(v.shape[0], -1, h, w)

        def grid(tokens: torch.Tensor) -> torch.Tensor:
            return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

        return dense, [grid(skips[self.skip_blocks[1]]), grid(skips[self.skip_blocks[0]])]

    def embed_image(self, images: torch.Tensor,
                    deep_prompts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain ViT path (every block attends; no MaskCLIP): patch tokens and the CLS token through
        ``ln_post`` and the projection. ``deep_prompts`` [L, n, width] (visual prompt tuning, deep): before
        block i < L the n tokens after CLS are deep_prompts[i] (inserted at block 0, replaced after);
        blocks from L on run without them."""
        visual = self.clip.visual
        x, h, w = self._tokens(images)
        batch_first = getattr(visual.transformer, "batch_first", True)
        n = 0
        for i, block in enumerate(visual.transformer.resblocks):
            if deep_prompts is not None and i <= deep_prompts.shape[0]:
                rest = x[:, 1 + n:]
                if i < deep_prompts.shape[0]:
                    prompt = deep_prompts[i].to(x.dtype).expand(x.shape[0], -1, -1)
                    x, n = torch.cat([x[:, :1], prompt, rest], dim=1), prompt.shape[1]
                else:
                    x, n = torch.cat([x[:, :1], rest], dim=1), 0
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        x = visual.ln_post(torch.cat([x[:, :1], x[:, 1 + n:]], dim=1)) @ visual.proj
        patches = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return patches, x[:, 0]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)

    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.exp())

    def vision_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"clip.visual.{n}", p) for n, p in self.clip.visual.named_parameters()]

    def text_parameters(self) -> list[tuple[str, nn.Parameter]]:
        visual = {id(p) for p in self.clip.visual.parameters()}
        return [(f"clip.{n}", p) for n, p in self.clip.named_parameters() if id(p) not in visual]

    def load_pretrained(self, state: dict) -> None:
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            self.clip.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"the CLIP checkpoint does not fit the CLIP model config: "
                                  f"{first_line(exc)}") from None


def build_vlm(cfg) -> VisionLanguageModel:
    """``cfg``: :class:`sseg.semivl.config.SemiVLModelConfig`."""
    if cfg.vlm == "sseg":
        return SSegVLM(cfg.sseg)
    return ClipVLM(cfg.clip_model, cfg.clip_model_cfg, cfg.clip_skip_blocks)


def read_clip_state(path: str) -> dict:
    """A CLIP state dict from a local file (OpenAI's TorchScript release or an open_clip checkpoint) in
    open_clip's key layout; never downloads. ``sseg.clip_weights.read_clip_weights`` also gives its origin."""
    return read_clip_weights(path).state
