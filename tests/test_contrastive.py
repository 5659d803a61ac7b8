"""ContrastiveLoss vs open_clip's ClipLoss: one process, and two gloo processes on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import sseg  # noqa: F401  (before open_clip)
from sseg.losses import ContrastiveLoss, SSegCriterion

WORLD = 2
PER_RANK = 3
DIM = 5
MODES = [(False, True), (False, False), (True, True), (True, False)]  # (local_loss, gather_with_grad)


def _features(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g), torch.randn(n, DIM, generator=g)


@lru_cache(maxsize=1)
def _open_clip_loss_module():
    """open_clip/loss.py loaded on its own (it only needs torch): the reference ClipLoss without
    importing the whole open_clip package in every spawned worker (keeps the test fast)."""
    package = importlib.util.find_spec("open_clip")
    assert package is not None and package.submodule_search_locations
    path = Path(list(package.submodule_search_locations)[0]) / "loss.py"
    spec = importlib.util.spec_from_file_location("open_clip_loss_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ours_and_clip(images: torch.Tensor, texts: torch.Tensor, scale: float, local_loss: bool,
                   gather_with_grad: bool, rank: int, world: int) -> dict[str, torch.Tensor]:
    ClipLoss = _open_clip_loss_module().ClipLoss

    results = {}
    for name in ("ours", "clip"):
        x = images.clone().requires_grad_(True)
        y = texts.clone().requires_grad_(True)
        if name == "ours":
            loss = ContrastiveLoss(local_loss, gather_with_grad)(x, y, scale).loss
        else:
            loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, rank=rank,
                            world_size=world)(F.normalize(x, dim=-1), F.normalize(y, dim=-1), scale)
        loss.backward()
        results[f"{name}_loss"] = loss.detach()
        results[f"{name}_grad_x"] = x.grad
        results[f"{name}_grad_y"] = y.grad
    return results


def test_single_process_equals_clip_loss() -> None:
    images, texts = _features(0, 6)
    r = _ours_and_clip(images, texts, 14.3, False, True, 0, 1)
    torch.testing.assert_close(r["ours_loss"], r["clip_loss"])
    torch.testing.assert_close(r["ours_grad_x"], r["clip_grad_x"])
    torch.testing.assert_close(r["ours_grad_y"], r["clip_grad_y"])


def test_hand_computed_two_pairs_and_accuracy() -> None:
    images = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    texts = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    scale = 10.0
    # cosines: [[1, 1/√2], [0, 1/√2]]
    s = 1 / math.sqrt(2)
    row = [(-math.log(math.exp(10) / (math.exp(10) + math.exp(10 * s))), -math.log(math.exp(10 * s) / (1 + math.exp(10 * s))))]
    col = [-math.log(math.exp(10) / (math.exp(10) + 1)), -math.log(math.exp(10 * s) / (math.exp(10 * s) * 2))]
    expected = (sum(row[0]) / 2 + sum(col) / 2) / 2
    out = ContrastiveLoss()(images, texts, scale)
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    # image 0 → text 0 (cos 1 > .707) right; image 1 → text 1 (.707 > 0) right
    assert out.accuracy.item() == 1.0
    swapped = ContrastiveLoss()(images, texts.flip(0), scale)
    assert swapped.accuracy.item() == 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        images, texts = _features(0, WORLD * PER_RANK)
        local = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results: dict[str, object] = {}
        for local_loss, gather_with_grad in MODES:
            r = _ours_and_clip(images[local], texts[local], 14.3, local_loss, gather_with_grad, rank, WORLD)
            results[(local_loss, gather_with_grad)] = r
        # the criterion averages the all-reduced mask count: rank 0 has 3 masks, rank 1 has 1
        targets = [torch.ones(3 if rank == 0 else 1, 4, 4, dtype=torch.bool)]
        outputs = {"pred_masks": torch.randn(1, 4, 4, 4), "image_features": images[local][:1],
                   "text_features": texts[local][:1], "logit_scale": torch.tensor(10.0)}
        results["num_masks"] = SSegCriterion()(outputs, targets, world_size=WORLD)["num_masks"]
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_workers_equal_clip_loss_and_global_reference() -> None:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=True)
        per_rank = [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]

    images, texts = _features(0, WORLD * PER_RANK)
    glob = _ours_and_clip(images, texts, 14.3, False, True, 0, 1)  # one process, whole batch
    for rank, results in enumerate(per_rank):
        local = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        for local_loss, gather_with_grad in MODES:
            r = results[(local_loss, gather_with_grad)]
            torch.testing.assert_close(r["ours_loss"], r["clip_loss"])
            torch.testing.assert_close(r["ours_grad_x"], r["clip_grad_x"])
            torch.testing.assert_close(r["ours_grad_y"], r["clip_grad_y"])
            if not local_loss:
                # every rank computes the global loss; gradients reach this rank's features from
                # every rank (×WORLD) only when the gather carries gradients
                torch.testing.assert_close(r["ours_loss"], glob["ours_loss"])
                factor = WORLD if gather_with_grad else 1
                torch.testing.assert_close(r["ours_grad_x"], factor * glob["ours_grad_x"][local])
        assert results["num_masks"].item() == pytest.approx(2.0)  # (3 + 1) / 2
    # local_loss: the mean of the per-rank losses is the global loss
    mean_local = sum(results[(True, True)]["ours_loss"] for results in per_rank) / WORLD
    torch.testing.assert_close(mean_local, glob["ours_loss"])
