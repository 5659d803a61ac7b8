"""Batched K-Means in torch: the images of a batch are clustered together, on CPU or CUDA.

``batched_kmeans(x[B, P, D], k)`` runs B independent K-Means problems in lock-step: k-means++
seeding (D² sampling; the greedy variant on request) and Lloyd iterations whose distances are
one batched matrix product for all elements. On GPU the whole batch is one chunk; on CPU the
batch is cut into chunks of a few elements that stay in cache through seeding and every
iteration (a chunk-sized Python loop, never a per-image one). The stopping rule follows
scikit-learn's ``KMeans(algorithm="lloyd")`` per batch element: stop on unchanged labels, or when
the squared centre shift is at most ``tol * mean(var(x_b, axis=0))``; an element that has
stopped keeps its centres while the others go on. Empty clusters are re-seeded at the points
farthest from their centres, as scikit-learn does, so from the same initial centres the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sseg.errors import DataError


@dataclass(frozen=True)
class KMeansResult:
    labels: Tensor  # [B, P] long, cluster index of every point
    centers: Tensor  # [B, k, D] float32
    inertia: Tensor  # [B] float32, sum of squared distances to the assigned centre
    n_iter: Tensor  # [B] long, Lloyd iterations each batch element ran


def _check_input(x: Tensor, k: int, max_iter: int, tol: float, init: Tensor | None) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"batched_kmeans expects a tensor of shape [B, P, D], got {shape}")
    if not x.is_floating_point():
        raise DataError(f"batched_kmeans expects floating-point points, got {x.dtype}")
    batch, points, dims = x.shape
    if batch == 0:
        raise DataError("batched_kmeans got an empty batch")
    if k < 1:
        raise DataError(f"batched_kmeans needs k >= 1, got k={k}")
    if points < k:
        raise DataError(f"batched_kmeans needs at least k={k} points per image, got {points}")
    if max_iter < 1 or tol < 0:
        raise DataError(f"batched_kmeans needs max_iter >= 1 and tol >= 0 (got {max_iter}, {tol})")
    if init is not None and tuple(init.shape) != (batch, k, dims):
        raise DataError(
            f"batched_kmeans init must have shape {(batch, k, dims)}, got {tuple(init.shape)}"
        )


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) numbers drawn on the generator's own device, then moved to ``device``.

    Drawing on the generator's device keeps a CPU generator usable for CUDA data (and the same
    seed gives the same draws whatever device the points live on).
    """
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def _sample_rows(weights: Tensor, uniforms: Tensor) -> Tensor:
    """Indices [B, L] into the rows of ``weights`` [B, P], one per uniform number in ``uniforms``
    [B, L], each index drawn with probability proportional to its weight (inverse-CDF). Rows
    whose weights are all zero (every point coincides with a centre) sample uniformly."""
    weights = weights.clamp_min(0)
    totals = weights.sum(dim=1, keepdim=True)
    weights = torch.where(totals > 0, weights, torch.ones_like(weights))
    cumulative = weights.cumsum(dim=1)
    index = torch.searchsorted(cumulative, uniforms * cumulative[:, -1:], right=True)
    return index.clamp_max(weights.shape[1] - 1)


def _squared_norms(x: Tensor) -> Tensor:
    # vector_norm reduces in one pass; (x * x).sum(-1) would materialise a [B, P, D] temporary.
    return torch.linalg.vector_norm(x, dim=-1).pow(2)


@dataclass(frozen=True)
class _SeedingDraws:
    """All random numbers k-means++ needs, drawn up front so that the result does not depend on
    how the batch is split into chunks."""

    first: Tensor  # [B] picks the first centre
    trials: Tensor  # [k - 1, B, L] pick the candidates for each further centre

    @classmethod
    def draw(cls, batch: int, k: int, n_local_trials: int, generator: torch.Generator | None,
             device: torch.device) -> "_SeedingDraws":
        first = _uniform((batch,), generator, device)
        return cls(first, _uniform((k - 1, batch, n_local_trials), generator, device))

    def chunk(self, start: int, stop: int) -> "_SeedingDraws":
        return _SeedingDraws(self.first[start:stop], self.trials[:, start:stop])


