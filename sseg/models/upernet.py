"""S-Seg+'s segmenter: UperNet on a ViT backbone with a BEiT-style multi-level neck (closed vocabulary).

The S-Seg paper's self-training model (S-Seg+, Lai, A.2): UperNet [Xiao et al.] on an MAE-pretrained ViT, features
from blocks 4, 6, 8 and 12 merged "following the implementation of BEiT", no relative position
embeddings. As in BEiT's ``semantic_segmentation/backbone/beit.py`` (microsoft/unilm) the four block
outputs (patch tokens reshaped to a grid at stride ``p``, the patch size) become a pyramid by

    fpn1: ConvTranspose 2×2/2 → BN → GELU → ConvTranspose 2×2/2   (stride p/4)
    fpn2: ConvTranspose 2×2/2                                      (stride p/2)
    fpn3: identity                                                 (stride p)
    fpn4: MaxPool 2×2/2                                            (stride 2p)

so ViT-B/16 gives strides 4, 8, 16, 32 and the tiny CPU config (patch 8) strides 2, 4, 8, 16. The head is
mmseg's ``UPerHead``: a pyramid pooling module (scales 1, 2, 3, 6) on the coarsest level, lateral 1×1
convs, a top-down path, 3×3 FPN convs, every level resized to the finest and fused by a 3×3 conv, then
dropout and a 1×1 classifier. The logits come out at the finest level and are upsampled bilinearly to the
label size for the loss (cross-entropy with an ignore index: low-confidence pseudo-label pixels).

BEiT's (and MAE's) UperNet configs (mmseg's ``upernet_beit``) also train an auxiliary FCN head on the
neck's third level (block 8, stride p): one 3×3 conv to 256 channels + BN + ReLU, dropout 0.1, a 1×1
classifier, its cross-entropy weighted 0.4 (``aux_head``; training only, inference ignores it), with
768 UPerHead channels and batch norm synchronised over the GPUs (``sync_bn``,
:func:`synchronise_batch_norm`). The paper configs (``configs/self_train_*.yaml``) turn them on; the
CPU demo keeps them off.

The model is a closed-vocabulary segmenter over the class names it was trained on (``config.class_names``);
:mod:`sseg.inference` maps requested class names onto them (``closed_vocabulary``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

import sseg  # noqa: F401  (torchvision import fix before timm: sseg/_compat.py)
from sseg.config import StrictModel
from sseg.errors import CheckpointError, first_line
from sseg.models.registry import register_model

IGNORE_INDEX = 255
PAPER_FEATURE_BLOCKS = (4, 6, 8, 12)  # 1-based blocks of the 12-block ViT-B


class UperNetConfig(StrictModel):
    """UperNet-ViT sizes. Defaults: the paper's ViT-B/16 and head width, without the auxiliary head and
    SyncBN (the named config ``sseg_plus_vit_b16`` and the paper configs turn them on); the CPU demo's size
    is the named config ``sseg_plus_tiny``."""

    class_names: list[str] = Field(default_factory=list)  # the closed vocabulary, label id = position
    image_size: int = Field(512, ge=16)  # the training crop; inference accepts any size (pos-embed resampled)
    patch_size: int = Field(16, ge=2)
    embed_dim: int = Field(768, ge=8)
    depth: int = Field(12, ge=1)
    num_heads: int = Field(12, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    drop_path_rate: float = Field(0.1, ge=0.0, lt=1.0)
    # 0-based indices of the blocks feeding the neck; None: blocks 4, 6, 8, 12 scaled to ``depth``
    feature_blocks: list[int] | None = None
    channels: int = Field(768, ge=4)  # UPerHead width (BEiT/MAE's 768; mmseg's own default 512)
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    backbone_checkpoint: str | None = None  # MAE / ViT weights (a local path); None: random init
    # BEiT/MAE's auxiliary FCN head (off by default: checkpoints without it keep loading)
    aux_head: bool = False
    aux_channels: int = Field(256, ge=4)
    aux_level: int = Field(2, ge=0, le=3)  # neck level it reads: 2 = block 8 at stride p (mmseg in_index=2)
    aux_weight: float = Field(0.4, ge=0.0)  # its cross-entropy's weight in the loss
    sync_bn: bool = False  # batch norm synchronised over the DDP workers (CUDA only; mmseg's SyncBN)

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(n.lower() for n in names)) != len(names):
            raise ValueError("class_names lists a name twice")
        return names

    @model_validator(mode="after")
    def _check(self) -> "UperNetConfig":
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        blocks = self.blocks()
        if len(blocks) != 4 or any(not 0 <= b < self.depth for b in blocks) or sorted(set(blocks)) != blocks:
            raise ValueError(f"feature_blocks must be 4 increasing block indices in [0, {self.depth}), got {blocks}")
        return self

    def blocks(self) -> list[int]:
        return list(self.feature_blocks) if self.feature_blocks is not None else vit_feature_blocks(self.depth)


def vit_feature_blocks(depth: int) -> list[int]:
    """0-based blocks whose outputs feed the neck: the paper's blocks 4, 6, 8, 12 of 12 scaled to ``depth``
    (12 → [3, 5, 7, 11]; 6 → [1, 2, 3, 5]; 4 → [0, 1, 2, 3]); needs depth >= 4."""
    if depth < 4:
        raise ValueError(f"a ViT of depth {depth} has fewer than the 4 blocks the neck needs")
    blocks = [max(1, round(depth * b / 12)) - 1 for b in PAPER_FEATURE_BLOCKS]
    for i in range(1, 4):  # keep them distinct and increasing on shallow ViTs
        blocks[i] = max(blocks[i], blocks[i - 1] + 1)
    return blocks


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """mmseg's ConvModule(conv without bias, BN, ReLU)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class MultiLevelNeck(nn.Module):
    """BEiT's four ops on the block outputs at stride p: deconv ×4, deconv ×2, identity, max-pool."""

    def __init__(self, dim: int):
        super().__init__()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2), nn.BatchNorm2d(dim), nn.GELU(),
                                  nn.ConvTranspose2d(dim, dim, 2, stride=2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2))
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [op(x) for op, x in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), features)]


