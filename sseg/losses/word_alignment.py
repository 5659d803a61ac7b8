"""Word-to-mask alignment: each caption word should match one of its image's masks (not in the paper).

S-Seg's contrastive loss sees only the mean of an image's N mask features, so nothing asks any single
mask to carry the meaning of a word: at small scale every mask drifts towards the whole caption and
small objects are never named (measured: README, "Does it learn?"). This auxiliary loss trains what
inference does, classifying masks against single-concept prompts:

    score(image b, word w) = max over masks n of cos(mask_feature[b, n], text(prompt(w)))

a multiple-instance score (only the best mask of an image answers for a word). Over the batch's
vocabulary (the distinct words of its training texts), labels[b, w] = word w is in image b's text.
Loss = ½ (image→words + words→image) multi-positive InfoNCE at the model's temperature: each row's
loss is minus the mean log-softmax of its positives. Rows without a positive are left out.

It is per worker (the vocabulary is the local batch's); DDP averages its gradients.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sseg.data.captions import tokenize_words
from sseg.errors import DataError


def text_words(text: str) -> list[str]:
    """Distinct lower-case words of a training text, in order of first appearance."""
    return list(dict.fromkeys(tokenize_words(str(text))))


@dataclass
class WordTargets:
    prompts: list[str]  # one prompt per vocabulary word
    vocabulary: list[str]
    labels: torch.Tensor  # bool [B, W]


def build_word_targets(texts: Sequence[str], templates: Sequence[str],
                       rng: random.Random | None = None) -> WordTargets:
    """The batch vocabulary, one prompt per word (a template drawn per word) and the label matrix."""
    if not templates:
        raise DataError("word alignment needs at least one prompt template")
    per_text = [text_words(t) for t in texts]
    vocabulary = sorted({w for words in per_text for w in words})
    index = {w: i for i, w in enumerate(vocabulary)}
    labels = torch.zeros(len(per_text), len(vocabulary), dtype=torch.bool)
    for row, words in enumerate(per_text):
        for word in words:
            labels[row, index[word]] = True
    draw, templates = rng or random, list(templates)
    prompts = [draw.choice(templates).format(w) for w in vocabulary]
    return WordTargets(prompts=prompts, vocabulary=vocabulary, labels=labels)


def _multi_positive_nce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows with ≥ 1 positive of −mean_{positives} log_softmax(row)."""
    keep = positives.any(dim=1)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    log_prob = logits[keep].log_softmax(dim=1)
    pos = positives[keep].to(log_prob.dtype)
    return (-(log_prob * pos).sum(dim=1) / pos.sum(dim=1)).mean()


@dataclass
class WordAlignmentOutput:
    loss: torch.Tensor
    accuracy: torch.Tensor  # share of images whose best-scoring word is one of its own (detached)


class WordAlignmentLoss(nn.Module):
    def forward(self, mask_features: torch.Tensor, word_features: torch.Tensor, labels: torch.Tensor,
                logit_scale: torch.Tensor | float) -> WordAlignmentOutput:
        """mask_features [B,N,D], word_features [W,D] (any norm), labels bool [B,W]."""
        if mask_features.ndim != 3 or word_features.ndim != 2 or mask_features.shape[-1] != word_features.shape[-1]:
            raise DataError(f"word alignment needs mask features [B,N,D] and word features [W,D], got "
                            f"{tuple(mask_features.shape)} and {tuple(word_features.shape)}")
        if tuple(labels.shape) != (mask_features.shape[0], word_features.shape[0]):
            raise DataError(f"word labels must be [B,W] = {(mask_features.shape[0], word_features.shape[0])}, "
                            f"got {tuple(labels.shape)}")
        masks = F.normalize(mask_features, dim=-1)
        words = F.normalize(word_features, dim=-1)
        scores = torch.einsum("bnd,wd->bnw", masks, words).amax(dim=1)  # [B,W]
        labels = labels.to(scores.device)
        logits = logit_scale * scores
        loss = (_multi_positive_nce(logits, labels) + _multi_positive_nce(logits.T, labels.T)) / 2
        with torch.no_grad():
            has_positive = labels.any(dim=1)
            best = logits.argmax(dim=1)
            hit = labels.gather(1, best[:, None])[:, 0] & has_positive
            accuracy = hit.float().sum() / has_positive.float().sum().clamp(min=1)
        return WordAlignmentOutput(loss=loss, accuracy=accuracy)
