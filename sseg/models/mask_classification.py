"""Mask classification (MaskFormer semantic inference) of a mask model's outputs against a text classifier:
each mask's class probabilities from its feature, then per-pixel scores Σ_q p_q(c)·σ(m_q)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from sseg.errors import DataError

if TYPE_CHECKING:
    from sseg.inference import TextClassifier


def classify_masks(mask_features: Tensor, classifier: TextClassifier,
                   temperature: Tensor | float) -> Tensor:
    """Class probabilities ``[B, N, C]`` of each mask feature ``[B, N, D]``.

    Cosine similarity to every concept × the learned temperature (the scale itself, e.g.
    ``SSegModel.current_logit_scale()``, not its log), softmax over *concepts*, then
    each class takes the maximum over its concepts (SemiVL eq. 5). The class scores are not
    renormalised: a class with many concepts is not favoured by it, and per-pixel scores are
    normalised later where a probability is needed (the background threshold).
    """
    if mask_features.dim() != 3:
        raise DataError(f"mask_features must be [B, N, D] (got shape {tuple(mask_features.shape)})")
    embeddings = classifier.embeddings.to(mask_features.device, torch.float32)
    if mask_features.shape[-1] != embeddings.shape[-1]:
        raise DataError(f"mask feature dim {mask_features.shape[-1]} != text embedding dim "
                        f"{embeddings.shape[-1]}")
    features = F.normalize(mask_features.float(), dim=-1)
    scale = torch.as_tensor(temperature, dtype=torch.float32).detach().to(features.device)
    concept_probs = (scale * features @ embeddings.T).softmax(dim=-1)  # [B, N, K]
    b, n, _ = concept_probs.shape
    index = classifier.concept_to_class.to(features.device).expand(b, n, -1)
    out = concept_probs.new_zeros(b, n, classifier.num_classes)
    return out.scatter_reduce(-1, index, concept_probs, reduce="amax", include_self=True)


def semantic_inference(pred_masks: Tensor, class_probs: Tensor) -> Tensor:
    """MaskFormer semantic scores ``[B, C, h, w] = Σ_q class_probs[b,q,c] · σ(pred_masks[b,q])``."""
    if pred_masks.shape[:2] != class_probs.shape[:2]:
        raise DataError(f"pred_masks {tuple(pred_masks.shape)} and class_probs "
                        f"{tuple(class_probs.shape)} disagree on [B, N]")
    return torch.einsum("bqc,bqhw->bchw", class_probs.float(), pred_masks.float().sigmoid())


def mask_semantic_scores(pred_masks: Tensor, mask_features: Tensor, classifier: TextClassifier,
                         temperature: Tensor | float, size: tuple[int, int]) -> Tensor:
    """Per-pixel class scores ``[B, C, *size]`` from mask logits ``[B, N, h, w]`` and mask features ``[B, N, D]``:
    :func:`classify_masks`, the masks upsampled bilinearly to ``size``, :func:`semantic_inference`."""
    class_probs = classify_masks(mask_features, classifier, temperature)
    scores = []
    for i in range(pred_masks.shape[0]):  # one image at a time: N full-size masks are large
        masks = F.interpolate(pred_masks[i:i + 1].float(), size=size, mode="bilinear", align_corners=False)
        scores.append(semantic_inference(masks, class_probs[i:i + 1]))
    return scores[0] if len(scores) == 1 else torch.cat(scores)