def _squared_distances(x: Tensor, x_sq: Tensor, centers: Tensor) -> Tensor:
    """||x||² - 2 x·c + ||c||² for all points and a few centres: [B, P, c] float32."""
    c_sq = centers.pow(2).sum(-1).unsqueeze(1)  # [B, 1, c]
    cross = torch.bmm(x, centers.transpose(1, 2))
    return (x_sq.unsqueeze(2) - 2.0 * cross + c_sq).clamp_min_(0)


def _seed_centres(x: Tensor, x_sq: Tensor, k: int, draws: _SeedingDraws) -> Tensor:
    """k-means++ on one chunk, in float32 (on CPU a bf16 matrix-vector product is slower)."""
    batch, points, dims = x.shape
    rows = torch.arange(batch, device=x.device)
    centers = x.new_empty(batch, k, dims)
    centers[:, 0] = x[rows, (draws.first * points).long().clamp_max(points - 1)]
    closest = _squared_distances(x, x_sq, centers[:, :1]).squeeze(2)  # [B, P]
    for j in range(1, k):
        candidates = _sample_rows(closest, draws.trials[j - 1])  # [B, L]
        candidate_points = x[rows.unsqueeze(1), candidates]  # [B, L, D]
        # Nearest-centre distances if each candidate were added: [B, P, L].
        with_candidate = torch.minimum(closest.unsqueeze(2), _squared_distances(x, x_sq, candidate_points))
        best = with_candidate.sum(dim=1).argmin(dim=1)  # [B]
        centers[:, j] = candidate_points[rows, best]
        closest = with_candidate[rows, :, best]
    return centers


def kmeans_plus_plus(
    x: Tensor, k: int, generator: torch.Generator | None = None, n_local_trials: int = 1
) -> Tensor:
    """k-means++ seeding for every batch element at once: [B, P, D] -> centres [B, k, D].

    The first centre is a uniformly drawn point; each next one is drawn with probability
    proportional to its squared distance to the nearest centre chosen so far (D² sampling).
    With ``n_local_trials`` > 1 (greedy k-means++, scikit-learn's default 2 + ln k), that many
    candidates are drawn and the one that lowers the total squared distance most is kept.
    Same seeds as ``batched_kmeans`` picks with the same generator state.
    """
    _check_input(x, k, 1, 0.0, None)
    x = x.float().contiguous()
    draws = _SeedingDraws.draw(x.shape[0], k, n_local_trials, generator, x.device)
    return _seed_centres(x, _squared_norms(x), k, draws)


