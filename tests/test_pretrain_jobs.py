"""``jobs/pretrain.py`` run as a user runs it, in its own process with its own Ray instance and a
temporary MLflow store: the driver of two Ray Train workers on a 2-CPU Ray instance (CPU kept for the data
stages, each line printed once) killed mid-run and ``--resume latest``; a starved data stage stopped by the
stall detector with a message naming it. The jobs share one tiny world and pseudo-mask cache."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fault_hooks import checkpoint_steps

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
JOB = [sys.executable, str(ROOT / "jobs" / "pretrain.py"), "--config", str(ROOT / "configs" / "tiny.yaml"),
       "eval.labeled_split=null", "ray.num_cpus=2"]
PROGRESS = re.compile(r"\[sseg\] step (\d+)/(\d+) loss")


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTEST_CURRENT_TEST")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", SSEG_PROGRESS_BARS="0",
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1",
               # a worker process that takes over 60 s to import (a loaded 2-core machine) is otherwise
               # killed and started again, over and over
               RAY_worker_register_timeout_seconds="600")
    return env


@pytest.fixture()
def world_data(tiny_pretrain_data) -> list[str]:
    """The session's tiny world and pseudo-mask cache (the first job makes them)."""
    return tiny_pretrain_data


def _start(args: list[str], tmp_path: Path, log: Path, world_data: list[str]) -> subprocess.Popen:
    """The job in its own session (process group): the driver and the Ray instance it starts. stdout
    goes to ``log``, stderr to ``log`` + ".err" (Ray may write to stderr after the job's JSON line)."""
    out, err = log.open("w"), Path(f"{log}.err").open("w")
    return subprocess.Popen(JOB + world_data + args, cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=err,
                            start_new_session=True)


def _read(log: Path) -> str:
    """stdout, then stderr, of a job started by :func:`_start`."""
    err = Path(f"{log}.err")
    return log.read_text() + (err.read_text() if err.exists() else "")


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]))
    return table


def _job_processes(proc: subprocess.Popen) -> set[int]:
    """The job's driver, its process group (Ray's head processes) and every descendant (Ray starts its
    workers in process groups of their own)."""
    table = _processes()
    mine = {pid for pid, (_, pgid) in table.items() if pgid == proc.pid} | {proc.pid}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in table.items() if ppid in mine} - mine
        grew = bool(more)
        mine |= more
    return {pid for pid in mine if pid in table}


def _kill_group(proc: subprocess.Popen) -> set[int]:
    """SIGKILL the job: its process group and its descendants (only what this test started); wait until
    they are gone. Returns the pids that would not go."""
    pids = _job_processes(proc)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.time() + 30
    while time.time() < deadline:
        alive = pids & set(_processes())
        if not alive:
            return set()
        time.sleep(0.5)
    return alive


def _finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        pytest.fail(f"the job did not finish in {timeout:.0f} s:\n{_read(log)[-3000:]}")
    finally:
        _kill_group(proc)  # whatever of its Ray instance outlived the driver
    return _read(log)


def _last_json(log: Path) -> dict:
    """The job's last stdout line, which must be its JSON summary."""
    return json.loads(log.read_text().strip().splitlines()[-1])


