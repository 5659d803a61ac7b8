"""TagCLIP's inference rule on per-class mask logits and the trusty map.

With p = sigmoid(class logit) and w = sigmoid(trusty logit), the probability that a pixel belongs to no
seen class (the trusty target is 1 on unseen pixels)::

    seen class:    (p - bias) * (1 - w)
    unseen class:   p * w
    argmax over classes

``bias`` (0.1) is ZegCLIP's seen-class penalty, kept by TagCLIP; without weighting only the bias applies.
With ``zero_shot`` probabilities q of the frozen VLM (softmax over the queried concepts of cos(patch, text) ×
its logit scale) and a weight λ > 0, p is first mixed with them as in the zsseg baseline (Xu et al. 2022,
``clip_ensemble_weight``): seen p^λ · q^(1-λ), unseen p^(1-λ) · q^λ — the decoder decides the classes it was
trained on, the VLM those it was not (a deviation from TagCLIP, whose decoder alone scores every class).

The paper's map is the complement (its Eq. 9 target is 1 on *seen* pixels and Eq. 12 weights seen classes
by the map, unseen ones by one minus it); the public code's convention, used here, is the same rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_zero_shot(patches: torch.Tensor, text: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """A VLM's dense zero-shot: patches [B, D, h, w], text [K, D] -> softmax over the K concepts of
    cos(patch, text) × its logit scale, [B, K, h, w]."""
    cos = torch.einsum("bdhw,kd->bkhw", F.normalize(patches.float(), dim=1), F.normalize(text.float(), dim=-1))
    return (cos * logit_scale).softmax(dim=1)


def ensemble_zero_shot(p: torch.Tensor, zero_shot: torch.Tensor, seen: torch.Tensor, weight: float) -> torch.Tensor:
    """p, zero_shot [B, K, H, W] probabilities, seen bool [1, K, 1, 1] -> the zsseg mix (module docstring)."""
    decoder_share = torch.where(seen, weight, 1.0 - weight)
    return p.pow(decoder_share) * zero_shot.float().pow(1.0 - decoder_share)


def combine_scores(class_logits: torch.Tensor, trusty_logits: torch.Tensor | None, seen: torch.Tensor,
                   bias: float = 0.1, weighting: bool = True, zero_shot: torch.Tensor | None = None,
                   zero_shot_weight: float = 0.0) -> torch.Tensor:
    """class_logits [B, K, H, W], trusty_logits [B, 1, H, W] or None, seen bool [K], zero_shot [B, K, H, W]
    probabilities or None -> scores [B, K, H, W] (argmax = the prediction; seen scores can be as low as -bias)."""
    if seen.numel() != class_logits.shape[1]:
        raise ValueError(f"{class_logits.shape[1]} class maps but {seen.numel()} seen flags")
    seen = seen.to(class_logits.device).view(1, -1, 1, 1)
    p = class_logits.float().sigmoid()
    if zero_shot is not None and zero_shot_weight > 0:
        p = ensemble_zero_shot(p, zero_shot, seen, zero_shot_weight)
    scores = torch.where(seen, p - bias, p)
    if weighting and trusty_logits is not None:
        w = trusty_logits.float().sigmoid()
        scores = torch.where(seen, scores * (1 - w), scores * w)
    return scores


def max_over_concepts(concept_scores: torch.Tensor, concept_to_class: torch.Tensor,
                      num_classes: int) -> torch.Tensor:
    """[B, K, H, W] concept scores -> [B, C, H, W]: each class takes the max over its concepts."""
    b, k, h, w = concept_scores.shape
    index = concept_to_class.to(concept_scores.device).view(1, k, 1, 1).expand(b, k, h, w)
    out = concept_scores.new_full((b, num_classes, h, w), float("-inf"))
    return out.scatter_reduce(1, index, concept_scores, reduce="amax", include_self=True)
