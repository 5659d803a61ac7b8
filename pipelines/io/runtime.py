"""Connecting to Ray: a local instance for the embedded default, or the cluster a job was submitted to."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from pipelines.tracking import ENV_URI, resolve_tracking_uri

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def worker_env(tracking_uri: str | None = None) -> dict[str, str]:
    """Env vars every Ray worker of a job needs (absolute MLflow URI; repo importable)."""
    env = {
        ENV_URI: resolve_tracking_uri(tracking_uri),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    # Passed on only when the caller chose it (ray_cluster.yaml and the tests choose PASSIVE: several
    # multi-threaded tasks share a node). Forced PASSIVE on the training worker of a local run that owns
    # its CPUs costs ~25 % of its step rate (idle threads sleep between the step's many small ops).
    if os.environ.get("OMP_WAIT_POLICY"):
        env["OMP_WAIT_POLICY"] = os.environ["OMP_WAIT_POLICY"]
    return env


# Settings for a Ray instance started on this machine (never a cluster's): each spares a Python process
# (~1-2 s of CPU on 2 cores) that a one-machine run has no use for. Ray Train's preemption watcher polls
# for spot-node drain notices; Ray Data's Parquet reader otherwise reads a handful of local cache files'
# footers through 2 new actors per read. An env var the user set wins.
LOCAL_INSTANCE_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1"}


def export_for_local_instance(env: dict[str, str]) -> None:
    """Put ``env`` and :data:`LOCAL_INSTANCE_ENV` in this process's environment, which the workers of a Ray
    instance started here inherit. Not a runtime_env: with one, Ray starts every worker process through its
    setup_worker wrapper (a second Python start and import of ray: ~0.9 s more per actor on 2 cores, ~20
    actors in a tiny job)."""
    os.environ.update(env)
    for name, value in LOCAL_INSTANCE_ENV.items():
        os.environ.setdefault(name, value)


_STARTED_HERE = False  # whether init_ray opened the Ray session of this process


def init_ray(address: str | None = None, num_cpus: int | None = None,
             tracking_uri: str | None = None) -> None:
    """Join the cluster in RAY_ADDRESS / ``address`` (``ray job submit`` sets it; ``auto``: the newest
    cluster started on this machine with ``ray start``), else start one here — never a cluster found by
    chance on the machine (Ray's default without an address), which another job may stop mid-run.

    A locally started instance runs with token auth disabled only when the caller set
    ``RAY_AUTH_MODE=disabled``; it binds to 127.0.0.1 and has no dashboard unless asked.
    """
    global _STARTED_HERE
    if ray.is_initialized():
        return
    env = worker_env(tracking_uri)
    os.environ.setdefault(ENV_URI, env[ENV_URI])
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to Ray at %s", address)
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
        except ConnectionError as exc:
            from sseg.errors import SsegError, first_line

            raise SsegError(f"no Ray cluster answers at {address}: {first_line(exc)}") from None
        _STARTED_HERE = True
        return
    log.info("starting a local Ray instance (%s CPUs)", num_cpus or "all")
    export_for_local_instance(env)
    # The dashboard (on 127.0.0.1) serves the state API that Ray Train's placement-group cleaner polls;
    # without it the cleaner logs a warning every second.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             _node_ip_address="127.0.0.1", log_to_driver=True)
    _STARTED_HERE = True
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = os.environ.get("SSEG_PROGRESS_BARS", "1") == "1"


def release_ray() -> None:
    """Disconnect the Ray session :func:`init_ray` opened (a caller's own session is left alone). A job
    calls it before its result line: worker and raylet log lines forwarded to the driver's stdout could
    otherwise follow the line that must come last."""
    global _STARTED_HERE
    if _STARTED_HERE and ray.is_initialized():
        ray.shutdown()
    _STARTED_HERE = False


def require_gpus(needed: float, field: str) -> None:
    """Fail early (not hang in the scheduler) when a config asks for GPUs the cluster does not have.

    An autoscaling cluster (SSEG_AUTOSCALING_CLUSTER=1, set by ray_cluster.yaml) may add GPU nodes on
    demand, so there the request is left to the autoscaler.
    """
    if needed <= 0 or os.environ.get("SSEG_AUTOSCALING_CLUSTER", "0") == "1":
        return
    resources = ray.cluster_resources()
    if resources.get("GPU", 0) < min(needed, 1):
        from sseg.errors import SsegError

        raise SsegError(f"{field} asks for GPUs but the Ray cluster has none "
                        f"({int(resources.get('CPU', 0))} CPU, 0 GPU); set it to 0 or use a GPU cluster")
