"""Where Ray Data's time goes on one machine: start-up vs steady state (the README's data-plane row).

bench_data.py measures Ray Data end to end for a short job (1000 images) and finds it well below a plain
loader. This splits that time: ray.init, the first tasks on fresh workers, importing the decode module in
a worker, then the same read → decode pipeline executed ``--runs`` times on the one warm Ray instance
(the first execution pays Ray Data's one-time start-up; later ones show the steady state).

    python benchmarks/bench_data_startup.py [--cpus 2] [--runs 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(ROOT / "data/bench_world"))
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    started = time.perf_counter()
    import ray

    from pipelines.io.shards import DecodeSamples, read_shards
    from sseg.world import WorldConfig, ensure_world

    world = ensure_world(args.world, WorldConfig(seed=1, image_size=256, num_train=args.images, num_val=0,
                                                 num_labeled_train=0, shard_size=250))
    shards = [str(p) for p in world.shard_paths]
    imported = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}})
    initialised = time.perf_counter()

    @ray.remote
    def noop() -> int:
        return os.getpid()

    @ray.remote
    def import_decode_module() -> tuple[float, bool]:
        t = time.perf_counter()
        import pipelines.io.shards  # noqa: F401

        return time.perf_counter() - t, "torch" in sys.modules

    t = time.perf_counter()
    ray.get([noop.remote() for _ in range(args.cpus)])
    first_tasks_s = time.perf_counter() - t
    t = time.perf_counter()
    worker_imports = ray.get([import_decode_module.remote() for _ in range(args.cpus)])
    worker_import_s = time.perf_counter() - t

    ray.data.DataContext.get_current().enable_progress_bars = False
    executions = []
    for _ in range(args.runs):
        t = time.perf_counter()
        ds = read_shards(shards).map_batches(DecodeSamples(224, "eval"), batch_size=args.batch,
                                             batch_format="numpy")
        count, first = 0, None
        for batch in ds.iter_batches(batch_size=args.batch, batch_format="numpy", prefetch_batches=4):
            count += len(batch["image"])
            first = first or time.perf_counter() - t
        total = time.perf_counter() - t
        executions.append({"first_batch_s": round(first, 3), "total_s": round(total, 3),
                           "samples_per_s": round(count / total, 1)})
    ray.shutdown()
    print(json.dumps({
        "cpus": args.cpus, "images": args.images, "driver_imports_s": round(imported - started, 3),
        "ray_init_s": round(initialised - imported, 3), "first_tasks_s": round(first_tasks_s, 3),
        "worker_import_decode_module_s": [round(s, 3) for s, _ in worker_imports],
        "worker_imports_torch": all(torch for _, torch in worker_imports),
        "worker_import_wall_s": round(worker_import_s, 3), "executions": executions,
    }))


if __name__ == "__main__":
    main()
