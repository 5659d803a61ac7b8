"""Data-plane throughput, fairly: our Ray Data pipeline vs plain Python at equal CPU and equal work.

Every side does the same work per sample: read the tar members (pipelines/io/webdataset_source.py),
decode with EXIF orientation and RGB conversion, resize/centre-crop to 224, extract the caption's words
(pipelines.io.shards.DecodeSamples, the function the pipeline maps) and normalise the batch to a float
tensor. Two pairings of equal CPU:

  1 CPU:  Ray Data on a 1-CPU Ray instance   vs  one plain Python process
  2 CPUs: Ray Data on a 2-CPU Ray instance   vs  a torch DataLoader with 2 worker processes

Each measurement runs end to end, from the first call (ray.init / DataLoader creation included) to the
last sample; the start-up part (ray.init, or the DataLoader's time to its first batch) is also reported
on its own. Every side runs ``--repeats`` times (fresh Ray instance each time): median and range.

    python benchmarks/bench_data.py --images 2000 --repeats 3
"""

from __future__ import annotations

import argparse
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

SIZE = 224


def _shard_batches(shards: list[str], batch: int):
    """Raw rows of the shards as column batches (the pipeline's reader, without Ray)."""
    from pipelines.io.webdataset_source import iterate_shard

    rows: list[dict] = []
    for shard in shards:
        with open(shard, "rb") as stream:
            for row in iterate_shard(stream, shard):
                rows.append(row)
                if len(rows) == batch:
                    yield {k: [r[k] for r in rows] for k in rows[0]}
                    rows = []
    if rows:
        yield {k: [r[k] for r in rows] for k in rows[0]}


def plain_process(shards: list[str], batch: int) -> dict:
    from pipelines.io.shards import DecodeSamples

    started = time.perf_counter()
    decode = DecodeSamples(SIZE, "eval")
    count = 0
    first = None
    for raw in _shard_batches(shards, batch):
        out = decode(raw)
        if len(out["image"]):
            to_normalized_tensor(np.stack(out["image"]))
            count += len(out["image"])
            first = first or time.perf_counter()
    end = time.perf_counter()
    return {"samples": count, "total_s": end - started, "startup_s": first - started,
            "samples_per_s": count / (end - started)}


class _DecodedShards(torch.utils.data.IterableDataset):
    """Shards split across DataLoader workers; each worker yields decoded batches."""

    def __init__(self, shards: list[str], batch: int):
        self.shards, self.batch = shards, batch

    def __iter__(self):
        from pipelines.io.shards import DecodeSamples

        info = torch.utils.data.get_worker_info()
        mine = self.shards if info is None else self.shards[info.id::info.num_workers]
        decode = DecodeSamples(SIZE, "eval")
        for raw in _shard_batches(mine, self.batch):
            out = decode(raw)
            if len(out["image"]):
                yield np.stack(out["image"])


def dataloader(shards: list[str], batch: int, workers: int) -> dict:
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(_DecodedShards(shards, batch), batch_size=None,
                                         num_workers=workers, prefetch_factor=4)
    count = 0
    first = None
    for images in loader:
        to_normalized_tensor(images.numpy())
        count += len(images)
        first = first or time.perf_counter()
    end = time.perf_counter()
    return {"samples": count, "total_s": end - started, "startup_s": first - started,
            "samples_per_s": count / (end - started)}


def ray_data(shards: list[str], batch: int, cpus: int) -> dict:
    import ray

    from pipelines.io.shards import DecodeSamples, read_shards

    started = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_started = time.perf_counter()
    try:
        ds = read_shards(shards).map_batches(DecodeSamples(SIZE, "eval"), batch_size=batch,
                                             batch_format="numpy")
        count = 0
        first = None
        for b in ds.iter_batches(batch_size=batch, batch_format="numpy", drop_last=False,
                                 prefetch_batches=4):
            to_normalized_tensor(b["image"])
            count += len(b["image"])
            first = first or time.perf_counter()
        end = time.perf_counter()
    finally:
        ray.shutdown()
    return {"samples": count, "total_s": end - started, "startup_s": ray_started - started,
            "first_batch_s": first - started, "samples_per_s": count / (end - started),
            "samples_per_s_after_startup": count / (end - ray_started)}


def summary(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(ROOT / "data/bench_world"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from sseg.world import WorldConfig, ensure_world

    world = ensure_world(args.world, WorldConfig(seed=1, image_size=args.image_size, num_train=args.images,
                                                 num_val=0, num_labeled_train=0, shard_size=250))
    shards = [str(p) for p in world.shard_paths]
    torch.set_num_threads(1)
    sides = {
        "plain_1cpu": lambda: plain_process(shards, args.batch),
        "ray_1cpu": lambda: ray_data(shards, args.batch, cpus=1),
        "dataloader_2workers": lambda: dataloader(shards, args.batch, workers=2),
        "ray_2cpu": lambda: ray_data(shards, args.batch, cpus=2),
    }
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for _ in range(args.repeats):  # interleaved, so a load change hits every side alike
        for name, run in sides.items():
            runs[name].append(run())
            print(f"[bench_data] {name}: {runs[name][-1]['samples_per_s']:.0f} samples/s end to end",
                  file=sys.stderr, flush=True)
    result = {name: summary(r) for name, r in runs.items()}
    rate = {name: result[name]["samples_per_s"]["median"] for name in result}
    result["ray_vs_plain_1cpu"] = rate["ray_1cpu"] / rate["plain_1cpu"]
    result["ray_vs_dataloader_2cpu"] = rate["ray_2cpu"] / rate["dataloader_2workers"]
    result["images"] = world.config.num_train
    result["repeats"] = args.repeats
    print(json.dumps(result))


if __name__ == "__main__":
    main()
