"""Faults injected from the test side through the training loop's callbacks (run in Ray workers)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FAULT_STEP = 3


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of the checkpoints Ray Train has persisted under a run directory."""
    from sseg.checkpoints import CHECKPOINT_FILE, load_checkpoint

    steps = []
    for path in Path(run_dir).glob(f"checkpoint_*/{CHECKPOINT_FILE}"):
        try:
            steps.append(int(load_checkpoint(path)["step"]))
        except Exception:  # noqa: BLE001 - one being written or deleted right now
            continue
    return sorted(steps)


def exit_once_at_step_3(event: dict) -> None:
    """The rank-0 worker process dies abruptly (no cleanup) the first time it finishes step 3, once Ray
    Train's controller has had the time to register the step-2 checkpoint (it does when it next polls the
    workers; a restart by Ray Train resumes from what it registered). The marker file records the step and
    the checkpoints on disk at that moment (what a resume must use)."""
    marker = Path(event["run_dir"]) / "fault_injected"
    if event["rank"] == 0 and event["step"] == FAULT_STEP and not marker.exists():
        time.sleep(float(os.environ.get("SSEG_TEST_FAULT_DELAY_S", "5")))
        marker.write_text(json.dumps({"step": event["step"],
                                      "checkpoint_steps": checkpoint_steps(event["run_dir"])}))
        print(f"[test] fault injection: worker exits after step {event['step']}", flush=True)
        os._exit(1)


def record_node(event: dict) -> None:
    """Each worker notes, once per process, the Ray node it runs on: ``<run_dir>/nodes/<rank>-<pid>``
    holds the node id (the multi-node test checks the workers sat on different raylets)."""
    import ray

    marker = Path(event["run_dir"]) / "nodes" / f"{event['rank']}-{os.getpid()}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(ray.get_runtime_context().get_node_id())


def data_error_at_step_3(event: dict) -> None:
    """Every worker raises a deterministic DataError after step 3, noting each attempt in
    ``<run_dir>/data_error_attempts`` (the failure policy must not retry it)."""
    from sseg.errors import DataError

    if event["step"] == FAULT_STEP:
        with (Path(event["run_dir"]) / "data_error_attempts").open("a") as f:
            f.write(f"{event['rank']}\n")
        raise DataError("bad sample in shard 7 (a test fault)")
