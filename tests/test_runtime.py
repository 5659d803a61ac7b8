"""init_ray: the cluster it joins or starts (Ray itself is not started here: ``ray.init`` is recorded)."""

from __future__ import annotations

import pytest

from pipelines.io import runtime


@pytest.fixture()
def calls(monkeypatch):
    recorded = []
    monkeypatch.setattr(runtime.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.ray, "init", lambda **kwargs: recorded.append(kwargs))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return recorded


def test_without_an_address_a_local_instance_is_started_never_a_cluster_found_on_the_machine(calls):
    # Ray's default (address=None) joins the newest `ray start` cluster of the machine: a run once joined
    # a test's cluster and died when that cluster was stopped
    runtime.init_ray(None, num_cpus=2)
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2


@pytest.mark.parametrize("given, env", [("auto", None), (None, "127.0.0.1:6379"), ("10.0.0.1:6379", "ignored")])
def test_an_address_given_or_in_ray_address_is_joined(calls, monkeypatch, given, env):
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    runtime.init_ray(given)
    assert calls[0]["address"] == (given or env)