def _history(client, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted(((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)),
                  key=lambda m: (m[2], m[0]))


def test_driver_of_two_workers_killed_mid_run_resumes_with_resume_latest_in_the_same_mlflow_run(tmp_path,
                                                                                               world_data,
                                                                                               new_mlflow_store):
    """The job with ``train.num_workers=2`` on a 2-CPU Ray instance (a new user's setting that used to hang:
    both workers held one CPU, Ray Data had none; now 0.5 CPU each) killed whole after its first checkpoint,
    then ``--resume latest``: it continues in the same MLflow run, rank 0 alone logs each later step once,
    and every line of the job (the workers' included) shows once."""
    from mlflow.tracking import MlflowClient

    steps = 6  # killed at its first checkpoint (step 2): the resumed run has 4 steps left
    args = [f"train.steps={steps}", "train.log_every=1", "train.checkpoint_every=2", "train.num_workers=2",
            "train.stall_timeout_s=240", "tracking.run_name=killed"]
    run_dir = tmp_path / "runs" / "killed"
    new_mlflow_store(tmp_path / "mlflow.db")  # the store _env names
    first = _start(args, tmp_path, tmp_path / "first.log", world_data)
    try:
        deadline = time.time() + 420
        while not checkpoint_steps(run_dir):
            assert first.poll() is None, f"the job ended before its first checkpoint:\n{_read(tmp_path / 'first.log')[-3000:]}"
            assert time.time() < deadline, "no checkpoint within 420 s"
            time.sleep(0.2)
    finally:
        left = _kill_group(first)  # the whole job: driver, Ray head, controller, training workers
    assert not left
    on_disk = checkpoint_steps(run_dir)
    first_log = _read(tmp_path / "first.log")
    assert '"steps"' not in first_log, "the job finished before it was killed"
    run_id = json.loads((run_dir / "sseg_run.json").read_text())["mlflow_run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "RUNNING"  # the killed driver could not end it
    before = {step for step, _, _ in _history(client, run_id, "train.loss")}

    resume_started_ms = time.time() * 1000
    second = _start(args + ["--resume", "latest"], tmp_path, tmp_path / "second.log", world_data)
    text = _finish(second, tmp_path / "second.log", timeout=480)
    assert second.returncode == 0, text[-3000:]
    assert "2 training workers get 0.5 CPU each, keeping 1 of the cluster's 2 CPU for the data stages" in text
    assert "world_size=2" in text
    result = _last_json(tmp_path / "second.log")
    assert result["mlflow_run_id"] == run_id and result["steps"] == steps

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    resumed = _history(client, run_id, "train.resumed_from_step")
    assert len(resumed) == 1, resumed
    resumed_step = resumed[0][0]
    assert resumed[0][1] == resumed_step and resumed_step in on_disk  # a checkpoint the killed run wrote
    assert resumed_step >= 2 and f"resumed from checkpoint at step {resumed_step}" in text
    losses = _history(client, run_id, "train.loss")
    after = [step for step, _, ts in losses if ts >= resume_started_ms]
    # the resumed job logs every step after the checkpoint, once, in order (rank 0 only); nothing up to the
    # checkpoint
    assert after == list(range(resumed_step + 1, steps + 1))
    # the killed job had logged every step up to the checkpoint, each once
    upto = [step for step, _, ts in losses if ts < resume_started_ms and step <= resumed_step]
    assert upto == list(range(1, resumed_step + 1)) and set(range(1, resumed_step + 1)) <= before
    # each progress line of the resumed job printed once (Ray Train's print patch used to double it)
    lines = [m.group(0) for m in PROGRESS.finditer(text)]
    assert len(lines) == steps - resumed_step and len(set(lines)) == len(lines), lines
    for line in text.splitlines():  # every [sseg] line of the job, including the workers', once
        if "[sseg]" in line:
            body = line[line.index("[sseg]"):]
            assert sum(body in other for other in text.splitlines()) == 1, body


def test_starved_data_stage_is_named_after_the_stall_timeout(tmp_path, world_data, new_mlflow_store):
    """``train.data_cpus=0`` with workers holding every CPU reproduces the old hang: the stall detector
    stops it with one line naming the starved stage and the free CPUs, exit 2."""
    new_mlflow_store(tmp_path / "mlflow.db")  # the store _env names
    # the timeout outlasts the workers' start on a slow machine (2 x 1-CPU workers took > 20 s there to
    # report at all: the detector then rightly said they never started)
    proc = _start(["train.num_workers=2", "train.cpus_per_worker=1", "train.data_cpus=0",
                   "train.stall_timeout_s=40", "tracking.run_name=starved"], tmp_path, tmp_path / "job.log",
                  world_data)
    started = time.time()
    text = _finish(proc, tmp_path / "job.log", timeout=420)
    assert proc.returncode == 2, text[-3000:]
    error = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, text[-3000:]
    assert "no training progress for" in error[0] and "train.stall_timeout_s=40" in error[0]
    assert "data stages feeding training are starved" in error[0]
    assert "Parquet" in error[0] and "MapBatches(CropCachedSamples)" in error[0]  # the stages, by Ray's names
    assert "the cluster has 0 of 2 CPU free" in error[0]
    assert time.time() - started < 400
