"""Batched torch K-Means vs per-image scikit-learn (and faiss, when importable).

The pseudo-mask workload: 64 images x 784 tokens (a 224 image at patch 8) x 384 dims (ViT-S),
K = 8, 10 Lloyd iterations. The points are DINO-like: per image, 8 overlapping Gaussian clusters,
L2-normalised.

(a) "as users call it": ours (batched k-means++, early stop at tol=1e-4) against
    ``KMeans(n_clusters=8, init="k-means++", n_init=1, max_iter=10)`` fitted image by image.
(b) "same work": every method starts from the same centres and runs 10 iterations with tol=0
    (stopping only on unchanged labels; faiss always runs all 10). Ours and scikit-learn must
    give the same inertia; faiss differs slightly where a cluster empties (it splits a large
    cluster, scikit-learn and ours move the empty centre to the farthest point). faiss cannot
    stop early, so a second faiss row runs each image for exactly the iterations ours needed
    for it (equal iterations: the fair time at equal work).

Times are medians over repeats, in ms for the whole batch. Every inertia is recomputed the same
way (float64, nearest final centre) so the methods are compared on one measure.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_kmeans.py --threads 2 --repeats 5
    # faiss is optional: put a faiss-cpu install on PYTHONPATH to include it.
"""

from __future__ import annotations

import os

# Spinning OpenMP pools collapse when another process loads the cores: set before numpy/torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sseg  # noqa: E402,F401  (torchvision fix before sklearn pulls anything in)
from sklearn.cluster import KMeans  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from sseg.pseudo_masks.kmeans import batched_kmeans, kmeans_plus_plus  # noqa: E402


