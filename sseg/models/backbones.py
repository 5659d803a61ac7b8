"""Backbones returning four feature maps at strides 4, 8, 16, 32 (NCHW).

``tiny_convnet`` is our own small CNN for CPU runs; any other name is a timm model created with
``features_only=True`` (random init; optionally a local checkpoint, loaded strictly).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

import sseg  # noqa: F401  (torchvision import fix before timm)
from sseg.errors import CheckpointError, ConfigError, first_line
from sseg.models.config import ModelConfig

TINY_CONVNET = "tiny_convnet"
EXPECTED_STRIDES = (4, 8, 16, 32)


class Backbone(nn.Module):
    """Interface: ``forward(images) -> [f4, f8, f16, f32]`` plus ``out_channels`` / ``strides``."""

    out_channels: list[int]
    strides: list[int]


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyConvNet(Backbone):
    """Stem (two stride-2 convs → stride 4), then one downsampling stage per scale.

    Every stage is conv(stride 2) + conv(stride 1), BatchNorm + ReLU.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        if len(widths) != 4 or any(w < 1 for w in widths):
            raise ConfigError(f"tiny_convnet needs 4 positive stage widths, got {list(widths)}")
        w0 = widths[0]
        self.stem = nn.Sequential(_conv_bn_relu(3, max(w0 // 2, 8), 2),
                                  _conv_bn_relu(max(w0 // 2, 8), w0, 2),
                                  _conv_bn_relu(w0, w0, 1))
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(cin, cout, 2), _conv_bn_relu(cout, cout, 1))
            for cin, cout in zip(widths[:-1], widths[1:])
        )
        self.out_channels = list(widths)
        self.strides = list(EXPECTED_STRIDES)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        features = [x]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise CheckpointError(f"backbone checkpoint not found: {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / weights_only refusal: all are "not a usable checkpoint"
        raise CheckpointError(f"backbone checkpoint {path} could not be read: {first_line(exc)}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"backbone checkpoint {path} does not hold a state dict of tensors")
    return obj


def _mismatch_message(path: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"backbone checkpoint {path} does not match the backbone: {text[:300]}"


class TimmBackbone(Backbone):
    """A timm ``features_only`` model at strides 4/8/16/32, returned as NCHW."""

    def __init__(self, name: str, image_size: int, checkpoint: str | None = None) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name.split(".")[0]):
            raise ConfigError(f"unknown backbone '{name}' (use '{TINY_CONVNET}' or a timm model name)")
        kwargs: dict[str, Any] = dict(features_only=True, pretrained=False)
        if checkpoint is not None:
            state = _read_state_dict(checkpoint)
            classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or ()
            for head in (classifier,) if isinstance(classifier, str) else classifier:
                state.pop(f"{head}.weight", None)
                state.pop(f"{head}.bias", None)
            # num_classes=0 on both sides keeps timm's load strict (it relaxes it when the counts differ)
            kwargs.update(pretrained=True, num_classes=0,
                          pretrained_cfg_overlay=dict(state_dict=state, num_classes=0))
        self.model = self._create(timm, name, image_size, kwargs, checkpoint)
        info = self.model.feature_info
        reductions = list(info.reduction())
        keep = [max(i for i, r in enumerate(reductions) if r == s) for s in EXPECTED_STRIDES
                if s in reductions]
        if len(keep) != 4:
            raise ConfigError(f"backbone '{name}' does not give features at strides 4, 8, 16, 32 "
                              f"(it gives {reductions})")
        self.keep = keep
        self.out_channels = [info.channels()[i] for i in keep]
        self.strides = list(EXPECTED_STRIDES)
        fmt = getattr(self.model, "output_fmt", "NCHW")
        self.channels_last_output = str(getattr(fmt, "value", fmt)) == "NHWC"

    @staticmethod
    def _create(timm: Any, name: str, image_size: int, kwargs: dict[str, Any],
                checkpoint: str | None) -> nn.Module:
        # ViT/Swin-style models need the input size (and accept any size with dynamic_img_size);
        # CNNs reject those keywords.
        attempts = [dict(img_size=image_size, dynamic_img_size=True), dict(img_size=image_size), {}]
        last_error: Exception | None = None
        for extra in attempts:
            try:
                model = timm.create_model(name, **kwargs, **extra)
            except TypeError as exc:
                if "unexpected keyword" not in str(exc):
                    raise
                last_error = exc
                continue
            except RuntimeError as exc:
                if checkpoint is not None and "state_dict" in str(exc):
                    raise CheckpointError(_mismatch_message(checkpoint, exc)) from None
                raise
            if extra and "dynamic_img_size" not in extra:
                # It takes an input size but not any size: it would refuse the 448-px evaluation of a
                # model trained at 224 (older timm releases build Swin this way).
                raise ConfigError(f"backbone '{name}' accepts only {image_size}-px inputs in timm "
                                  f"{timm.__version__}; timm >= 1.0.31 builds it for any input size")
            return model
        raise ConfigError(f"backbone '{name}' could not be created: {last_error}")

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.model(images)
        features = [features[i] for i in self.keep]
        if self.channels_last_output:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return features


def _load_tiny_checkpoint(model: TinyConvNet, path: str) -> None:
    state = _read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(_mismatch_message(path, exc)) from None


def build_backbone(cfg: ModelConfig) -> Backbone:
    if cfg.backbone == TINY_CONVNET:
        model = TinyConvNet(cfg.tiny_convnet_widths)
        if cfg.backbone_checkpoint is not None:
            _load_tiny_checkpoint(model, cfg.backbone_checkpoint)
        return model
    return TimmBackbone(cfg.backbone, cfg.image_size, cfg.backbone_checkpoint)
