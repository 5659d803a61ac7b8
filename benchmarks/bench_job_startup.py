"""Where a pretraining job's start-up goes: one Ray instance, several Ray stages (issue 25).

Runs ``jobs/pretrain.py`` (default: the tiny config in a fresh working directory, so the pseudo-mask cache,
training and evaluation all run) as a subprocess, stamps every output line with the seconds since launch and
cuts the run into phases at the lines each stage prints:

    imports        launch → "starting a local Ray instance"
    ray_init       → "Started a local Ray instance" (once per job)
    cache          → "pseudo-mask cache built" (Ray Data: actor start-up + the work; skipped when cached)
    mlflow         → the "[sseg] run …" line (run creation, parameters, lineage)
    train_controller → Ray Train's controller asks for the worker group (controller actor start-up)
    train_workers  → "Started training worker group" (worker processes start, import, process group)
    train_startup  → the first "[sseg] step" line (in the worker: the step builds the model, the training
                     dataset's first execution, the first steps)
    train_rest     → the last "[sseg] step" line
    evaluation     → the result JSON line (evaluation through Ray Data, checkpoint, logging)
    shutdown       → process exit

Ray Data's own "execution finished in X seconds" figures are reported beside them. Each repeat is a fresh
process and a fresh Ray instance.

    python benchmarks/bench_job_startup.py [--repeats 3] [-- extra job overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MARKS = [  # (phase that ends at this line, pattern)
    ("imports", re.compile(r"starting a local Ray instance")),
    ("ray_init", re.compile(r"Started a local Ray instance")),
    ("cache", re.compile(r"pseudo-mask cache (built|complete|up to date)|already in the cache, 0 to process")),
    ("mlflow", re.compile(r"\[sseg\] run \S+: ")),
    ("train_controller", re.compile(r"Attempting to start training worker group")),
    ("train_workers", re.compile(r"Started training worker group")),
    ("train_startup", re.compile(r"\[sseg\] step \d+/\d+")),
]
STEP = re.compile(r"\[sseg\] step (\d+)/(\d+)")
RAY_DATA = re.compile(r"Dataset (\w+?)_\w+ execution finished in ([\d.]+) seconds")


def stamped_run(cmd: list[str], cwd: Path, env: dict) -> tuple[list[tuple[float, str]], int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines = [(time.perf_counter() - start, line.rstrip()) for line in proc.stdout]
    code = proc.wait()
    lines.append((time.perf_counter() - start, "<exit>"))
    return lines, code


def phases(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds per phase (see the module docstring); a phase whose line never came is left out."""
    marks: dict[str, float] = {}
    last_step = None
    result = None
    ray_data: dict[str, float] = {}
    for t, line in lines:
        for name, pattern in MARKS:
            if name not in marks and pattern.search(line):
                marks[name] = t
        if STEP.search(line):
            last_step = t
        if line.startswith("{") and '"mlflow_run_id"' in line:
            result = t
        found = RAY_DATA.search(line)
        if found:
            key = f"ray_data.{found.group(1)}"
            ray_data[key] = ray_data.get(key, 0.0) + float(found.group(2))
    ends = [(name, marks[name]) for name, _ in MARKS if name in marks]
    if last_step is not None:
        ends.append(("train_rest", last_step))
    if result is not None:
        ends.append(("evaluation", result))
    ends.append(("shutdown", lines[-1][0]))
    out, previous = {}, 0.0
    for name, t in ends:
        out[name] = round(t - previous, 2)
        previous = t
    out["total"] = round(lines[-1][0], 2)
    out.update({k: round(v, 2) for k, v in ray_data.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    parser.add_argument("--log", type=Path, help="write the stamped lines of the last repeat here")
    parser.add_argument("overrides", nargs="*", help="extra job overrides (after --)")
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="sseg-startup-") as tmp:
            work = Path(tmp)
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", SSEG_PROGRESS_BARS="0",
                       PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE")
            cmd = [sys.executable, str(ROOT / "jobs" / "pretrain.py"), "--config", args.config,
                   "eval.labeled_split=null", "ray.num_cpus=2", f"world_dir={work / 'world'}",
                   f"data.shards={work / 'world' / 'shards'}", f"cache_dir={work / 'cache'}", *args.overrides]
            lines, code = stamped_run(cmd, work, env)
        if code != 0:
            tail = "\n".join(line for _, line in lines[-15:])
            raise SystemExit(f"job failed (exit {code}):\n{tail}")
        row = phases(lines)
        runs.append(row)
        print(json.dumps({"repeat": repeat, **row}), flush=True)
        if args.log:
            args.log.write_text("\n".join(f"{t:8.2f} {line}" for t, line in lines) + "\n")
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    summary = {k: {"median": round(statistics.median(r[k] for r in runs), 2),
                   "min": min(r[k] for r in runs), "max": max(r[k] for r in runs)} for k in keys}
    print(json.dumps({"benchmark": "job_startup", "repeats": len(runs), "load": round(os.getloadavg()[0], 2),
                      "phases": summary}))


if __name__ == "__main__":
    main()
