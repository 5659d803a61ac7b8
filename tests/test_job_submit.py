"""`ray job submit` of the tiny pretraining, then of the tiny SemiVL run on it,
against one local head started by scripts/local_cluster.sh for the module; the runs land on the cluster's
MLflow tracking server, linked."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """One head + MLflow server for the module's submissions (starting one costs ~30 s on 2 cores)."""
    tmp_path = tmp_path_factory.mktemp("local_cluster")
    env = dict(os.environ, SSEG_CLUSTER_DIR=str(tmp_path / "cluster"), RAY_PORT=str(_free_port()),
               DASHBOARD_PORT=str(_free_port()), MLFLOW_PORT=str(_free_port()), NUM_CPUS="2",
               RAY_TEMP_DIR=str(Path("/tmp") / f"ray-sseg-{os.getpid()}"))
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    start = subprocess.run(["bash", str(ROOT / "scripts/local_cluster.sh"), "start"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert start.returncode == 0, start.stderr[-2000:]
    for line in start.stdout.splitlines():  # export NAME=value lines
        if line.startswith("export "):
            name, value = line[len("export "):].split("=", 1)
            env[name] = value.strip("'\"")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/local_cluster.sh"), "stop"], env=env,
                       capture_output=True, text=True, timeout=120)
        shutil.rmtree(env["RAY_TEMP_DIR"], ignore_errors=True)


def test_submit_tiny_pretrain_then_semivl_from_it_and_find_their_runs(local_cluster):
    """The tiny pretraining, then the tiny SemiVL run with it as its VLM, both through `ray job submit`; the
    second finds the first's checkpoint on the cluster's MLflow and records it as its parent. (One follow-up
    stage stands for all: every job joins the cluster and finds its parent the same way; S-Seg+, TUSS and
    TagCLIP have their own end-to-end tests.)"""
    env = local_cluster
    ray = str(ROOT / ".venv" / "bin" / "ray") if (ROOT / ".venv/bin/ray").exists() else "ray"
    proc = subprocess.run(
        [ray, "job", "submit", "--address", env["RAY_ADDRESS"], "--working-dir", ".", "--",
         # no evaluation here: the SemiVL submission below evaluates on the cluster; pooled mask features,
         # what an S-Seg VLM needs to be SemiVL's backbone
         "python", "jobs/pretrain.py", "--config", "configs/tiny.yaml", "eval.labeled_split=null",
         "model.mask_feature_source=pooled", "tracking.run_name=submitted"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    json_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(json_lines[-1])
    assert result["steps"] == 4

    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.run_name == "submitted" and run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "4" and "train.loss" in run.data.metrics
    assert client.get_experiment(run.info.experiment_id).name == "sseg-pretrain"

    # the next stage on the same cluster: SemiVL on that run's VLM, its lineage on the cluster's MLflow
    proc = subprocess.run(
        [ray, "job", "submit", "--address", env["RAY_ADDRESS"], "--working-dir", ".", "--",
         "python", "jobs/semivl.py", "--config", "configs/semivl_tiny.yaml",
         f"vlm.checkpoint={result['mlflow_run_id']}", "components.vl_init=true",
         "tracking.run_name=submitted-semivl"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    semivl = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert semivl["steps"] == 2 and 0.0 <= semivl["miou"] <= 1.0
    run = client.get_run(semivl["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["sseg.stage"] == "semivl"
    assert run.data.tags["sseg.parent_run_id"] == result["mlflow_run_id"]
    assert client.get_experiment(run.info.experiment_id).name == "sseg-semivl"


def test_submit_without_a_cluster_fails_fast():
    port = _free_port()
    ray = str(ROOT / ".venv" / "bin" / "ray") if (ROOT / ".venv/bin/ray").exists() else "ray"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    proc = subprocess.run([ray, "job", "submit", "--address", f"http://127.0.0.1:{port}", "--",
                           "python", "jobs/pretrain.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "127.0.0.1" in proc.stdout + proc.stderr
