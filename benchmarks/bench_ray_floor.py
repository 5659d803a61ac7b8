"""The floor of one training launch on this machine: Ray's own work, with no sseg model, data or loss.

Every end-to-end test and every job runs the same Ray shape: a Ray Train ``TorchTrainer`` of one CPU worker
fed by a Ray Data dataset (the shard split that Ray Train makes), then an evaluation through a Ray Data
actor pool. This runs that shape empty — the worker iterates over a 96-row in-memory dataset and does
nothing with it, the evaluation actor imports torch and returns its batch — and reports, per phase, the
wall seconds and the CPU seconds of the whole machine (``/proc/stat``: Ray's work happens in its other
processes) and the number of processes started. What a test or job costs above this is sseg's.

Phases: ``imports`` (ray, ray.train.torch, ray.data in this process), ``ray_init`` (a local instance of
``--cpus`` CPUs, no dashboard: as the tests' session Ray), ``fit_1`` / ``fit_2`` (two fits in that instance:
the first also starts Ray Data's per-cluster actors), ``actor_map`` (one actor-pool map over 8 rows),
``shutdown``. Run it on an idle machine: the CPU figures are system-wide.

    python benchmarks/bench_ray_floor.py [--cpus 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every state but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pids() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


class Phases:
    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self._t, self._cpu, self._pids = time.perf_counter(), busy_cpu_s(), pids()

    def mark(self, name: str) -> None:
        t, cpu, now = time.perf_counter(), busy_cpu_s(), pids()
        self.rows[name] = {"wall_s": round(t - self._t, 2), "cpu_s": round(cpu - self._cpu, 2),
                           "new_processes": len(now - self._pids)}
        self._t, self._cpu, self._pids = t, cpu, now | self._pids


def empty_loop(config: dict) -> None:
    import ray.train

    rows = sum(len(batch["id"]) for batch in
               ray.train.get_dataset_shard("train").iter_batches(batch_size=16, batch_format="numpy"))
    if rows != 96:
        raise RuntimeError(f"the worker read {rows} of 96 rows")
    ray.train.report({"rows": rows})


class TorchIdentity:
    """An evaluation actor's shape: imports torch when it starts, returns its batch."""

    def __init__(self) -> None:
        import torch  # noqa: F401

    def __call__(self, batch: dict) -> dict:
        return batch


def run_once(cpus: int, storage: Path) -> dict:
    phases = Phases()
    import ray
    import ray.data
    import ray.train.torch
    from ray.train import RunConfig, ScalingConfig

    phases.mark("imports")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    phases.mark("ray_init")
    for fit in (1, 2):
        trainer = ray.train.torch.TorchTrainer(
            empty_loop, scaling_config=ScalingConfig(num_workers=1, use_gpu=False),
            run_config=RunConfig(name=f"floor-{fit}-{time.time_ns()}", storage_path=str(storage)),
            datasets={"train": ray.data.range(96)})
        trainer.fit()
        phases.mark(f"fit_{fit}")
    out = ray.data.range(8).map_batches(TorchIdentity, batch_size=4, compute=ray.data.ActorPoolStrategy(size=1),
                                        num_cpus=1).take_all()
    assert len(out) == 8
    phases.mark("actor_map")
    ray.shutdown()
    phases.mark("shutdown")
    return phases.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one repeat, in this process
    args = parser.parse_args()
    if args.once:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sseg-floor-") as tmp:
            print(json.dumps(run_once(args.cpus, Path(tmp))), flush=True)
        return
    import subprocess

    runs = []
    for repeat in range(args.repeats):  # each repeat a fresh process: imports are part of the floor
        proc = subprocess.run([sys.executable, __file__, "--once", "--cpus", str(args.cpus)], capture_output=True,
                              text=True, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
        if proc.returncode != 0:
            raise SystemExit(f"repeat {repeat} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(row)
        print(json.dumps({"repeat": repeat, **row}), flush=True)
    summary = {phase: {key: round(statistics.median(r[phase][key] for r in runs), 2) for key in runs[0][phase]}
               for phase in runs[0]}
    print(json.dumps({"benchmark": "ray_floor", "cpus": args.cpus, "repeats": len(runs),
                      "load": round(os.getloadavg()[0], 2), "phases": summary}))


if __name__ == "__main__":
    main()
