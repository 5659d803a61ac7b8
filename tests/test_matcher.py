"""HungarianMatcher vs brute force over all assignments and vs hand-made cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import sseg  # noqa: F401
from sseg.errors import DataError
from sseg.losses.matcher import HungarianMatcher


def reference_cost(logits: np.ndarray, target: np.ndarray, w_focal: float, w_dice: float) -> float:
    """One (prediction, target) cost from the textbook formulas, pixel by pixel."""
    focal = 0.0
    inter = prob_sum = 0.0
    for z, t in zip(logits.ravel().tolist(), target.ravel().tolist()):
        p = 1 / (1 + math.exp(-z))
        if t:
            focal += 0.25 * (1 - p) ** 2 * -math.log(p)
        else:
            focal += 0.75 * p ** 2 * -math.log(1 - p)
        inter += p * t
        prob_sum += p
    focal /= logits.size
    dice = 1 - (2 * inter + 1) / (prob_sum + target.sum() + 1)
    return w_focal * focal + w_dice * dice


def brute_force_min_cost(cost: np.ndarray) -> float:
    n, k = cost.shape
    if k <= n:
        return min(sum(cost[q, j] for j, q in enumerate(perm)) for perm in itertools.permutations(range(n), k))
    return min(sum(cost[q, j] for q, j in enumerate(perm)) for perm in itertools.permutations(range(k), n))


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_and_reference_costs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    h = w = 6
    logits = torch.tensor(rng.normal(0, 2, size=(1, n, h, w)), dtype=torch.float32)
    targets = torch.tensor(rng.random((k, h, w)) < 0.4)
    matcher = HungarianMatcher(cost_focal=20.0, cost_dice=1.0)
    reference = np.array([[reference_cost(logits[0, q].numpy(), targets[j].numpy(), 20.0, 1.0)
                           for j in range(k)] for q in range(n)])
    cost = matcher.cost_matrix(logits[0], targets).numpy()
    np.testing.assert_allclose(cost, reference, rtol=1e-4, atol=1e-5)

    [(pred_idx, tgt_idx)] = matcher(logits, [targets])
    assert pred_idx.dtype == tgt_idx.dtype == torch.int64
    assert len(pred_idx) == min(n, k)
    assert len(set(pred_idx.tolist())) == len(pred_idx) and len(set(tgt_idx.tolist())) == len(tgt_idx)
    matched = reference[pred_idx.numpy(), tgt_idx.numpy()].sum()
    assert matched == pytest.approx(brute_force_min_cost(reference), rel=1e-5)


def test_recovers_a_permutation_of_exact_masks() -> None:
    torch.manual_seed(0)
    h = w = 8
    targets = torch.zeros(3, h, w, dtype=torch.bool)
    targets[0, :4] = True
    targets[1, 4:, :4] = True
    targets[2, 4:, 4:] = True
    order = [2, 0, 1]  # query 0 shows target 2, query 3 shows target 0, query 4 shows target 1
    logits = torch.randn(1, 5, h, w) * 0.1
    for query, target in zip([0, 3, 4], order):
        logits[0, query] = torch.where(targets[target], 8.0, -8.0)
    [(pred_idx, tgt_idx)] = HungarianMatcher()(logits, [targets])
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist())) == {0: 2, 3: 0, 4: 1}


def test_targets_are_resized_nearest_to_the_prediction_size() -> None:
    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(0, 2, size=(1, 4, 5, 5)), dtype=torch.float32)
    small = torch.tensor(rng.random((3, 5, 5)) < 0.5)
    big = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 20x20, nearest-consistent
    matcher = HungarianMatcher()
    torch.testing.assert_close(matcher.cost_matrix(logits[0], big), matcher.cost_matrix(logits[0], small))
    [(p_big, t_big)] = matcher(logits, [big])
    [(p_small, t_small)] = matcher(logits, [small])
    assert p_big.tolist() == p_small.tolist() and t_big.tolist() == t_small.tolist()


def test_image_without_targets_gets_an_empty_match_and_batch_order_is_kept() -> None:
    logits = torch.randn(2, 4, 6, 6)
    targets = [torch.zeros(0, 6, 6, dtype=torch.bool), torch.ones(1, 6, 6, dtype=torch.bool)]
    first, second = HungarianMatcher()(logits, targets)
    assert first[0].numel() == 0 and first[1].numel() == 0
    assert second[1].tolist() == [0] and len(second[0]) == 1
    # with one target the optimal assignment is simply the cheapest query
    cost = HungarianMatcher().cost_matrix(logits[1], targets[1])
    assert second[0].item() == int(cost[:, 0].argmin())


def test_bad_inputs_raise_data_error() -> None:
    matcher = HungarianMatcher()
    with pytest.raises(DataError, match="target sets"):
        matcher(torch.randn(2, 3, 4, 4), [torch.ones(1, 4, 4)])
    with pytest.raises(DataError, match=r"\[K,H,W\]"):
        matcher(torch.randn(1, 3, 4, 4), [torch.ones(4, 4)])
    with pytest.raises(DataError, match=r"\[B,N,h,w\]"):
        matcher(torch.randn(3, 4, 4), [torch.ones(1, 4, 4)] * 3)


def test_batched_costs_equal_one_image_at_a_time() -> None:
    """A batch is matched in one padded computation; each image's costs and matches are what matching
    it alone gives (different target counts, one image without targets)."""
    rng = np.random.default_rng(11)
    counts = [3, 1, 0, 5, 2]
    logits = torch.tensor(rng.normal(0, 2, size=(len(counts), 6, 4, 4)), dtype=torch.float32)
    targets = [torch.tensor(rng.random((k, 8, 8)) < 0.4) for k in counts]
    matcher = HungarianMatcher(cost_focal=20.0, cost_dice=1.0)
    batched = matcher(logits, targets)
    costs = matcher._batched_costs(logits, targets)
    for b, target in enumerate(targets):
        [(alone_pred, alone_tgt)] = matcher(logits[b:b + 1], [target])
        assert batched[b][0].tolist() == alone_pred.tolist() and batched[b][1].tolist() == alone_tgt.tolist()
        if len(target):
            np.testing.assert_allclose(costs[b], matcher.cost_matrix(logits[b], target).numpy(), rtol=1e-5, atol=1e-6)
        else:
            assert costs[b] is None and len(batched[b][0]) == 0
