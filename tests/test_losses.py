"""Mask losses vs reference formulas / torchvision, and the S-Seg criterion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import sseg  # noqa: F401  (before torchvision)
from sseg.errors import DataError, SsegError
from sseg.losses import (ContrastiveLoss, HungarianMatcher, SSegCriterion, dice_loss,
                         pseudo_masks_to_targets, sigmoid_focal_loss)
from sseg.losses.mask_losses import pairwise_dice_cost, pairwise_sigmoid_focal_cost


def test_focal_and_dice_hand_computed() -> None:
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # focal: positive pixel .25·.5²·ln2, negatives .75·.5²·ln2, mean over 4 pixels
    expected_focal = (0.25 * 0.25 + 3 * 0.75 * 0.25) * math.log(2) / 4
    assert sigmoid_focal_loss(logits, target, 1).item() == pytest.approx(expected_focal, rel=1e-6)
    # dice: 1 - (2·0.5 + 1) / (2 + 1 + 1)
    assert dice_loss(logits, target, 1).item() == pytest.approx(0.5, rel=1e-6)
    assert dice_loss(logits, target, 4).item() == pytest.approx(0.125, rel=1e-6)


def test_focal_matches_torchvision() -> None:
    from torchvision.ops import sigmoid_focal_loss as tv_focal

    torch.manual_seed(0)
    logits = torch.randn(5, 7, 9) * 3
    targets = (torch.rand(5, 7, 9) > 0.6).float()
    expected = tv_focal(logits, targets, alpha=0.25, gamma=2, reduction="none").flatten(1).mean(1).sum() / 3.5
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 3.5), expected)


def test_dice_matches_reference_formula() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 6, 6)
    targets = torch.rand(4, 6, 6) > 0.5
    total = 0.0
    for z, t in zip(logits, targets.float()):
        p = torch.sigmoid(z)
        total += 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    torch.testing.assert_close(dice_loss(logits, targets, 2), total / 2)


def test_predictions_are_upsampled_bilinearly_to_the_target_size() -> None:
    torch.manual_seed(2)
    logits = torch.randn(3, 4, 4)
    targets = torch.rand(3, 8, 8) > 0.5
    up = F.interpolate(logits[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 3), sigmoid_focal_loss(up, targets, 3))
    torch.testing.assert_close(dice_loss(logits, targets, 3), dice_loss(up, targets, 3))


def test_pairwise_costs_equal_per_pair_losses() -> None:
    torch.manual_seed(3)
    logits = torch.randn(4, 25)
    targets = (torch.rand(3, 25) > 0.5).float()
    focal = pairwise_sigmoid_focal_cost(logits, targets)
    dice = pairwise_dice_cost(logits, targets)
    for q in range(4):
        for k in range(3):
            pair_logits, pair_target = logits[q].view(1, 5, 5), targets[k].view(1, 5, 5)
            assert focal[q, k].item() == pytest.approx(sigmoid_focal_loss(pair_logits, pair_target, 1).item(), rel=1e-5)
            assert dice[q, k].item() == pytest.approx(dice_loss(pair_logits, pair_target, 1).item(), rel=1e-5)


def test_mask_loss_shape_mismatch_is_a_data_error() -> None:
    with pytest.raises(DataError, match="equal M"):
        dice_loss(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4), 1)


# ---------------------------------------------------------------- pseudo masks → targets


def test_pseudo_masks_to_targets_drops_empty_segments() -> None:
    segments = torch.tensor([[[0, 0], [2, 2]],
                             [[1, -1], [1, 1]]])
    first, second = pseudo_masks_to_targets(segments, num_segments=4)
    assert first.dtype == torch.bool and first.shape == (2, 2, 2)
    assert first.tolist() == [[[True, True], [False, False]], [[False, False], [True, True]]]
    assert second.tolist() == [[[True, False], [True, True]]]  # -1 is unlabelled
    with pytest.raises(DataError, match="num_segments"):
        pseudo_masks_to_targets(segments, num_segments=2)
    with pytest.raises(DataError, match="integer label map"):
        pseudo_masks_to_targets(segments.float(), num_segments=4)


# ---------------------------------------------------------------- criterion


def _outputs(pred_masks: torch.Tensor, aux: list[torch.Tensor] | None = None, n_images: int = 2) -> dict:
    torch.manual_seed(7)
    return {
        "pred_masks": pred_masks,
        "aux_outputs": [{"pred_masks": m} for m in (aux or [])],
        "image_features": torch.randn(n_images, 8, requires_grad=True),
        "text_features": torch.randn(n_images, 8, requires_grad=True),
        "logit_scale": torch.tensor(1 / 0.07),
    }


def _targets() -> list[torch.Tensor]:
    a = torch.zeros(2, 8, 8, dtype=torch.bool)
    a[0, :4] = True
    a[1, 4:] = True
    b = torch.zeros(1, 8, 8, dtype=torch.bool)
    b[0, :, :3] = True
    return [a, b]


def test_criterion_total_equals_hand_assembled_terms() -> None:
    torch.manual_seed(0)
    targets = _targets()
    final = torch.randn(2, 4, 4, 4, requires_grad=True)  # predictions at stride 2 of the 8x8 targets
    aux = [torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)]
    outputs = _outputs(final, aux)
    criterion = SSegCriterion(weight_focal=20, weight_dice=1, weight_mask=0.7, weight_contrastive=1.3)
    losses = criterion(outputs, targets)

    matcher = HungarianMatcher(20, 1)
    focal_sum = dice_sum = 0.0
    for layer in [final] + aux:
        indices = matcher(layer, targets)
        preds = torch.cat([layer[b, src] for b, (src, _) in enumerate(indices)])
        tgts = torch.cat([targets[b][tgt] for b, (_, tgt) in enumerate(indices)]).float()
        up = F.interpolate(preds[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
        from torchvision.ops import sigmoid_focal_loss as tv_focal
        focal_sum += tv_focal(up, tgts, reduction="none").flatten(1).mean(1).sum() / 3
        p = up.sigmoid().flatten(1)
        t = tgts.flatten(1)
        dice_sum += (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / 3
    contrastive = ContrastiveLoss()(outputs["image_features"], outputs["text_features"], outputs["logit_scale"])

    assert losses["num_masks"].item() == 3
    torch.testing.assert_close(losses["loss_focal"], focal_sum)
    torch.testing.assert_close(losses["loss_dice"], dice_sum)
    torch.testing.assert_close(losses["loss_mask"], 20 * focal_sum + dice_sum)
    torch.testing.assert_close(losses["loss_contrastive"], contrastive.loss)
    torch.testing.assert_close(losses["loss"], 0.7 * (20 * focal_sum + dice_sum) + 1.3 * contrastive.loss)
    assert [len(src) for src, _ in criterion.matcher(outputs["pred_masks"], targets)] == [2, 1]
    assert set(losses) >= {"loss", "loss_mask", "loss_focal", "loss_dice", "loss_contrastive",
                           "contrastive_accuracy"}


def test_unmatched_queries_are_not_penalised() -> None:
    targets = _targets()
    logits = torch.full((2, 3, 8, 8), -6.0)
    logits[0, 0] = torch.where(targets[0][1], 6.0, -6.0)
    logits[0, 2] = torch.where(targets[0][0], 6.0, -6.0)
    logits[1, 1] = torch.where(targets[1][0], 6.0, -6.0)
    criterion = SSegCriterion()
    baseline = criterion(_outputs(logits.clone()), targets)
    indices = criterion.matcher(logits, targets)
    assert indices[0][0].tolist() == [0, 2] and indices[0][1].tolist() == [1, 0]

    changed = logits.clone()
    changed[0, 1] = torch.randn(8, 8)  # the unmatched query of image 0 now predicts noise
    changed.requires_grad_(True)
    losses = criterion(_outputs(changed), targets)
    torch.testing.assert_close(losses["loss_mask"], baseline["loss_mask"])
    losses["loss_mask"].backward()
    assert changed.grad[0, 1].abs().max() == 0
    assert changed.grad[0, 0].abs().max() > 0
    assert baseline["loss_dice"].item() < 0.02 and baseline["loss_focal"].item() < 1e-3


def test_no_targets_anywhere_gives_zero_mask_loss_and_num_masks_one() -> None:
    empty = [torch.zeros(0, 8, 8, dtype=torch.bool)] * 2
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    losses = SSegCriterion()(_outputs(pred), empty)
    assert losses["loss_mask"].item() == 0 and losses["num_masks"].item() == 1
    losses["loss"].backward()  # graph still reaches the predictions
    assert pred.grad is not None and pred.grad.abs().max() == 0


def test_world_size_without_process_group_is_rejected() -> None:
    with pytest.raises(SsegError, match="not initialised"):
        SSegCriterion()(_outputs(torch.randn(2, 3, 4, 4)), _targets(), world_size=2)


def test_mask_loss_size_equals_the_losses_on_targets_resized_to_it() -> None:
    """mask_loss_size=4 on 8x8 targets: the same losses as the full-size criterion given the targets
    resized (nearest) to 4x4 by hand; larger than the targets: no change."""
    torch.manual_seed(1)
    targets = _targets()
    outputs = _outputs(torch.randn(2, 4, 2, 2), [torch.randn(2, 4, 2, 2)])
    small = [F.interpolate(t.float()[:, None], size=(4, 4), mode="nearest")[:, 0] > 0.5 for t in targets]
    reduced = SSegCriterion(mask_loss_size=4)(outputs, targets)
    by_hand = SSegCriterion()(outputs, small)
    for key in ("loss_focal", "loss_dice", "loss", "num_masks"):
        torch.testing.assert_close(reduced[key], by_hand[key])
    assert reduced["loss_focal"].item() != pytest.approx(SSegCriterion()(outputs, targets)["loss_focal"].item())
    for key in ("loss_focal", "loss_dice"):
        torch.testing.assert_close(SSegCriterion(mask_loss_size=16)(outputs, targets)[key],
                                   SSegCriterion()(outputs, targets)[key])
