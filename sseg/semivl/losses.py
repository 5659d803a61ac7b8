"""UniMatch consistency losses and SemiVL's dense vision-language guidance.

UniMatch (LiheYoung/UniMatch unimatch.py): pseudo-labels from the weak view (confidence τ = 0.95);
each unlabelled loss is the per-pixel cross-entropy kept where the confidence reaches τ and the pixel is
not padding, summed and divided by the number of non-padding pixels; L_u = 0.5·L_fp + 0.25·L_s1 +
0.25·L_s2 and the total is (L_s + L_u) / 2.

Dense VL guidance (SemiVL Sec. 3.5, google-research/semivl semivl.py): a frozen copy of the initial
VLM gives per-class cosine maps; ×100, softmax; pixels whose top probability is below ζ = 0.9 are
ignored; cross-entropy summed over pixels / all pixels ('mean_all'), weighted 0.25 / 0.25 / 0.5 over
the two strong views and the perturbed view, times λ decaying linearly from 0.1 to 0 over training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE)


def pseudo_labels(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence [B,H,W], label [B,H,W]) of the softmax."""
    conf, label = logits.detach().float().softmax(dim=1).max(dim=1)
    return conf, label


def confident_loss(logits: torch.Tensor, target: torch.Tensor, conf: torch.Tensor, ignore: torch.Tensor,
                   tau: float = 0.95) -> torch.Tensor:
    """Σ CE · [conf ≥ τ] · [ignore ≠ 255] / #[ignore ≠ 255] (UniMatch)."""
    valid = ignore != IGNORE
    loss = F.cross_entropy(logits, target.long(), reduction="none")
    kept = (conf >= tau) & valid
    return (loss * kept).sum() / valid.sum().clamp(min=1)


def confidence_mask(conf: torch.Tensor, ignore: torch.Tensor, tau: float) -> torch.Tensor:
    return (conf >= tau) & (ignore != IGNORE)


def unimatch_total(loss_x: torch.Tensor, loss_fp: torch.Tensor, loss_s1: torch.Tensor,
                   loss_s2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, L_u): L_u = 0.5·fp + 0.25·s1 + 0.25·s2, total = (L_s + L_u) / 2."""
    loss_u = 0.5 * loss_fp + 0.25 * loss_s1 + 0.25 * loss_s2
    return (loss_x + loss_u) / 2.0, loss_u


def guidance_targets(class_similarity: torch.Tensor, size: tuple[int, int], ignore: torch.Tensor | None = None,
                     scale: float = 100.0, threshold: float = 0.9) -> torch.Tensor:
    """Dense zero-shot labels [B,H,W] from cosine maps [B,C,h,w]: resized to ``size``, ×scale, softmax;
    255 where the top probability is below ``threshold`` or the pixel is padding."""
    sim = F.interpolate(class_similarity.float(), size=size, mode="bilinear", align_corners=False)
    conf, label = (scale * sim).softmax(dim=1).max(dim=1)
    label = label.clone()
    label[conf < threshold] = IGNORE
    if ignore is not None:
        label[ignore == IGNORE] = IGNORE
    return label


def guidance_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the kept pixels, divided by all pixels (SemiVL's 'mean_all')."""
    loss = F.cross_entropy(logits, target.long(), ignore_index=IGNORE, reduction="none")
    return loss.sum() / target.numel()


def guidance_lambda(step: int, total_steps: int, start: float = 0.1, end: float = 0.0) -> float:
    """λ at ``step`` (0-based) of ``total_steps``: linear from ``start`` to ``end``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start * (1.0 - progress) + end * progress


def guidance_total(g_s1: torch.Tensor, g_s2: torch.Tensor, g_fp: torch.Tensor, lam: float) -> torch.Tensor:
    return lam * (0.25 * g_s1 + 0.25 * g_s2 + 0.5 * g_fp)
