"""The paper's pseudo-mask generator: K-Means (K=8) on DINO ViT-S/8 patch features.

The ViT is timm's ``vit_small_patch8_224`` built without pretrained weights (nothing is ever
downloaded) and loaded from a local DINO checkpoint, e.g. the official
``dino_deitsmall8_pretrain.pth`` (a plain backbone state_dict). Features are the last block's
patch tokens (after the final norm) or the keys of its attention, L2-normalised; each image's
(H/8)x(W/8) tokens are clustered with the batched K-Means and the label grid is upsampled.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sseg.errors import CheckpointError, ConfigError, first_line
from sseg.pseudo_masks.generator import (
    PseudoMaskConfig,
    PseudoMaskGenerator,
    bf16_is_fast,
    register_generator,
    upsample_labels,
)
from sseg.pseudo_masks.kmeans import batched_kmeans

log = logging.getLogger(__name__)

VIT_ARCH = "vit_small_patch8_224"
PATCH_SIZE = 8
# Checkpoint layouts seen in the wild: DINO's full training checkpoint keeps "teacher" and
# "student" (prefixed "module.backbone." / "backbone."), other trainers "model" / "state_dict".
_WRAPPER_KEYS = ("teacher", "student", "model", "state_dict")
_STRIPPED_PREFIXES = ("module.", "backbone.")
_IGNORED_PREFIXES = ("head.",)  # DINO projection head / classifier: not used for features


def _first(names: list[str], count: int = 3) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" (+{len(names) - count} more)" if len(names) > count else "")


# (resolved path, inode, size, mtime_ns) -> SHA-256: a checkpoint is hashed once per process unless it changes.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a DINO checkpoint file's bytes: the weights' identity, wherever the file lies."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"DINO checkpoint not found: {path}")
    info = path.stat()
    stamp = (str(path.resolve()), info.st_ino, info.st_size, info.st_mtime_ns)
    if stamp not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


def dino_weights_id(config: PseudoMaskConfig) -> str:
    """What the ViT's weights are: the checkpoint file's digest, or the seed of an explicit random init."""
    if config.dino_checkpoint is None:
        if not config.dino_allow_random_init:
            raise ConfigError(
                "pseudo_masks.dino_checkpoint is required for generator=dino "
                "(a local DINO ViT-S/8 file such as dino_deitsmall8_pretrain.pth)"
            )
        return f"random-init-seed{config.seed}"
    return checkpoint_digest(config.dino_checkpoint)


def load_dino_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a DINO ViT checkpoint into a plain backbone state_dict (keys as in timm's ViT)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"DINO checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"DINO checkpoint {path} could not be read: {first_line(exc)}") from None
    while isinstance(payload, Mapping):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(payload.get(k), Mapping)), None)
        if wrapper is None:
            break
        payload = payload[wrapper]
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise CheckpointError(f"DINO checkpoint {path} does not hold a state_dict of tensors")
    state: dict[str, Tensor] = {}
    for key, value in payload.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _STRIPPED_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        if not name.startswith(_IGNORED_PREFIXES):
            state[name] = value
    return state


def create_vit() -> nn.Module:
    """timm ViT-S/8 with no classifier, accepting any image size (padded to a multiple of 8)."""
    import timm  # imported here: timm is heavy and only this generator needs it

    return timm.create_model(
        VIT_ARCH, pretrained=False, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True
    )


def load_into_vit(model: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """Strictly load ``state`` into ``model``; any key or shape mismatch is a CheckpointError."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first(unexpected)}")
        raise CheckpointError(f"DINO checkpoint {source} does not fit {VIT_ARCH}: {'; '.join(parts)}")
    state = dict(state)
    pos_embed, wanted = state["pos_embed"], expected["pos_embed"]
    if pos_embed.shape != wanted.shape and pos_embed.shape[-1] == wanted.shape[-1]:
        from timm.layers import resample_abs_pos_embed

        # A checkpoint trained at another resolution: resample its position grid to 28x28.
        state["pos_embed"] = resample_abs_pos_embed(
            pos_embed, new_size=list(model.patch_embed.grid_size), num_prefix_tokens=model.num_prefix_tokens
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"DINO checkpoint {source} does not fit {VIT_ARCH}: '{key}' has shape "
                f"{tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)


class _LastBlockKeys:
    """Forward hook on the last block's qkv projection that keeps the attention keys."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        batch, tokens, triple = output.shape
        self.keys = output.reshape(batch, tokens, 3, triple // 3)[:, :, 1]


@register_generator("dino")
class DinoKMeansGenerator(PseudoMaskGenerator):
    """K-Means on L2-normalised DINO ViT-S/8 patch features, per image, whole batch at once."""

    def __init__(self, config: PseudoMaskConfig) -> None:
        super().__init__(config)
        self.weights_id = dino_weights_id(config)
        if config.dino_checkpoint is None:
            log.warning(
                "pseudo-masks: DINO ViT-S/8 is RANDOMLY INITIALISED (no checkpoint): the masks "
                "are meaningless; use only for tests"
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                self.model = create_vit()
        else:
            path = Path(config.dino_checkpoint).expanduser()
            state = load_dino_state_dict(path)
            self.model = create_vit()
            load_into_vit(self.model, state, path)
        self.model.eval().requires_grad_(False).to(self.device)
        self.keys_hook = _LastBlockKeys()
        if config.dino_feature == "keys":
            self.model.blocks[-1].attn.qkv.register_forward_hook(self.keys_hook)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def output_settings(cls, config: PseudoMaskConfig) -> dict:
        return cls._settings(config, dino_weights_id(config))

    def hashed_settings(self) -> dict:
        return self._settings(self.config, self.weights_id)  # the weights loaded, even if the file changed since

    @classmethod
    def _settings(cls, config: PseudoMaskConfig, weights_id: str) -> dict:
        return {
            **super().output_settings(config),
            "dino_weights": weights_id,
            "dino_feature": config.dino_feature,
            "bf16": config.bf16,
        }

    def _use_bf16(self) -> bool:
        return self.config.bf16 and bf16_is_fast(self.device)

    def features(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """uint8 [B, H, W, 3] -> L2-normalised patch features [B, h*w, 384] and the grid (h, w)."""
        pixels = images.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        pixels = (pixels - self.mean) / self.std
        grid = (-(-pixels.shape[2] // PATCH_SIZE), -(-pixels.shape[3] // PATCH_SIZE))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._use_bf16()):
            tokens = self.model.forward_features(pixels)
        if self.config.dino_feature == "keys":
            tokens, self.keys_hook.keys = self.keys_hook.keys, None
        patches = tokens[:, self.model.num_prefix_tokens:].float()
        return F.normalize(patches, dim=-1), grid

    def generate(self, images: Tensor) -> Tensor:
        cfg = self.config
        features, (grid_h, grid_w) = self.features(images)
        result = batched_kmeans(
            features,
            k=min(cfg.num_segments, grid_h * grid_w),
            max_iter=cfg.max_iter,
            tol=cfg.tol,
            generator=self.kmeans_generator(),
            # bf16 distances pay off on GPU; on CPU the conversion eats the gain (bench_kmeans).
            distance_dtype=torch.bfloat16 if (cfg.bf16 and self.device.type == "cuda") else None,
            n_local_trials=cfg.kmeans_local_trials,
        )
        labels = result.labels.view(-1, grid_h, grid_w)
        mode = "bilinear" if cfg.upsample == "auto" else cfg.upsample
        height, width = images.shape[1:3]
        # The ViT saw the image padded to whole patches: upsample over the padded extent, crop.
        padded = upsample_labels(labels, (grid_h * PATCH_SIZE, grid_w * PATCH_SIZE), cfg.num_segments, mode)
        return padded[:, :height, :width].contiguous()
