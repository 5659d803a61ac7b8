"""The embedded demo over several training seeds: mean and spread of open-vocabulary mIoU.

Each seed is one full `python jobs/pretrain.py train.seed=S` run (same world, same pseudo-mask cache).

    python benchmarks/bench_demo_seeds.py --seeds 0 1 2 [extra overrides...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("miou", "miou_things", "miou_stuff", "things_iou_ge_0.1", "miou_synonyms", "untrained_miou", "constant_class_miou", "mask_quality_miou", "retrieval_i2t_top1",
        "final_query_collapse", "train_images_per_s", "train_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        proc = subprocess.run([sys.executable, str(ROOT / "jobs/pretrain.py"), f"train.seed={seed}",
                               f"tracking.run_name=demo-seed{seed}", *args.overrides],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"seed {seed} failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append({"seed": seed, **{k: result.get(k) for k in KEYS}})
        print(json.dumps(results[-1]), flush=True)
    summary: dict = {"seeds": args.seeds}
    for key in ("miou", "miou_things", "miou_synonyms"):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            summary.update({f"{key}_mean": statistics.mean(values),
                            f"{key}_stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                            f"{key}_min": min(values), f"{key}_max": max(values)})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
