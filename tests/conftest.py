"""Shared fixtures: one local Ray instance per test session, a tiny procedural world, an MLflow store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "jobs"):  # jobs import their _bootstrap module as a sibling
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("SSEG_PROGRESS_BARS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import sseg  # noqa: E402,F401 - torchvision fix before anything imports timm


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance shared by the tests that need one (2 CPUs, no dashboard)."""
    import ray

    if not ray.is_initialized():
        from pipelines.io.runtime import export_for_local_instance

        export_for_local_instance({"OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small procedural world (shards + VOC split) shared by the pipeline tests."""
    from sseg.world import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("world")
    config = WorldConfig(seed=3, image_size=64, num_train=96, num_val=24, num_labeled_train=16, shard_size=32)
    generate_world(out, config)
    return out


@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory):
    """``path -> sqlite URI`` of a fresh, empty MLflow store at ``path``: a copy of one store created once
    per session. Creating a store runs MLflow's schema migrations (~2 s on 2 cores); the suite makes dozens."""
    import shutil

    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()

    def make(path: Path) -> str:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture(scope="session")
def openai_clip_archive(tmp_path_factory) -> dict:
    """{"path", "state"}: a random-init (seed 0) CLIP ViT-B/16 in OpenAI's TorchScript layout and the fp32 state
    dict it holds, made once for the session (building, tracing and saving it cost 14.6 s on 2 cores; the CLIP weight
    tests and the paper configs read the same file)."""
    from paper_weights import save_openai_clip

    path = tmp_path_factory.mktemp("openai_clip") / "ViT-B-16.pt"
    return {"path": path, "state": save_openai_clip(path)}


@pytest.fixture(scope="session")
def tiny_pretrain_data(tmp_path_factory) -> list[str]:
    """Overrides that point jobs of configs/tiny.yaml at one world and pseudo-mask cache for the session (the
    first job makes them, the others reuse them: generating both costs ~15 s on 2 cores)."""
    data = tmp_path_factory.mktemp("tiny_pretrain_data")
    return [f"world_dir={data / 'world'}", f"data.shards={data / 'world' / 'shards'}", f"cache_dir={data / 'cache'}"]


@pytest.fixture()
def mlflow_uri(tmp_path, monkeypatch, new_mlflow_store):
    """The test's own empty MLflow store, ready to use."""
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture()
def unwritten_mlflow_uri(tmp_path, monkeypatch):
    """An MLflow URI whose store does not exist yet: for tests that prove a failing job creates nothing."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
