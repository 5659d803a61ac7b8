"""The job start-up benchmark cuts a stamped job log into phases at the lines each stage prints."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_job_startup", ROOT / "benchmarks" / "bench_job_startup.py")
bench = importlib.util.module_from_spec(spec)
sys.modules.setdefault("bench_job_startup", bench)
spec.loader.exec_module(bench)

LOG = [
    (2.0, "INFO pipelines.io.runtime: starting a local Ray instance (2 CPUs)"),
    (5.0, "INFO worker.py:2029 -- Started a local Ray instance. View the dashboard at http://127.0.0.1:8266"),
    (5.5, "INFO pseudo_mask_cache: 3 shards, 0 already in the cache, 3 to process"),
    (9.0, "INFO streaming_executor.py:371 -- Dataset dataset_035A9x_0 execution finished in 3.25 seconds"),
    (9.5, "INFO pipelines.runs.pretrain: pseudo-mask cache built: {'shards_total': 3}"),
    (11.0, "[sseg] run pretrain-1: 4 steps of 16 images on 1 worker(s); MLflow run abc"),
    (20.0, "(SplitCoordinator pid=1) Dataset train_035AA1_0 execution finished in 4.5 seconds"),
    (21.0, "(RayTrainWorker pid=2) [sseg] step 2/4 loss 6.1"),
    (22.5, "(RayTrainWorker pid=2) [sseg] step 4/4 loss 5.1"),
    (26.0, '{"miou": 0.1, "mlflow_run_id": "abc"}'),
    (27.0, "<exit>"),
]


def test_phases_end_at_the_stage_lines_and_add_up_to_the_total():
    out = bench.phases(LOG)
    assert out["imports"] == 2.0 and out["ray_init"] == 3.0 and out["cache"] == 4.5 and out["mlflow"] == 1.5
    assert out["train_startup"] == 10.0 and out["train_rest"] == 1.5 and out["evaluation"] == 3.5
    assert out["shutdown"] == 1.0 and out["total"] == 27.0
    phases = ("imports", "ray_init", "cache", "mlflow", "train_startup", "train_rest", "evaluation", "shutdown")
    assert abs(sum(out[p] for p in phases) - out["total"]) < 1e-9
    assert out["ray_data.dataset"] == 3.25 and out["ray_data.train"] == 4.5


def test_a_cached_run_ends_the_cache_phase_at_the_cache_check():
    log = [(1.0, "starting a local Ray instance"), (3.0, "Started a local Ray instance"),
           (3.2, "3 shards, 3 already in the cache, 0 to process"), (4.0, "[sseg] run r: 1 steps"),
           (6.0, "[sseg] step 1/1 loss 1"), (7.0, "<exit>")]
    out = bench.phases(log)
    assert out["cache"] == 0.2 and out["mlflow"] == 0.8 and out["train_startup"] == 2.0
    assert "evaluation" not in out and out["shutdown"] == 1.0
