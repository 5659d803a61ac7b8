"""CLIP weight files as released: OpenAI's TorchScript archives and open_clip's checkpoints.

* OpenAI (``ViT-B-16.pt`` of openai/CLIP): a TorchScript archive; its state dict uses the key layout
  open_clip's ``CLIP`` shares, in fp16, plus ``input_resolution``, ``context_length`` and ``vocab_size``
  (not weights). OpenAI trained with QuickGELU, so open_clip builds these weights as the ``-quickgelu``
  model (``build_model_from_openai_state_dict(quick_gelu=True)``, pretrained tag ``openai``).
* open_clip: a state dict, or a training checkpoint ``{"state_dict": ...}`` whose keys may carry
  DistributedDataParallel's ``module.`` prefix (open_clip's ``load_state_dict``). open_clip names a
  model trained with QuickGELU ``...-quickgelu``; otherwise it uses GELU. The file does not say which,
  so the configured model name decides.

Everything else (a DINO or MAE ``.pth``, a truncated file) is a one-line :class:`CheckpointError`.
Files are read without executing pickled code: ``torch.load(weights_only=True)``, or ``torch.jit.load``
for TorchScript archives (TorchScript's own restricted format).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Literal

import torch

from sseg.errors import CheckpointError, ConfigError, first_line

# entries of OpenAI's state dict that are not parameters of open_clip's CLIP (open_clip drops the first
# three in load_state_dict); "attn_mask" is the text tower's causal mask, a non-persistent buffer there
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
REQUIRED_KEYS = ("visual.conv1.weight", "visual.proj", "text_projection", "token_embedding.weight")
QUICKGELU_SUFFIX = "-quickgelu"


@dataclass(frozen=True)
class ClipWeights:
    state: dict[str, torch.Tensor]  # open_clip CLIP keys, nothing else
    origin: Literal["openai", "open_clip"]
    path: str

    @property
    def quick_gelu(self) -> bool | None:
        """True for OpenAI's weights; None for open_clip's (the model name decides)."""
        return True if self.origin == "openai" else None


def is_torchscript_archive(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _load(path: str) -> tuple[object, bool]:
    """(the file's object, whether it is a TorchScript archive)."""
    try:
        if is_torchscript_archive(path):
            return torch.jit.load(path, map_location="cpu").state_dict(), True
        return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as exc:  # noqa: BLE001 - any failure to read is the file's problem
        raise CheckpointError(f"cannot read CLIP checkpoint {path}: {first_line(exc)}") from None


def _describe(obj: object) -> str:
    if isinstance(obj, dict):
        keys = [str(k) for k in obj][:4]
        hint = " (DINO / timm ViT layout)" if {"cls_token", "pos_embed"} & set(obj) or \
            {"teacher", "student"} & set(obj) else ""
        return f"keys {', '.join(keys)}{', …' if len(obj) > 4 else ''}{hint}"
    return f"a {type(obj).__name__}"


def read_clip_weights(path: str) -> ClipWeights:
    """The CLIP weights in ``path`` (never downloads) in open_clip's key layout, with their origin."""
    if not os.path.isfile(path):
        raise CheckpointError(f"CLIP checkpoint not found: {path}")
    obj, scripted = _load(path)
    for key in ("state_dict", "model"):  # open_clip's training checkpoint; a {"model": ...} wrapper
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} is not a CLIP checkpoint (expected a state dict of tensors; found "
                              f"{_describe(obj)})")
    if all(str(k).startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is not a CLIP ViT checkpoint (no {missing[0]}; found {_describe(obj)})")
    openai = scripted or any(k in obj for k in NON_WEIGHT_KEYS[:3])
    state = {k: v for k, v in obj.items() if k not in NON_WEIGHT_KEYS}
    return ClipWeights(state, "openai" if openai else "open_clip", path)


def clip_architecture(model_name: str, model_cfg: dict | None, weights: ClipWeights | None) -> tuple[str, dict | None]:
    """The open_clip model (name, config dict) to build for ``weights``: OpenAI's weights need QuickGELU
    (``ViT-B-16`` → ``ViT-B-16-quickgelu``); open_clip's and random init keep the configured model."""
    if weights is None or not weights.quick_gelu:
        return model_name, model_cfg
    if model_cfg is not None:
        return model_name, {**model_cfg, "quick_gelu": True}
    if model_name.endswith(QUICKGELU_SUFFIX):
        return model_name, None
    import sseg._compat  # noqa: F401 - torchvision fix before open_clip
    import open_clip

    quick = model_name + QUICKGELU_SUFFIX
    if quick not in open_clip.list_models():
        raise ConfigError(f"{weights.path} holds OpenAI CLIP weights (trained with QuickGELU) but open_clip "
                          f"has no '{quick}' model for vlm.clip_model={model_name}")
    return quick, None