def dino_like_points(images: int, points: int, dims: int, clusters: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(images, clusters, dims, generator=gen)
    which = torch.randint(0, clusters, (images, points), generator=gen)
    x = torch.gather(means, 1, which.unsqueeze(2).expand(-1, -1, dims))
    x = x + 0.8 * torch.randn(images, points, dims, generator=gen)
    return torch.nn.functional.normalize(x, dim=-1).contiguous()


def inertia_of(x: np.ndarray, centers: np.ndarray) -> float:
    """Sum over images of squared distances to the nearest of the final centres (float64)."""
    x64, c64 = x.astype(np.float64), centers.astype(np.float64)
    distances = (x64**2).sum(-1)[:, :, None] - 2 * x64 @ c64.transpose(0, 2, 1) + (c64**2).sum(-1)[:, None, :]
    return float(np.maximum(distances.min(-1), 0).sum())


class Case:
    """One benchmarked method: ``run()`` returns the final centres [B, k, D] (and maybe n_iter)."""

    def __init__(self, part: str, method: str, threads: int, run: Callable[[], tuple[np.ndarray, float]],
                 setup: Callable[[], None] = lambda: None) -> None:
        self.part, self.method, self.threads, self.run, self.setup = part, method, threads, run, setup
        self.wall_ms: list[float] = []
        self.cpu_ms: list[float] = []
        self.centers: np.ndarray | None = None
        self.mean_iter = float("nan")

    def measure(self) -> None:
        self.setup()
        wall, cpu = time.perf_counter(), time.process_time()
        self.centers, self.mean_iter = self.run()
        self.wall_ms.append((time.perf_counter() - wall) * 1000)
        self.cpu_ms.append((time.process_time() - cpu) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--points", type=int, default=784)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x = dino_like_points(args.images, args.points, args.dims, args.k, args.seed)
    x_np = x.numpy()
    k, iters = args.k, args.iters
    threads = args.threads
    cases: list[Case] = []

    def torch_threads(n: int) -> Callable[[], None]:
        return lambda: torch.set_num_threads(n)

    # (a) as users call it
    def ours_pp(dtype: torch.dtype | None, trials: int) -> Callable[[], tuple[np.ndarray, float]]:
        def run() -> tuple[np.ndarray, float]:
            gen = torch.Generator().manual_seed(args.seed)
            result = batched_kmeans(x, k=k, max_iter=iters, tol=1e-4, generator=gen, distance_dtype=dtype,
                                    n_local_trials=trials)
            return result.centers.numpy(), result.n_iter.double().mean().item()
        return run

    def sklearn_pp(n_threads: int) -> Callable[[], tuple[np.ndarray, float]]:
        return lambda: _sklearn_pp(n_threads)

    def _sklearn_pp(n_threads: int) -> tuple[np.ndarray, float]:
        with threadpool_limits(n_threads):
            fits = [KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iters, random_state=args.seed + i)
                    .fit(xi) for i, xi in enumerate(x_np)]
        return np.stack([f.cluster_centers_ for f in fits]), float(np.mean([f.n_iter_ for f in fits]))

    greedy = 2 + int(np.log(k))
    cases += [
        Case("a", "ours k-means++ fp32", threads, ours_pp(None, 1), torch_threads(threads)),
        Case("a", "ours k-means++ fp32", 1, ours_pp(None, 1), torch_threads(1)),
        Case("a", "ours k-means++ bf16 matmuls", threads, ours_pp(torch.bfloat16, 1), torch_threads(threads)),
        Case("a", f"ours greedy k-means++ ({greedy}) bf16", threads, ours_pp(torch.bfloat16, greedy),
             torch_threads(threads)),
    ] + [Case("a", f"sklearn k-means++ ({greedy}) per image", n, sklearn_pp(n)) for n in sorted({1, threads})]

    # (b) same initial centres, tol = 0
    init = kmeans_plus_plus(x, k, torch.Generator().manual_seed(args.seed))
    init_np = init.numpy()

    def ours_from(dtype: torch.dtype | None) -> Callable[[], tuple[np.ndarray, float]]:
        def run() -> tuple[np.ndarray, float]:
            result = batched_kmeans(x, k=k, max_iter=iters, tol=0.0, init=init, distance_dtype=dtype)
            return result.centers.numpy(), result.n_iter.double().mean().item()
        return run

    def sklearn_from(n_threads: int) -> Callable[[], tuple[np.ndarray, float]]:
        return lambda: _sklearn_from(n_threads)

    def _sklearn_from(n_threads: int) -> tuple[np.ndarray, float]:
        with threadpool_limits(n_threads):
            fits = [KMeans(n_clusters=k, init=init_np[i], n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd")
                    .fit(xi) for i, xi in enumerate(x_np)]
        return np.stack([f.cluster_centers_ for f in fits]), float(np.mean([f.n_iter_ for f in fits]))

    cases += [
        Case("b", "ours fp32", threads, ours_from(None), torch_threads(threads)),
        Case("b", "ours bf16 matmuls", threads, ours_from(torch.bfloat16), torch_threads(threads)),
        Case("b", "ours fp32", 1, ours_from(None), torch_threads(1)),
    ] + [Case("b", "sklearn lloyd per image", n, sklearn_from(n)) for n in sorted({1, threads})]
    try:
        import faiss
    except ImportError:
        faiss = None
        print("faiss: not importable, skipped (put a faiss-cpu install on PYTHONPATH to include it)")
    if faiss is not None:
        ours_iters = batched_kmeans(x, k=k, max_iter=iters, tol=0.0, init=init).n_iter.tolist()

        def faiss_from(niters: list[int]) -> Callable[[], tuple[np.ndarray, float]]:
            def run() -> tuple[np.ndarray, float]:
                out = []
                for i, xi in enumerate(x_np):
                    km = faiss.Kmeans(args.dims, k, niter=int(niters[i]), seed=args.seed, min_points_per_centroid=1,
                                      max_points_per_centroid=args.points)
                    km.train(xi, init_centroids=init_np[i])
                    out.append(km.centroids.copy())
                return np.stack(out), float(np.mean(niters))  # faiss always runs niter iterations
            return run

        for n in sorted({1, threads}):
            for label, niters in (("", [iters] * len(x_np)), (", ours' iterations", ours_iters)):
                cases.append(Case("b", f"faiss {faiss.__version__} per image{label}", n, faiss_from(niters),
                                  lambda n=n: faiss.omp_set_num_threads(n)))

    # Warm-up, then interleaved repeats: a load change on the shared machine hits every method.
    for case in cases:
        case.measure()
        case.wall_ms.clear(), case.cpu_ms.clear()
    for _ in range(args.repeats):
        for case in cases:
            case.measure()
    torch.set_num_threads(threads)
    rows = [{"part": c.part, "method": c.method, "threads": c.threads,
             "ms": round(statistics.median(c.wall_ms), 1), "min_ms": round(min(c.wall_ms), 1),
             "cpu_ms": round(statistics.median(c.cpu_ms), 1), "mean_iter": round(c.mean_iter, 2),
             "inertia": round(inertia_of(x_np, c.centers), 3)} for c in cases]

    base = {part: next(r["ms"] for r in rows if r["part"] == part and r["method"].startswith("ours"))
            for part in ("a", "b")}
    print(f"K-Means {args.images} images x {args.points} points x {args.dims} dims, K={k}, {iters} iterations; "
          f"median of {args.repeats}; torch {torch.__version__}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'part':4} {'method':46} {'thr':>3} {'median ms':>9} {'min ms':>7} {'cpu ms':>7} "
          f"{'/ ours':>6} {'iters':>5} {'inertia':>10}")
    for r in rows:
        r["vs_ours"] = round(r["ms"] / base[r["part"]], 2)
        print(f"{r['part']:4} {r['method']:46} {r['threads']:>3} {r['ms']:>9.1f} {r['min_ms']:>7.1f} "
              f"{r['cpu_ms']:>7.1f} {r['vs_ours']:>6.2f} {r['mean_iter']:>5.2f} {r['inertia']:>10.3f}")
    print(json.dumps({"benchmark": "kmeans", "images": args.images, "points": args.points, "dims": args.dims,
                      "k": k, "iters": iters, "rows": rows}))


if __name__ == "__main__":
    main()
