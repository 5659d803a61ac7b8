"""The torchvision import fix and the MLflow helpers."""

from __future__ import annotations

import json
import subprocess
import sys

from pipelines.tracking import Tracker, emit_result, generated_run_name, resolve_tracking_uri


def test_torchvision_timm_open_clip_import_in_a_fresh_process():
    code = ("import sseg, torchvision, timm, open_clip; import torchvision.transforms; "
            "print(torchvision.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr


def test_patch_only_when_the_c_extension_fails():
    # In a fresh process: the fix runs on the first `import torchvision`, not on `import sseg`.
    code = ("import sys, sseg; from sseg import _compat; before = _compat._PATCHED; import torchvision; "
            "print(before, _compat._PATCHED, _compat._torchvision_c_extension_loads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    before, patched, loads = proc.stdout.split()
    # Either the extension loads (nothing patched) or it fails and the schemas were declared.
    assert before == "False" and patched == str(loads == "False")


def test_decoding_images_does_not_load_torch():
    """Ray Data's decode workers import the decode stage only: torch (≈ 1 s per fresh worker) stays out."""
    code = ("import sys, numpy as np, pipelines.io.shards as s; "
            "out = s.DecodeSamples(32, 'eval')({'key': ['a'], 'shard': ['x'], 'image': [None], 'caption': ['c'], "
            "'meta': ['{}'], 'error': [None]}); print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False"


def test_the_progress_actor_does_not_load_torch():
    """Every training run starts a progress actor in a process of its own: its module keeps torch out."""
    code = ("import sys; from pipelines.training.progress import ProgressMonitor as M; m = M(); m.beat(0, 1, 'step'); "
            "print(m.snapshot()['workers'][0][:2], 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False" and "(1, 'step')" in proc.stdout


def test_tracker_logs_params_metrics_and_rank_gating(mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = Tracker("sseg-test", run_name="t", tags={"sseg.stage": "pretrain"})
    tracker.log_params({"train.lr": 0.001})
    tracker.log_metrics({"train.loss": 1.5}, step=3)
    tracker.end()
    run = MlflowClient(mlflow_uri).get_run(tracker.run_id)
    assert run.data.params["train.lr"] == "0.001"
    assert run.data.metrics["train.loss"] == 1.5 and run.data.tags["sseg.stage"] == "pretrain"
    assert run.info.status == "FINISHED"
    silent = Tracker("sseg-test", enabled=False)  # rank != 0: every call is a no-op
    silent.log_metrics({"x": 1.0})
    assert silent.run_id is None


def test_default_store_is_local_sqlite(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel.db")
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'rel.db'}"


def test_emit_result_prints_one_json_line(capsys):
    emit_result({"miou": 0.5, "mlflow_run_id": "abc"})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line) == {"miou": 0.5, "mlflow_run_id": "abc"}


def test_generated_run_name_is_readable():
    import time

    moment = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))  # local time, like the name
    assert generated_run_name("pseudo-masks", "dino", now=moment) == "pseudo-masks-dino-20260102-030405"
    assert generated_run_name("evaluate", "", now=moment) == "evaluate-20260102-030405"

