"""Label propagation on a kNN graph of mask embeddings: transductive (Zhou et al.'s global-local consistency,
TUSS Sec. 3) and the inductive classifier for new masks (TUSS Eq. 14).

Graph: unit embeddings, ``a_ij = max(x_iᵀ x_j, 0)^γ`` over the ``k`` nearest neighbours of ``i`` (faiss,
exact inner product), zero diagonal, ``W = A + Aᵀ``, ``Ŵ = D^-½ W D^-½``. Transductive: solve
``(I − α Ŵ) Y* = Y`` for every class by conjugate gradient, negatives clipped to 0. Inductive, for a new
mask ``x`` with prior scores ``ŷ(x)``: ``f(x) = ŷ(x) + w Σ_{j ∈ kNN(x)} a_j / √(½ (k̄/k) d_j ‖a‖₁) · Y*_j``,
``a_j = max(xᵀ x_j, 0)^γ`` and ``d_j`` the degree of ``j`` — the degree normalisation keeps dense sub-clusters
(parts of one object) from out-voting the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from sseg.errors import DataError


def _faiss():
    import logging

    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing, every import
    try:
        import faiss
    except ImportError:  # pragma: no cover - a declared dependency
        raise DataError("label propagation needs faiss-cpu (pip install faiss-cpu)") from None
    return faiss


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class KnnGraph:
    embeddings: np.ndarray  # [N, D] unit rows
    neighbours: np.ndarray  # [N, k] int (of each node, itself excluded)
    affinities: np.ndarray  # [N, k] a_ij
    w_hat: sp.csr_matrix  # D^-1/2 (A + Aᵀ) D^-1/2
    degree: np.ndarray  # [N] degrees of W = A + Aᵀ
    gamma: float
    index: object  # faiss index over the embeddings

    @property
    def k(self) -> int:
        return self.neighbours.shape[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Affinities ``[M, k]`` and indices of each query's ``k`` nearest training embeddings."""
        sims, idx = self.index.search(unit_rows(queries), min(k, len(self.embeddings)))
        return affinity(sims, self.gamma), idx


def affinity(similarities: np.ndarray, gamma: float) -> np.ndarray:
    return np.power(np.clip(similarities, 0.0, None), gamma).astype(np.float32)


def knn_graph(x: np.ndarray, k: int, gamma: float = 1.0) -> KnnGraph:
    """The symmetric, degree-normalised kNN graph of the rows of ``x`` (``k`` capped at N − 1)."""
    faiss = _faiss()
    emb = unit_rows(x)
    n = len(emb)
    if n < 2:
        raise DataError(f"a kNN graph needs at least 2 embeddings (got {n})")
    k = min(k, n - 1)
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    sims, idx = index.search(emb, k + 1)
    rows = np.arange(n)[:, None]
    not_self = idx != rows
    # drop each node itself (normally the first hit; with duplicates it may be elsewhere, or the last hit)
    first_self = np.where(not_self.all(axis=1), k, np.argmax(~not_self, axis=1))
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), first_self] = False
    neighbours = idx[keep].reshape(n, k)
    affinities = affinity(sims[keep].reshape(n, k), gamma)
    a = sp.csr_matrix((affinities.ravel(), (np.repeat(np.arange(n), k), neighbours.ravel())), shape=(n, n))
    w = (a + a.T).tocsr()  # zero diagonal: each node's own hit was dropped above
    degree = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    d = sp.diags(inv_sqrt)
    return KnnGraph(emb, neighbours, affinities, (d @ w @ d).tocsr(), degree, gamma, index)


def conjugate_gradient(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, tol: float = 1e-6,
                       max_iter: int = 200) -> tuple[np.ndarray, int]:
    """Solve ``A X = B`` for a symmetric positive-definite ``A`` (given as ``matvec`` on ``[N, C]`` blocks),
    every column on its own (its own step sizes), until each column's residual is below ``tol · ‖b‖``.
    Returns ``X`` and the iterations run."""
    b = np.asarray(b, dtype=np.float64)
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = (r * r).sum(axis=0)
    stop = (tol * np.linalg.norm(b, axis=0)) ** 2
    it = 0
    while it < max_iter and np.any(rs > stop):
        ap = matvec(p)
        pap = (p * ap).sum(axis=0)
        active = (rs > stop) & (pap > 0)
        step = np.divide(rs, pap, out=np.zeros_like(rs), where=active)
        x += step * p
        r -= step * ap
        rs_new = (r * r).sum(axis=0)
        beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=active & (rs > 0))
        p = r + beta * p
        rs = np.where(active, rs_new, 0.0)
        it += 1
    return x, it


def propagate(graph: KnnGraph, y: np.ndarray, alpha: float = 0.9, tol: float = 1e-6,
              max_iter: int = 200) -> np.ndarray:
    """Transductive label propagation: ``(I − α Ŵ) Y* = Y`` per class, negatives clipped → ``Y* [N, C]``."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] != graph.w_hat.shape[0]:
        raise DataError(f"{y.shape[0]} label rows for a graph of {graph.w_hat.shape[0]} masks")
    w_hat = graph.w_hat
    solution, _ = conjugate_gradient(lambda v: v - alpha * (w_hat @ v), y, tol, max_iter)
    return np.clip(solution, 0.0, None).astype(np.float32)


def inductive_votes(graph: KnnGraph, y_star: np.ndarray, queries: np.ndarray, k: int,
                    k_bar: float = 50.0) -> np.ndarray:
    """The degree-normalised votes ``[M, C]`` of new masks' ``k`` nearest training masks' propagated labels."""
    a, idx = graph.search(queries, k)
    l1 = a.sum(axis=1, keepdims=True)
    norm = np.sqrt(0.5 * (k_bar / a.shape[1]) * graph.degree[idx] * l1)
    coeff = np.divide(a, norm, out=np.zeros_like(a), where=norm > 0)
    return np.einsum("mk,mkc->mc", coeff, np.asarray(y_star, dtype=np.float32)[idx])


def inductive_scores(graph: KnnGraph, y_star: np.ndarray, queries: np.ndarray, prior: np.ndarray | None,
                     k: int, k_bar: float = 50.0, weight: float = 1.0) -> np.ndarray:
    """Scores ``[M, C]`` of new masks: the prior plus ``weight`` × :func:`inductive_votes` (``prior=None``: zeros)."""
    votes = inductive_votes(graph, y_star, queries, k, k_bar)
    base = np.zeros_like(votes) if prior is None else np.asarray(prior, dtype=np.float32)
    return base + weight * votes
