"""Data-plane throughput: a plain single-process webdataset loop vs our Ray Data pipeline.

Both decode JPEGs with PIL, resize to 224 and normalise to float tensors; Ray Data runs decode/resize in
parallel tasks (pipelines.io.shards.DecodeSamples) and the consumer normalises. Reports steady-state samples/s
(after the first batch) and time to first batch.

    python benchmarks/bench_data.py --images 4000 --image-size 256
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sseg  # noqa: E402,F401
from sseg.data.transforms import to_normalized_tensor  # noqa: E402


def plain_loop(shards: list[str], size: int, batch: int) -> dict:
    import webdataset as wds
    from PIL import Image

    from sseg.data.transforms import center_square

    started = time.perf_counter()
    first = None
    count = 0
    images = []
    for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
        image = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
        images.append(center_square(image, size))
        if len(images) == batch:
            to_normalized_tensor(np.stack(images))
            images = []
            count += batch
            if first is None:
                first = time.perf_counter()
                first_count = count
    end = time.perf_counter()
    return {"samples_per_s": (count - first_count) / (end - first), "first_batch_s": first - started,
            "samples": count}


def ray_loop(shards: list[str], size: int, batch: int) -> dict:
    import ray

    from pipelines.io.shards import DecodeSamples, read_shards

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    startup = time.perf_counter() - t0
    results = []
    for _ in range(2):  # first pass warms worker processes; the second is the steady state
        started = time.perf_counter()
        ds = read_shards(shards).map_batches(DecodeSamples(size, "eval"), batch_size=batch,
                                             batch_format="numpy")
        first = None
        count = 0
        for b in ds.iter_batches(batch_size=batch, batch_format="numpy", drop_last=False,
                                 prefetch_batches=4):
            to_normalized_tensor(b["image"])
            count += len(b["image"])
            if first is None:
                first = time.perf_counter()
                first_count = count
        end = time.perf_counter()
        results.append({"samples_per_s": (count - first_count) / (end - first),
                        "first_batch_s": first - started, "samples": count})
    ray.shutdown()
    return {**results[-1], "cold_first_batch_s": results[0]["first_batch_s"] + startup,
            "ray_startup_s": startup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(ROOT / "data/bench_world"))
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from sseg.data.world import WorldConfig, ensure_world

    summary = ensure_world(args.world, WorldConfig(seed=1, image_size=args.image_size, num_train=args.images,
                                                   num_val=0, num_labeled_train=0, shard_size=250))
    shards = [str(p) for p in summary.shard_paths]
    torch.set_num_threads(1)
    plain = [plain_loop(shards, 224, args.batch) for _ in range(args.repeats)]
    ray_result = ray_loop(shards, 224, args.batch)
    plain_rate = float(np.median([p["samples_per_s"] for p in plain]))
    print(json.dumps({"plain": plain, "ray": ray_result, "plain_median_samples_per_s": plain_rate,
                      "ray_vs_plain": ray_result["samples_per_s"] / plain_rate}, indent=1))


if __name__ == "__main__":
    main()
