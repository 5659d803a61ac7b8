"""Load with bounded memory: stream ≥ 100k samples at 224 px through decode → pseudo-mask stage (Ray Data
actor pool) with the Ray object store capped, and report peak memory, spilled bytes and the sample count.

The input is a small world written at 224 px (``--unique`` images, one or more shards), each shard listed
``--repeats`` times, so the stream carries unique × repeats samples without 100k images on disk; one
shard is cut in half to show that what it loses is counted, not dropped silently (a sample whose
caption was cut off counts as ``missing_caption``; a cut inside a member as ``truncated_shard``). The pipeline is the pseudo-mask cache
job's (pipelines/stages/pseudo_mask_cache.py: read → DecodeSamples(mode="cache") → PseudoMaskStage)
without the Parquet writer; the driver only counts rows.

Reported: rows in (every sample of the listed shards, plus the cut shard's rows as a local read of it
gives them), samples out (rows that left the pseudo-mask stage), skipped by reason, and whether
in == out + skipped; wall time and images/s; peak resident memory of the driver and of all the Ray
processes together (sampled every 0.5 s from /proc); the object store cap and Ray's spilled bytes.

    python benchmarks/bench_memory.py --samples 100000 --object-store-gib 1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sseg  # noqa: E402,F401


def _rss_of(pids) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (the Ray instance this driver started: GCS, raylet, workers)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return sorted(found)


class PeakMemory(threading.Thread):
    """Samples the driver's and the Ray processes' resident memory until stopped."""

    def __init__(self, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.every_s, self.driver_peak, self.ray_peak, self._halt = every_s, 0, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.driver_peak = max(self.driver_peak, _rss_of([os.getpid()]))
            self.ray_peak = max(self.ray_peak, _rss_of(_descendants(os.getpid())))

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _spilled_bytes() -> int:
    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    match = re.search(r"Spilled ([\d.]+) MiB", text)
    return int(float(match.group(1)) * 2**20) if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000, help="at least this many samples streamed")
    parser.add_argument("--unique", type=int, default=1000, help="distinct images written at 224 px")
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--object-store-gib", type=float, default=1.0)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--pixel-stride", type=int, default=4)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import ray

    from pipelines.io import stats
    from pipelines.io.shards import DecodeSamples, read_shards
    from pipelines.stages.pseudo_masks import add_pseudo_masks
    from sseg.world import WorldConfig, generate_world
    from sseg.pseudo_masks.generator import PseudoMaskConfig

    work = Path(args.workdir or tempfile.mkdtemp(prefix="sseg-bench-memory-"))
    shards_dir = work / "world" / "shards"
    if not shards_dir.exists():
        generate_world(work / "world", WorldConfig(image_size=args.size, num_train=args.unique, num_val=0,
                                                   num_labeled_train=0, shard_size=args.shard_size),
                       workers=args.cpus)
    good = sorted(str(p) for p in shards_dir.glob("*.tar"))
    corrupt = work / "corrupt.tar"
    data = Path(good[0]).read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])  # a shard cut in half: its tail is lost and counted
    from pipelines.io.webdataset_source import iterate_shard

    with corrupt.open("rb") as stream:  # what the stream must deliver from the cut shard: rows and markers
        rows = list(iterate_shard(stream, str(corrupt)))
    corrupt_rows = len(rows)  # samples (some may lack a caption) + a marker row when the cut breaks the tar
    per_pass = args.unique
    repeats = max(1, -(-args.samples // per_pass))
    paths = good * repeats + [str(corrupt)]

    ray.init(num_cpus=args.cpus, object_store_memory=int(args.object_store_gib * 2**30),
             include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             _temp_dir=str(work / "ray"),
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    counter = stats.make_counter("bench-memory")
    monitor = PeakMemory()
    monitor.start()
    started = time.perf_counter()
    ds = read_shards(paths)
    ds = ds.map_batches(DecodeSamples(size=args.size, mode="cache", counter=counter), batch_size=64,
                        batch_format="numpy")
    ds = add_pseudo_masks(ds, PseudoMaskConfig(generator="pixel", pixel_stride=args.pixel_stride),
                          num_actors=args.actors, gpus_per_actor=0, batch_size=64)
    out, last_report = 0, time.perf_counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        out += len(batch["key"])
        if time.perf_counter() - last_report > 30:
            last_report = time.perf_counter()
            print(f"[bench] {out} samples, {out / (last_report - started):.0f} img/s, driver RSS "
                  f"{monitor.driver_peak / 2**20:.0f} MiB, Ray RSS {monitor.ray_peak / 2**20:.0f} MiB", flush=True)
    seconds = time.perf_counter() - started
    monitor.stop()
    skipped = stats.fetch(counter)
    spilled = _spilled_bytes()
    ray.shutdown()
    rows_in = per_pass * repeats + corrupt_rows
    result = {
        "rows_in": rows_in, "samples_out": out, "skipped": skipped,
        "skipped_total": int(sum(skipped.values())),
        # nothing lost: every row read either came out as a sample or was counted as a skip by reason
        "nothing_lost": out + int(sum(skipped.values())) == rows_in,
        "seconds": round(seconds, 1), "images_per_s": round(out / seconds, 1),
        "image_size": args.size, "cpus": args.cpus, "object_store_cap_gib": args.object_store_gib,
        # RSS summed over processes counts shared pages (the object store's mapping) once per process
        "driver_peak_rss_mib": round(monitor.driver_peak / 2**20),
        "ray_processes_peak_rss_sum_mib": round(monitor.ray_peak / 2**20),
        "spilled_mib": round(spilled / 2**20, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
