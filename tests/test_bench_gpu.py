"""`make bench-gpu`: the GPU benchmark runs end to end at its --smoke size on CPU and records every row.

Timings are not checked (the machine is shared); the rows, their keys, and the runner's handling of failing
rows and of the time budget are.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu", ROOT / "benchmarks" / "gpu.py")
gpu = importlib.util.module_from_spec(spec)
sys.modules.setdefault("gpu", gpu)
spec.loader.exec_module(gpu)

SMOKE_ROWS = ("pseudo_masks_dino_kmeans", "sseg_pretrain_step[sseg_tiny]", "sseg_pretrain_step[sseg_tiny]+host_prep",
              "sseg_plus_step[sseg_plus_tiny]", "semivl_step[tiny_clip]", "eval_groupvit_sliding[sseg_tiny]",
              "decode_only_dataloader", "feed_dataloader_to_gpu", "pseudo_masks_dino_kmeans_compiled")


def run_smoke(out: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--smoke", "--threads", "2", "--out", str(out),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "gpu_bench.json").read_text())
    table = (out / "gpu_bench.md").read_text()
    assert report["smoke"] is True and report["device"] == "cpu"
    for row in report["rows"]:
        assert set(row) == set(gpu.ROW_KEYS), row["name"]
        assert f"| {row['name']} |" in table
    return report


def check_ok(row: dict) -> None:
    assert row["status"] == "ok", row
    assert row["error"] is None
    assert row["device"].startswith("cpu") and row["dtype"] in ("fp32", "uint8")
    assert isinstance(row["batch"], int) and row["batch"] >= 1
    assert row["images_per_s"] > 0
    assert row["peak_memory_gib"] is None  # CUDA-only measurement


@pytest.mark.timeout(600)
def test_smoke_run_records_every_row(tmp_path: Path) -> None:
    report = run_smoke(tmp_path, "--skip", "feed_ray_data")
    rows = {}
    for row in report["rows"]:
        rows.setdefault(row["name"], []).append(row)
    assert set(SMOKE_ROWS) <= set(rows), sorted(rows)
    for name in SMOKE_ROWS[:-1]:
        for row in rows[name]:
            check_ok(row)
    # the batch search tried more than one size and marked the fastest
    pm = rows["pseudo_masks_dino_kmeans"]
    assert [r["batch"] for r in pm] == [2, 4]
    assert sum(bool(r["extra"].get("best")) for r in pm) == 1
    for row in pm:
        extra = row["extra"]
        assert extra["kmeans_k"] == 8 and 1 <= extra["kmeans_iterations_mean"] <= extra["kmeans_max_iter"]
        assert extra["vit_s_per_batch"] > 0 and extra["kmeans_s_per_batch"] > 0
    assert rows["semivl_step[tiny_clip]"][0]["extra"]["timed_steps"] >= 1
    feed = rows["feed_dataloader_to_gpu"][0]["extra"]
    assert feed["images"] == 16 and feed["workers"] == 1
    compiled = rows["pseudo_masks_dino_kmeans_compiled"][0]
    assert compiled["status"] == "skipped" and compiled["images_per_s"] is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_ray_data_feed(tmp_path: Path) -> None:
    report = run_smoke(tmp_path, "--only", "feed_ray_data")
    (row,) = report["rows"]
    assert row["name"] == "feed_ray_data_to_gpu"
    check_ok(row)
    assert row["extra"]["images"] == 16 and row["extra"]["workers"] == 1


def test_failing_row_is_recorded_and_budget_skips_the_rest(tmp_path: Path, monkeypatch) -> None:
    import time

    def fails(ctx):
        raise ValueError("broken row\nsecond line")

    def works(ctx):
        time.sleep(3.2)
        return [ctx.row("works", batch=1, image_size=8, images_per_s=3.0)]

    monkeypatch.setattr(gpu, "ROWS", [gpu.RowSpec("fails", fails), gpu.RowSpec("works", works),
                                      gpu.RowSpec("late", works)])
    assert gpu.main(["--smoke", "--out", str(tmp_path), "--budget-s", "3.0"]) == 0
    rows = json.loads((tmp_path / "gpu_bench.json").read_text())["rows"]
    assert [(r["name"], r["status"]) for r in rows] == [("fails", "error"), ("works", "ok"), ("late", "skipped")]
    assert rows[0]["error"] == "ValueError: broken row"
    assert "budget" in rows[2]["notes"]
    assert gpu.main(["--smoke", "--out", str(tmp_path), "--only", "nonexistent"]) == 2
