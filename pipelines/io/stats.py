"""Counting skipped samples across Ray Data tasks/actors: one small named actor per run."""

from __future__ import annotations

from collections import Counter

import ray


@ray.remote(num_cpus=0)
class SkipCounter:
    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def add(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def make_counter(run_name: str):
    """The run's counter (named, so every task and actor of the run finds the same one)."""
    return SkipCounter.options(name=f"sseg-skips-{run_name}", get_if_exists=True).remote()


def report(counter, counts: Counter) -> None:
    if counter is not None and counts:
        counter.add.remote(dict(counts))


def fetch(counter) -> dict[str, int]:
    return ray.get(counter.get.remote()) if counter is not None else {}
