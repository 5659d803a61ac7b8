"""Training-step throughput of the tiny S-Seg model (CPU): forward + criterion + backward + AdamW.

Usage: .venv/bin/python benchmarks/bench_model_step.py [--batch 32] [--threads 2] [--steps 10] [--bf16]
Prints a JSON line per configuration (median over timed steps; warm-up steps excluded).
OMP_WAIT_POLICY defaults to PASSIVE here (set before torch loads): with spinning OpenMP threads
(OMP_WAIT_POLICY=ACTIVE / unset) a loaded 2-core box ran this step ~30x slower (1.2 vs 40 img/s,
back to back at load average ~10).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch initialises OpenMP

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

import sseg  # noqa: F401
from sseg.losses import SSegCriterion, pseudo_masks_to_targets
from sseg.models import SSegModel, query_collapse, tiny_model_config, tokenize


def blocky_segments(batch: int, size: int, num_segments: int, generator: torch.Generator) -> torch.Tensor:
    """Random label maps made of 8x8-pixel blocks (a stand-in for K-Means pseudo-masks)."""
    coarse = torch.randint(0, num_segments, (batch, size // 8, size // 8), generator=generator)
    return coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)


def measure(source: str, batch: int, steps: int, warmup: int, autocast_bf16: bool) -> dict:
    generator = torch.Generator().manual_seed(0)
    cfg = tiny_model_config(mask_feature_source=source)
    model = SSegModel(cfg)
    criterion = SSegCriterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=generator)
    tokens = tokenize([f"a photo of object number {i}" for i in range(batch)], cfg.context_length)
    targets = pseudo_masks_to_targets(blocky_segments(batch, cfg.image_size, 8, generator), 8)
    times, forward_times = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
            outputs = model(images, tokens)
            losses = criterion(outputs, targets)
        forward_done = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        model.clamp_logit_scale_()
        if step >= warmup:
            times.append(time.perf_counter() - start)
            forward_times.append(forward_done - start)
    step_s = statistics.median(times)
    return {
        "mask_feature_source": source, "batch": batch, "image_size": cfg.image_size,
        "bf16_autocast": autocast_bf16, "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "step_s_median": round(step_s, 4), "forward_plus_loss_s_median": round(statistics.median(forward_times), 4),
        "images_per_s": round(batch / step_s, 1),
        "query_collapse": round(query_collapse(outputs["mask_features"].detach()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also measure bf16 autocast")
    parser.add_argument("--source", choices=["query", "pooled", "both"], default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for source in ("query", "pooled") if args.source == "both" else (args.source,):
        for bf16 in ((False, True) if args.bf16 else (False,)):
            print(json.dumps(measure(source, args.batch, args.steps, args.warmup, bf16)), flush=True)


if __name__ == "__main__":
    main()
