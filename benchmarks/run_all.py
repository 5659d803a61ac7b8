"""`make bench`: every throughput benchmark, each repeated, with the median and range of its numbers.

Each benchmark runs ``--repeats`` times (default 3) as its own process; the numbers of its last JSON
line are collected per key path and reported as median [min, max]. Learning results (the demo over
seeds, the world probes) are not here: they have their own commands in the README.

    python benchmarks/run_all.py [--repeats 3] [--only kmeans world ...]
    python benchmarks/run_all.py --only memory --repeats 1   # 100k samples, object store capped at 1 GiB
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = {
    "world": ["benchmarks/bench_world.py"],
    "kmeans": ["benchmarks/bench_kmeans.py"],
    "model_step": ["benchmarks/bench_model_step.py"],
    "data": ["benchmarks/bench_data.py", "--images", "1000", "--repeats", "1"],
    "data_startup": ["benchmarks/bench_data_startup.py"],
    "train_loop": ["benchmarks/bench_train_loop.py", "--mode", "both", "--steps", "40"],
    "eval": ["benchmarks/bench_eval.py"],
    # S-Seg+'s student step (UperNet-ViT, 14 classes); its pseudo-labelling benchmark needs a trained
    # checkpoint (`bench_self_train.py pseudo --checkpoint …`) and is run by hand
    "self_train_step": ["benchmarks/bench_self_train.py", "train", "--classes", "14"],
    # ~11 min per repeat on 2 cores: only when named (--only memory)
    "memory": ["benchmarks/bench_memory.py", "--samples", "100000", "--object-store-gib", "1"],
}
LONG = {"memory"}


def numbers(value, prefix: str = "") -> dict[str, float]:
    """Flatten a JSON value to {key.path: number} (lists indexed)."""
    out: dict[str, float] = {}
    if isinstance(value, bool):
        return out
    if isinstance(value, (int, float)):
        out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            out.update(numbers(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.update(numbers(item, f"{prefix}[{index}]"))
    return out


def last_json(stdout: str) -> dict:
    """The last JSON object printed (benchmarks may pretty-print it over several lines)."""
    text = stdout.strip()
    start = text.rfind("\n{")
    for candidate in ([text[start + 1:]] if start >= 0 else []) + [text[text.find("{"):]]:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("no JSON result in the benchmark's output")


def summarise(runs: list[dict]) -> dict[str, str]:
    per_key: dict[str, list[float]] = {}
    for run in runs:
        for key, value in numbers(run).items():
            per_key.setdefault(key, []).append(value)
    return {key: f"{statistics.median(v):.4g} [{min(v):.4g}, {max(v):.4g}]"
            for key, v in per_key.items() if len(v) == len(runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    for name in args.only or [n for n in BENCHMARKS if n not in LONG]:
        runs = []
        for repeat in range(args.repeats):
            proc = subprocess.run([sys.executable, *BENCHMARKS[name]], cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                print(json.dumps({"benchmark": name, "repeat": repeat, "error": proc.stderr.strip()[-500:]}))
                break
            runs.append(last_json(proc.stdout))
        if runs:
            print(json.dumps({"benchmark": name, "repeats": len(runs), "median_[min,max]": summarise(runs)}),
                  flush=True)


if __name__ == "__main__":
    main()
