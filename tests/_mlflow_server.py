"""A throw-away MLflow tracking server for tests: free 127.0.0.1 port, sqlite store in a temp dir,
its own process group (so that stopping it also stops the uvicorn worker it spawns)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"


@dataclass(frozen=True)
class MlflowServer:
    url: str
    store_dir: Path
    log_path: Path
    pid: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (uvicorn worker): make sure nothing of it is left.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=grace_s)


def _start(store_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", HOST, "--port", str(port),
        "--backend-store-uri", f"sqlite:///{store_dir / 'mlflow.db'}",
        "--artifacts-destination", str(store_dir / "mlartifacts"),
        "--workers", "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _create_tables(store_dir: Path) -> None:
    """Create the store's schema first, in a short-lived process and without a deadline: on a loaded
    2-core machine the server's own first-start migration can outlast the start timeout, and a server
    killed mid-migration leaves a half-made schema that the next attempt cannot use. (Done in this
    process instead, the server's start-up hung: the parent's SQLAlchemy engine kept the file busy.)"""
    code = ("import sys; from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore; "
            "SqlAlchemyStore(sys.argv[1], sys.argv[2])")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{store_dir / 'mlflow.db'}",
                    str(store_dir / "mlartifacts")], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def running_mlflow_server(store_dir: Path, *, start_timeout_s: float = 150.0,
                          attempts: int = 2) -> Iterator[MlflowServer]:
    """Start a server, wait for /health, yield it, and stop its whole process group."""
    store_dir.mkdir(parents=True, exist_ok=True)
    log_path = store_dir / "server.log"
    _create_tables(store_dir)
    for attempt in range(attempts):
        port = free_port()  # another process may take it before the server binds: retry
        url = f"http://{HOST}:{port}"
        process = _start(store_dir, port, log_path)
        deadline = time.monotonic() + start_timeout_s
        while process.poll() is None and time.monotonic() < deadline and not _answers(url):
            time.sleep(0.25)
        if process.poll() is None and _answers(url):
            break
        _stop(process)
    else:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"MLflow server did not start after {attempts} attempts:\n{tail}")
    try:
        yield MlflowServer(url=url, store_dir=store_dir, log_path=log_path, pid=process.pid)
    finally:
        _stop(process)
