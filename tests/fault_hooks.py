"""Faults injected from the test side through the training loop's callbacks (run in Ray workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

FAULT_STEP = 3


def exit_once_at_step_3(event: dict) -> None:
    """The rank-0 worker process dies abruptly (no cleanup) the first time it finishes step 3."""
    marker = Path(event["run_dir"]) / "fault_injected"
    if event["rank"] == 0 and event["step"] == FAULT_STEP and not marker.exists():
        marker.write_text(str(event["step"]))
        # Ray Train's controller registers a reported checkpoint when it next polls the workers; give it
        # that poll, so the test checks our resume and not that race
        time.sleep(float(os.environ.get("SSEG_TEST_FAULT_DELAY_S", "5")))
        print(f"[test] fault injection: worker exits after step {event['step']}", flush=True)
        os._exit(1)