class PyramidPooling(nn.Module):
    def __init__(self, in_ch: int, channels: int, scales: tuple[int, ...]):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv_bn_relu(in_ch, channels, 1))
                                    for s in scales)
        self.bottleneck = _conv_bn_relu(in_ch + len(scales) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UperHead(nn.Module):
    """mmseg's UPerHead: PPM on the coarsest level + FPN, fused at the finest level, 1×1 classifier."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.lateral_convs = nn.ModuleList(_conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = _conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, features)]
        laterals.append(self.ppm(features[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="bilinear", align_corners=False)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    """mmseg's FCNHead with ``num_convs=1, concat_input=False``: 3×3 conv + BN + ReLU, dropout, 1×1 classifier."""

    def __init__(self, in_ch: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.convs = _conv_bn_relu(in_ch, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


class ViTBackbone(nn.Module):
    """timm ViT (absolute position embeddings, class token, any input size) + the multi-level neck."""

    def __init__(self, cfg: UperNetConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.blocks_out = cfg.blocks()
        self.vit = VisionTransformer(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
                                     depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                                     num_classes=0, global_pool="", drop_path_rate=cfg.drop_path_rate,
                                     dynamic_img_size=True)
        # the head and the final norm are unused (BEiT's segmentation backbone applies no final norm)
        self.vit.prune_intermediate_layers(self.blocks_out, prune_norm=True, prune_head=True)
        self.neck = MultiLevelNeck(cfg.embed_dim)
        self.patch_size = cfg.patch_size

    def forward(self, images: Tensor) -> list[Tensor]:
        feats = self.vit.forward_intermediates(images, indices=self.blocks_out, norm=False, output_fmt="NCHW",
                                               intermediates_only=True)
        return self.neck(list(feats))


def load_vit_weights(vit: nn.Module, path: str) -> dict:
    """MAE / timm ViT weights from a local file (``torch.load(weights_only=True)``; a ``{"model": …}`` or
    ``{"state_dict": …}`` wrapper is unwrapped). The position embedding is resampled to this grid; the
    pretraining head, decoder and final norm are ignored. Returns the counts of loaded / skipped tensors."""
    from timm.layers import resample_abs_pos_embed

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"backbone checkpoint not found: {path}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise CheckpointError(f"cannot read backbone checkpoint {path}: {first_line(exc)}") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict")
    own = vit.state_dict()
    state = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in state.items()}
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        prefix = getattr(vit, "num_prefix_tokens", 1)
        grid = vit.patch_embed.grid_size
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(grid), num_prefix_tokens=prefix)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("blocks.") for k in usable):
        raise CheckpointError(f"{path} has no ViT block weights of this shape (embed_dim/depth/patch mismatch?)")
    vit.load_state_dict(usable, strict=False)
    return {"loaded": len(usable), "skipped": len(state) - len(usable), "missing": len(set(own) - set(usable))}


