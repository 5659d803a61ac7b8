"""Throughput of the procedural world on ONE core: render, render+JPEG, and whole shard writing.

    .venv/bin/python benchmarks/bench_world.py [--sizes 64 128 224] [--images 300] [--repeats 5]

Pins the process to one CPU and one thread, then reports the median images/s over repeats, both per
wall-clock second and per CPU second of this process (the latter is what the code costs when the
machine is shared and wall-clock figures are noisy). Prints a table and a JSON line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import sseg  # noqa: E402,F401
import torch  # noqa: E402

from sseg.data.shards import encode_jpeg  # noqa: E402
from sseg.world import WorldConfig, generate_world, render_sample  # noqa: E402


def _rates(images: int, fn) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def bench_size(size: int, images: int, repeats: int) -> dict[str, float]:
    config = WorldConfig(image_size=size, num_train=images, shard_size=max(1, images // 2), num_val=0, num_labeled_train=0)
    render_sample(0, 0, config)  # warm caches (coordinate grids, interpolation matrices)

    def render() -> None:
        for i in range(images):
            render_sample(0, i, config)

    def render_encode() -> None:
        for i in range(images):
            encode_jpeg(render_sample(0, i, config).image, config.jpeg_quality)

    def write_shards() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            generate_world(Path(tmp) / "w", config)

    result: dict[str, float] = {"image_size": size}
    for name, fn in (("render", render), ("render_jpeg", render_encode), ("write_shards", write_shards)):
        runs = [_rates(images, fn) for _ in range(repeats)]
        result[f"{name}_img_per_s"] = round(statistics.median(r[0] for r in runs), 1)
        result[f"{name}_img_per_cpu_s"] = round(statistics.median(r[1] for r in runs), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    rows = [bench_size(size, args.images, args.repeats) for size in args.sizes]
    print(f"images/s on 1 core, median of {args.repeats} runs of {args.images} images; "
          "wall clock (cpu time of this process, robust to other load)")
    print(f"{'size':>6} {'render':>16} {'render+jpeg':>16} {'write shards':>16}")
    for row in rows:
        cells = [f"{row[f'{n}_img_per_s']:.0f} ({row[f'{n}_img_per_cpu_s']:.0f})"
                 for n in ("render", "render_jpeg", "write_shards")]
        print(f"{row['image_size']:>6} " + " ".join(f"{c:>16}" for c in cells))
    print(json.dumps({"benchmark": "world", "images": args.images, "repeats": args.repeats, "results": rows}))


if __name__ == "__main__":
    main()
