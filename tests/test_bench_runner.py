"""The `make bench` runner's bookkeeping (the benchmarks themselves are not run in tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_all)


def test_every_listed_benchmark_exists() -> None:
    for name, command in run_all.BENCHMARKS.items():
        assert (ROOT / command[0]).is_file(), name


def test_median_and_range_over_repeats() -> None:
    runs = [{"a": 1.0, "b": {"c": [2, 10]}, "flag": True}, {"a": 3.0, "b": {"c": [4, 20]}},
            {"a": 2.0, "b": {"c": [6, 30]}}]
    summary = run_all.summarise(runs)
    assert summary["a"] == "2 [1, 3]"
    assert summary["b.c[0]"] == "4 [2, 6]" and summary["b.c[1]"] == "20 [10, 30]"
    assert "flag" not in summary


def test_last_json_reads_pretty_printed_output() -> None:
    assert run_all.last_json('noise\n{"x": 1}\n') == {"x": 1}
    assert run_all.last_json('log line\n{\n "y": 2\n}') == {"y": 2}
