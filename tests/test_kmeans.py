"""Batched K-Means against scikit-learn's Lloyd K-Means and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sseg  # noqa: F401  (before sklearn/timm: torchvision fix)
from sklearn.cluster import KMeans

from sseg.errors import DataError
from sseg.pseudo_masks.kmeans import batched_kmeans, kmeans_plus_plus


def _blobs(batch: int, points: int, dims: int, clusters: int, seed: int, spread: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(batch, clusters, dims, generator=gen) * 3
    which = torch.randint(0, clusters, (batch, points), generator=gen)
    centres = torch.gather(means, 1, which.unsqueeze(2).expand(-1, -1, dims))
    return centres + spread * torch.randn(batch, points, dims, generator=gen)


def _random_init(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([xb[torch.randperm(xb.shape[0], generator=gen)[:k]] for xb in x])


def _sklearn_from(x: np.ndarray, init: np.ndarray, max_iter: int, tol: float = 1e-4) -> KMeans:
    return KMeans(len(init), init=init, n_init=1, max_iter=max_iter, tol=tol, algorithm="lloyd").fit(x)


def _agreement_up_to_ties(x: torch.Tensor, centers: torch.Tensor, ours: torch.Tensor, theirs: np.ndarray) -> float:
    """Fraction of points whose labels agree, counting a disagreement as a tie when both
    centres are equally near (within float32 rounding)."""
    distances = torch.cdist(x.double(), centers.double()).pow(2)
    theirs_t = torch.from_numpy(theirs).long()
    d_ours = distances.gather(1, ours.unsqueeze(1)).squeeze(1)
    d_theirs = distances.gather(1, theirs_t.unsqueeze(1)).squeeze(1)
    same = (ours == theirs_t) | torch.isclose(d_ours, d_theirs, rtol=1e-5, atol=1e-6)
    return same.double().mean().item()


@pytest.mark.parametrize("data", ["blobs", "noise"])
def test_matches_sklearn_lloyd_from_the_same_centres(data: str) -> None:
    batch, points, dims, k = 3, 400, 12, 6
    x = _blobs(batch, points, dims, 5, seed=1) if data == "blobs" else torch.randn(batch, points, dims)
    init = _random_init(x, k, seed=2)
    ours = batched_kmeans(x, k=k, max_iter=60, init=init)
    for b in range(batch):
        ref = _sklearn_from(x[b].numpy(), init[b].numpy(), max_iter=60)
        assert _agreement_up_to_ties(x[b], ours.centers[b], ours.labels[b], ref.labels_) == 1.0
        assert ours.inertia[b].item() == pytest.approx(ref.inertia_, rel=0.01)
        assert ours.n_iter[b].item() == ref.n_iter_
        np.testing.assert_allclose(ours.centers[b].numpy(), ref.cluster_centers_, rtol=1e-3, atol=1e-3)


def test_empty_clusters_are_relocated_like_sklearn() -> None:
    x = torch.randn(2, 300, 8, generator=torch.Generator().manual_seed(3))
    init = _random_init(x, 5, seed=4)
    init[:, 1] = 100.0  # no point is near: empty after the first assignment
    init[1, 3] = -50.0
    ours = batched_kmeans(x, k=5, max_iter=50, init=init)
    for b in range(2):
        ref = _sklearn_from(x[b].numpy(), init[b].numpy(), max_iter=50)
        assert torch.bincount(ours.labels[b], minlength=5).min() > 0
        assert ours.inertia[b].item() == pytest.approx(ref.inertia_, rel=0.01)
        assert _agreement_up_to_ties(x[b], ours.centers[b], ours.labels[b], ref.labels_) == 1.0


def test_result_is_a_lloyd_fixed_point_with_correct_inertia() -> None:
    x = _blobs(2, 500, 4, 4, seed=5)
    result = batched_kmeans(x, k=4, max_iter=100, tol=0.0, generator=torch.Generator().manual_seed(0))
    brute = torch.cdist(x.double(), result.centers.double()).pow(2)
    assert torch.equal(result.labels, brute.argmin(dim=2))
    np.testing.assert_allclose(result.inertia.numpy(), brute.min(dim=2).values.sum(1).numpy(), rtol=1e-4)
    for b in range(2):  # every centre is the mean of its points
        for c in range(4):
            members = x[b][result.labels[b] == c]
            torch.testing.assert_close(result.centers[b, c], members.mean(0), rtol=1e-4, atol=1e-4)


def test_kmeans_plus_plus_quality_is_close_to_sklearn() -> None:
    x = _blobs(8, 300, 16, 8, seed=6)
    ours = batched_kmeans(x, k=8, max_iter=20, generator=torch.Generator().manual_seed(0))
    theirs = [KMeans(8, init="k-means++", n_init=1, max_iter=20, random_state=b).fit(x[b].numpy()).inertia_
              for b in range(8)]
    assert ours.inertia.sum().item() <= 1.5 * sum(theirs)


def test_greedy_kmeans_plus_plus_seeds_at_least_as_well_as_standard() -> None:
    x = _blobs(16, 200, 8, 8, seed=19, spread=0.5)
    seeds = lambda trials: kmeans_plus_plus(x, 8, torch.Generator().manual_seed(3), n_local_trials=trials)  # noqa: E731
    potential = lambda centers: torch.cdist(x, centers).pow(2).min(dim=2).values.sum().item()  # noqa: E731
    assert potential(seeds(4)) < potential(seeds(1))
    # Averaged over 3 seeds: single runs of either side vary by ~15% on these overlapping blobs.
    ours = sum(batched_kmeans(x, k=8, max_iter=20, n_local_trials=4, generator=torch.Generator().manual_seed(s))
               .inertia.sum().item() for s in range(3))
    theirs = sum(KMeans(8, init="k-means++", n_init=1, max_iter=20, random_state=b + 100 * s).fit(x[b].numpy())
                 .inertia_ for b in range(16) for s in range(3))
    assert ours <= 1.1 * theirs


def test_kmeans_plus_plus_picks_distinct_points_of_the_data() -> None:
    x = _blobs(4, 50, 3, 3, seed=7)
    centers = kmeans_plus_plus(x, 3, torch.Generator().manual_seed(1))
    for b in range(4):
        matches = (centers[b].unsqueeze(1) == x[b].unsqueeze(0)).all(-1)  # [k, P]
        assert matches.any(dim=1).all()  # each centre is one of the points
        assert len({tuple(c.tolist()) for c in centers[b]}) == 3  # D^2 never re-picks a centre


def test_kmeans_plus_plus_with_fewer_distinct_points_than_k() -> None:
    x = torch.zeros(1, 10, 2)
    x[0, 5:] = 1.0  # two distinct points, k = 3
    result = batched_kmeans(x, k=3, generator=torch.Generator().manual_seed(0))
    assert result.inertia.item() == pytest.approx(0.0, abs=1e-6)


def test_same_seed_same_result_other_seed_other_init() -> None:
    x = torch.randn(4, 200, 8, generator=torch.Generator().manual_seed(8))
    first = batched_kmeans(x, k=5, generator=torch.Generator().manual_seed(11))
    again = batched_kmeans(x, k=5, generator=torch.Generator().manual_seed(11))
    other = kmeans_plus_plus(x, 5, torch.Generator().manual_seed(12))
    assert torch.equal(first.labels, again.labels) and torch.equal(first.centers, again.centers)
    seeds = kmeans_plus_plus(x, 5, torch.Generator().manual_seed(11))
    assert not torch.equal(seeds, other)
    from_seeds = batched_kmeans(x, k=5, init=seeds)  # kmeans_plus_plus gives batched_kmeans' seeds
    assert torch.equal(from_seeds.labels, first.labels) and torch.equal(from_seeds.centers, first.centers)


def test_batch_result_equals_per_image_result() -> None:
    x = torch.cat([_blobs(2, 256, 10, 4, seed=9), torch.randn(2, 256, 10)])
    init = _random_init(x, 6, seed=10)
    together = batched_kmeans(x, k=6, max_iter=30, init=init)
    assert len(set(together.n_iter.tolist())) > 1  # elements stop at different iterations
    for b in range(4):
        alone = batched_kmeans(x[b : b + 1], k=6, max_iter=30, init=init[b : b + 1])
        assert torch.equal(together.labels[b], alone.labels[0])
        torch.testing.assert_close(together.centers[b], alone.centers[0])
        assert together.n_iter[b] == alone.n_iter[0]


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_chunk_size_does_not_change_the_result(dtype: torch.dtype | None) -> None:
    x = torch.cat([_blobs(3, 128, 16, 4, seed=20), torch.randn(4, 128, 16)])
    whole = batched_kmeans(x, k=5, generator=torch.Generator().manual_seed(1), chunk_size=7, distance_dtype=dtype)
    for chunk in (1, 3):
        part = batched_kmeans(x, k=5, generator=torch.Generator().manual_seed(1), chunk_size=chunk,
                              distance_dtype=dtype)
        assert torch.equal(part.labels, whole.labels) and torch.equal(part.n_iter, whole.n_iter)
        torch.testing.assert_close(part.centers, whole.centers)


def test_iteration_cap_and_tolerance() -> None:
    # Variance ~25 per dimension: tol only matches sklearn when scaled by it, as sklearn does.
    x = 5 * torch.randn(2, 300, 6, generator=torch.Generator().manual_seed(13)) + 3
    init = _random_init(x, 8, seed=14)
    capped = batched_kmeans(x, k=8, max_iter=2, tol=0.0, init=init)
    assert capped.n_iter.tolist() == [2, 2]
    loose = batched_kmeans(x, k=8, max_iter=100, tol=1e-2, init=init)
    for b in range(2):
        ref = _sklearn_from(x[b].numpy(), init[b].numpy(), max_iter=100, tol=1e-2)
        assert loose.n_iter[b].item() == ref.n_iter_
        assert loose.inertia[b].item() == pytest.approx(ref.inertia_, rel=1e-4)


def test_bf16_distances_give_nearly_the_same_clustering() -> None:
    x = _blobs(4, 400, 32, 5, seed=15)
    init = kmeans_plus_plus(x, 5, torch.Generator().manual_seed(16))
    exact = batched_kmeans(x, k=5, max_iter=50, init=init)
    low = batched_kmeans(x, k=5, max_iter=50, init=init, distance_dtype=torch.bfloat16)
    assert low.labels.dtype == torch.long and low.centers.dtype == torch.float32
    torch.testing.assert_close(low.inertia, exact.inertia, rtol=0.01, atol=0.0)
    assert (low.labels == exact.labels).double().mean() >= 0.99


@pytest.mark.parametrize(
    "x, k, match",
    [
        (torch.randn(10, 3), 2, r"\[B, P, D\]"),
        (torch.randint(0, 5, (1, 10, 3)), 2, "floating-point"),
        (torch.randn(1, 3, 2), 4, "at least k=4 points"),
        (torch.randn(0, 10, 2), 2, "empty batch"),
        (torch.full((1, 10, 2), float("nan")), 2, "NaN"),
    ],
)
def test_bad_input_is_a_one_line_data_error(x: torch.Tensor, k: int, match: str) -> None:
    with pytest.raises(DataError, match=match):
        batched_kmeans(x, k=k)


def test_wrong_init_shape_is_rejected() -> None:
    with pytest.raises(DataError, match="init must have shape"):
        batched_kmeans(torch.randn(2, 10, 3), k=2, init=torch.randn(2, 3, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x = _blobs(4, 300, 16, 5, seed=17)
    init = _random_init(x, 5, seed=18)
    cpu = batched_kmeans(x, k=5, init=init)
    gpu = batched_kmeans(x.cuda(), k=5, init=init.cuda())
    torch.testing.assert_close(gpu.inertia.cpu(), cpu.inertia, rtol=1e-3, atol=1e-3)
    seeded = batched_kmeans(x.cuda(), k=5, generator=torch.Generator().manual_seed(0),
                            distance_dtype=torch.bfloat16)
    assert seeded.labels.device.type == "cuda"
