"""Faults injected from the test side through the training loop's callbacks (run in Ray workers)."""

from __future__ import annotations

import os
from pathlib import Path

FAULT_STEP = 3


def exit_once_at_step_3(event: dict) -> None:
    """The rank-0 worker process dies abruptly (no cleanup) the first time it finishes step 3."""
    marker = Path(event["run_dir"]) / "fault_injected"
    if event["rank"] == 0 and event["step"] == FAULT_STEP and not marker.exists():
        marker.write_text(str(event["step"]))
        print(f"[test] fault injection: worker exits after step {event['step']}", flush=True)
        os._exit(1)