def _assign(x: Tensor, x_sq: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centre of every point and its squared distance: labels [B, P], dist [B, P].

    ||x||² is the same for every centre, so the argmin needs only ||c||² - 2 c·x (one fused
    baddbmm in float32), laid out [B, k, P] so that the min over k runs along whole rows of P;
    ||x||² is added to the [B, P] minimum alone. ``x`` may be a low-precision copy (bf16).
    """
    c_sq = centers.pow(2).sum(-1).unsqueeze(2)  # [B, k, 1]
    if x.dtype == torch.float32:
        partial = torch.baddbmm(c_sq, centers, x.transpose(1, 2), alpha=-2.0)
    else:
        partial = c_sq - 2.0 * torch.bmm(centers.to(x.dtype), x.transpose(1, 2)).float()
    min_partial, labels = partial.min(dim=1)
    return labels, (min_partial + x_sq).clamp_min_(0)


def _cluster_sums(x: Tensor, x_loop: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster sums [B, k, D] and counts [B, k] (both float32) from labels [B, P].

    On CPU an ``index_add_`` of the float32 points into B*k rows: exact, and about 3x faster
    than a one-hot matrix product there. On GPU a one-hot [B, k, P] @ ``x_loop`` [B, P, D]
    product (tensor cores; atomics onto only k rows per image would contend); with a bf16
    ``x_loop`` it accumulates in float32 but returns bf16-rounded sums.
    """
    batch, points, dims = x.shape
    if x.device.type == "cpu":
        rows = (labels + torch.arange(batch, device=x.device).unsqueeze(1) * k).view(-1)
        sums = x.new_zeros(batch * k, dims).index_add_(0, rows, x.reshape(-1, dims))
        counts = torch.bincount(rows, minlength=batch * k).to(torch.float32)
        return sums.view(batch, k, dims), counts.view(batch, k)
    one_hot = x_loop.new_zeros(batch, k, points)  # exact in any dtype, bf16 included
    one_hot.scatter_(1, labels.unsqueeze(1), 1.0)
    return torch.bmm(one_hot, x_loop).float(), one_hot.sum(dim=2, dtype=torch.float32)


def _relocate_empty_clusters(
    x: Tensor, labels: Tensor, min_dist: Tensor, sums: Tensor, counts: Tensor
) -> bool:
    """Move each empty cluster onto one of the points farthest from their centre (in place);
    returns whether there was any.

    Mirrors scikit-learn's ``_relocate_empty_clusters_dense``: the i-th empty cluster (by index)
    takes the i-th farthest point, which is removed from its old cluster's sum; labels stay as
    they are until the next assignment.
    """
    empty = counts == 0  # [B, k]
    if not bool(empty.any()):
        return False
    k = counts.shape[1]
    farthest = min_dist.topk(k, dim=1).indices  # [B, k], farthest first
    rank = (empty.long().cumsum(dim=1) - 1).clamp_min(0)  # i for the i-th empty cluster
    donor = farthest.gather(1, rank)  # [B, k] point each cluster would take
    donor_points = torch.gather(x, 1, donor.unsqueeze(2).expand(-1, -1, x.shape[2]))
    donor_old_cluster = labels.gather(1, donor)
    weight = empty.to(x.dtype)  # only empty clusters move a point
    moved = -donor_points * weight.unsqueeze(2)
    sums.scatter_add_(1, donor_old_cluster.unsqueeze(2).expand_as(donor_points), moved)
    counts.scatter_add_(1, donor_old_cluster, -weight)
    sums.copy_(torch.where(empty.unsqueeze(2), donor_points, sums))
    counts.copy_(torch.where(empty, torch.ones_like(counts), counts))
    return True


def _lloyd(
    x: Tensor, x_loop: Tensor, x_sq: Tensor, centers: Tensor, tolerance: Tensor, max_iter: int
) -> KMeansResult:
    """Lloyd iterations for one chunk of batch elements (see :func:`batched_kmeans`); the loop's
    distances use ``x_loop`` (``x`` or a low-precision copy), the final assignment ``x``."""
    batch, points, _ = x.shape
    k = centers.shape[1]
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(batch, dtype=torch.long, device=x.device)
    labels_old = torch.full((batch, points), -1, dtype=torch.long, device=x.device)
    for _ in range(max_iter):
        assigned_with = centers
        labels, min_dist = _assign(x_loop, x_sq, centers)
        sums, counts = _cluster_sums(x, x_loop, labels, k)
        if _relocate_empty_clusters(x, labels, min_dist, sums, counts):
            # A cluster left empty by the relocation (its only point moved away) keeps its centre.
            means = sums / counts.clamp_min(1).unsqueeze(2)
            new_centers = torch.where(counts.unsqueeze(2) > 0, means, centers)
        else:
            new_centers = sums / counts.unsqueeze(2)
        shift = (new_centers - centers).pow(2).sum(dim=(1, 2))
        converged = (labels == labels_old).all(dim=1) | (shift <= tolerance)
        centers = torch.where(active.view(-1, 1, 1), new_centers, centers)
        n_iter += active
        active &= ~converged
        labels_old = labels
        if not bool(active.any()):
            break
    # The final assignment is float32 with the final centres (sklearn's last E-step). It is
    # already at hand when the loop ran in float32 and its last update moved no centre (every
    # element had converged on unchanged labels or stopped earlier).
    if x_loop.dtype != torch.float32 or not torch.equal(centers, assigned_with):
        labels, min_dist = _assign(x, x_sq, centers)
    # The inertia comes from the ||x||² - 2x·c + ||c||² expansion: exact enough unless the
    # points sit far from the origin relative to their spread (then centre them first).
    inertia = min_dist.double().sum(dim=1).float()
    return KMeansResult(labels=labels, centers=centers, inertia=inertia, n_iter=n_iter)


def _mean_variance(x: Tensor, x_sq: Tensor) -> Tensor:
    """mean over dimensions of the per-dimension variance of each element's points: [B] float32
    (scikit-learn scales ``tol`` by it). Equals E||x||² / D - ||E x||² / D."""
    points, dims = x.shape[1], x.shape[2]
    mean_sq = x_sq.double().sum(dim=1) / (points * dims)
    sq_mean = torch.linalg.vector_norm(x.mean(dim=1).double(), dim=-1).pow(2) / dims
    return (mean_sq - sq_mean).clamp_min(0).float()


def default_chunk_size(x: Tensor, k: int, cache_bytes: int = 8 << 20) -> int:
    """Batch elements per chunk: on CPU as many as keep the float32 points and the [P, k]
    distances within ``cache_bytes``, so a chunk stays in cache through all its iterations; on
    GPU the whole batch."""
    if x.device.type != "cpu":
        return x.shape[0]
    per_element = x.shape[1] * (x.shape[2] + k) * 4
    return max(1, min(x.shape[0], cache_bytes // per_element))


def batched_kmeans(
    x: Tensor,
    k: int = 8,
    max_iter: int = 20,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    init: Tensor | None = None,
    distance_dtype: torch.dtype | None = None,
    n_local_trials: int = 1,
    chunk_size: int | None = None,
) -> KMeansResult:
    """Cluster the P points of each of B batch elements into k clusters, all elements at once.

    Args:
        x: points [B, P, D] (any float dtype; computed in float32).
        k: clusters per batch element.
        max_iter: Lloyd iteration cap.
        tol: relative tolerance, scikit-learn's meaning: an element stops when the summed squared
            centre shift is <= tol * mean over dimensions of its points' variance.
        generator: random source for k-means++ (a CPU generator also works for CUDA data).
        init: initial centres [B, k, D]; skips k-means++ when given.
        distance_dtype: precision of the point-centre products inside the Lloyd loop, e.g.
            torch.bfloat16 (faster on GPUs and on CPUs with AVX512-BF16/AMX). On GPU the
            centre sums use it too (one-hot product; centres exact to ~3 significant digits);
            on CPU they are always float32. Seeding, the final assignment and the inertia are
            always float32.
        n_local_trials: k-means++ candidates per centre; 1 is standard k-means++, scikit-learn's
            greedy variant uses 2 + ln(k) (better seeds, each trial one more distance pass).
        chunk_size: batch elements iterated together; the default keeps a CPU chunk in cache
            (and lets each chunk stop as soon as its own elements have converged). The result
            does not depend on it.
    """
    _check_input(x, k, max_iter, tol, init)
    if n_local_trials < 1 or (chunk_size is not None and chunk_size < 1):
        raise DataError(f"batched_kmeans needs n_local_trials >= 1 and chunk_size >= 1 "
                        f"(got {n_local_trials}, {chunk_size})")
    x = x.float().contiguous()
    batch = x.shape[0]
    draws = None if init is not None else _SeedingDraws.draw(batch, k, n_local_trials, generator, x.device)
    step = chunk_size or default_chunk_size(x, k)
    parts = []
    # Seeding and all iterations of one chunk run back to back, while its points are in cache.
    for start in range(0, batch, step):
        chunk = x[start : start + step]
        x_sq = _squared_norms(chunk)  # [C, P]
        if not bool(torch.isfinite(x_sq).all()):  # NaN/inf anywhere in a point shows in its norm
            raise DataError("batched_kmeans input holds NaN or infinite (or overflowing) values")
        if draws is None:
            centers = init[start : start + step].to(x.device).float().clone()
        else:
            centers = _seed_centres(chunk, x_sq, k, draws.chunk(start, start + step))
        low = chunk if distance_dtype in (None, torch.float32) else chunk.to(distance_dtype)
        parts.append(_lloyd(chunk, low, x_sq, centers, tol * _mean_variance(chunk, x_sq), max_iter))
    if len(parts) == 1:
        return parts[0]
    fields = ("labels", "centers", "inertia", "n_iter")
    return KMeansResult(*(torch.cat([getattr(part, f) for part in parts]) for f in fields))
