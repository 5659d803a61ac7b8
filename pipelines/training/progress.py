"""The progress actor of a training run: the workers tell it each phase change, the driver polls it.

Its own module, free of torch: the actor runs in a process of its own, and importing the training loop's
module there (torch included) cost that process ~1.7 s of CPU on every run.
"""

from __future__ import annotations

import time


class ProgressMonitor:
    """Runs as a Ray actor (0 CPU): the workers tell it each phase change, the driver polls it."""

    def __init__(self):
        self.started = self.last_change = time.time()
        self.workers: dict[int, tuple[int, str, float]] = {}  # rank -> (step, phase, since)
        self.error: tuple[str, str] | None = None  # (class name, message) of a deterministic worker error

    def beat(self, rank: int, step: int, phase: str) -> None:
        now = time.time()
        self.workers[rank] = (step, phase, now)
        self.last_change = now

    def fatal(self, name: str, message: str) -> None:
        self.error = self.error or (name, message)

    def snapshot(self) -> dict:
        return {"now": time.time(), "started": self.started, "last_change": self.last_change,
                "workers": dict(self.workers), "error": self.error}