@register_model("upernet_vit", UperNetConfig)  # S-Seg+ (closed vocabulary over its config's class_names)
class UperNetViT(nn.Module):
    """images (normalised, [B, 3, H, W]) → class logits [B, K, H·s/p, W·s/p] at the neck's finest stride."""

    closed_vocabulary = True

    def __init__(self, cfg: UperNetConfig):
        super().__init__()
        if not cfg.class_names:
            raise ValueError("UperNetConfig.class_names is empty: the model needs its class list")
        self.cfg = self.config = cfg
        self.backbone = ViTBackbone(cfg)
        self.decode_head = UperHead([cfg.embed_dim] * 4, cfg.channels, len(cfg.class_names), cfg.pool_scales,
                                    cfg.dropout)
        self.aux_head = (FCNHead(cfg.embed_dim, cfg.aux_channels, len(cfg.class_names), cfg.dropout)
                         if cfg.aux_head else None)
        if cfg.backbone_checkpoint:
            load_vit_weights(self.backbone.vit, cfg.backbone_checkpoint)

    @property
    def class_names(self) -> list[str]:
        return list(self.cfg.class_names)

    @property
    def num_layers(self) -> int:
        """Layer ids of the layer-wise lr decay: 0 = embeddings, 1..depth = blocks, depth + 1 = neck + head."""
        return self.cfg.depth + 2

    def layer_id(self, name: str) -> int:
        """BEiT's ``get_num_layer_for_vit``: cls token, position embedding and patch embedding → 0; block i
        (0-based) → i + 1; everything else (the neck, the head) → depth + 1."""
        if name.startswith("backbone.vit."):
            rest = name[len("backbone.vit."):]
            if rest in ("cls_token", "pos_embed", "reg_token") or rest.startswith("patch_embed"):
                return 0
            if rest.startswith("blocks."):
                return int(rest.split(".")[1]) + 1
        return self.num_layers - 1

    @staticmethod
    def no_weight_decay(name: str, param: Tensor) -> bool:
        """BEiT/MAE: no decay on biases, norms (1-D), the position embedding and the class token."""
        return param.ndim < 2 or name.endswith(".bias") or name.split(".")[-1] in ("pos_embed", "cls_token")

    def forward(self, images: Tensor, with_aux: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        """Logits at the neck's finest stride; ``with_aux`` (training): ``(logits, aux logits or None)``,
        the auxiliary head's at the stride of its level. Through ``forward`` so a DDP wrapper sees both."""
        features = self.backbone(images)
        logits = self.decode_head(features)
        if not with_aux:
            return logits
        return logits, (self.aux_head(features[self.cfg.aux_level]) if self.aux_head is not None else None)

    def class_logits(self, images: Tensor) -> Tensor:
        """Logits ``[B, K, H, W]`` at the input size (bilinear, as mmseg resizes ``seg_logit``)."""
        return F.interpolate(self(images), size=images.shape[-2:], mode="bilinear", align_corners=False)

    def segment_scores(self, images: Tensor, classifier) -> Tensor:
        """Per-pixel scores ``[B, C, H, W]`` of the requested classes for :class:`sseg.inference.Segmenter`:
        the softmax probabilities over the trained classes, each requested class taking the largest of the
        trained classes it maps to (``classifier`` from ``sseg.inference.closed_vocabulary_classifier``:
        one-hot rows over the trained classes)."""
        probs = self.class_logits(images).float().softmax(dim=1)
        rows = classifier.embeddings.to(probs.device, probs.dtype)
        if rows.shape[1] != probs.shape[1]:
            raise ValueError(f"classifier covers {rows.shape[1]} trained classes, the model has {probs.shape[1]}")
        concept_scores = torch.einsum("kt,bthw->bkhw", rows, probs)
        index = classifier.concept_to_class.to(probs.device).view(1, -1, 1, 1).expand_as(concept_scores)
        out = concept_scores.new_zeros(probs.shape[0], classifier.num_classes, *probs.shape[-2:])
        return out.scatter_reduce(1, index, concept_scores, reduce="amax", include_self=True)

    def encode_image(self, images: Tensor) -> dict:
        """The mask-model interface's ``pred_masks`` (one per trained class, the logits) so tools that take
        each pixel's most confident mask (``pipelines.stages.batch_inference.predicted_mask_ids``) work."""
        return {"pred_masks": self(images)}


def decode_and_aux_loss(logits: Tensor, aux_logits: Tensor | None, labels: Tensor, aux_weight: float,
                        ignore_index: int = IGNORE_INDEX,
                        class_weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """mmseg's EncoderDecoder loss: the decode head's cross-entropy plus ``aux_weight`` × the auxiliary
    head's (each :func:`segmentation_loss` at the label size); returns the sum and the parts."""
    loss = segmentation_loss(logits.float(), labels, ignore_index, class_weights)
    if aux_logits is None:
        return loss, {}
    aux = segmentation_loss(aux_logits.float(), labels, ignore_index, class_weights)
    return loss + aux_weight * aux, {"decode_loss": float(loss.detach()), "aux_loss": float(aux.detach())}


def synchronise_batch_norm(model: nn.Module, world_size: int, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm a SyncBatchNorm when its config asks (``sync_bn``) and it trains on
    more than one CUDA worker (mmseg's SyncBN: with 2 images per GPU each worker's own batch statistics
    would come from 2 images). The parameters stay the same objects, so an optimizer built before keeps
    them. PyTorch's SyncBatchNorm runs on CUDA only: CPU workers keep per-worker batch norm."""
    cfg = getattr(model, "cfg", None)
    if not getattr(cfg, "sync_bn", False) or world_size <= 1 or torch.device(device).type != "cuda":
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def segmentation_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
                      class_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of logits ``[B, K, h, w]`` upsampled to the labels ``[B, H, W]`` (mmseg's decode-head
    loss); pixels labelled ``ignore_index`` add nothing. With ``class_weights`` [K], the weighted mean
    Σ w_y·CE / Σ w_y (PyTorch's). A batch with no labelled pixel gives a zero loss that still
    backpropagates (zero gradients), so every DDP worker runs the same backward."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = labels != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, weight=class_weights)
