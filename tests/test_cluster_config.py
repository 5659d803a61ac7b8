"""ray_cluster.yaml: Ray's own schema and launcher preparation accept it, and the node types,
resources, autoscaling bounds and start commands are what the README promises."""

from __future__ import annotations

import copy
import fnmatch
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "ray_cluster.yaml"
SOURCE_DIRS = ["sseg", "pipelines", "jobs", "schemas", "configs", "scripts"]

# vCPUs and GPUs of the AWS instance types the config may use (AWS instance-type pages).
INSTANCE_HARDWARE = {
    "m6i.2xlarge": (8, 0),
    "c6i.8xlarge": (32, 0),
    "p4d.24xlarge": (96, 8),
    "p5.48xlarge": (192, 8),
}


@pytest.fixture(scope="module")
def raw_config() -> dict[str, Any]:
    with CONFIG_PATH.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def prepared_config(raw_config) -> dict[str, Any]:
    # What `ray up` does before bootstrapping the provider: merge with the AWS defaults, merge the
    # setup commands, fill in per-type worker bounds.
    return prepare_config(copy.deepcopy(raw_config))


def _ray_start_command(commands: list[str]) -> str:
    matches = [c for c in commands if "ray start" in c]
    assert len(matches) == 1, commands
    return matches[0]


def test_ray_schema_accepts_raw_and_prepared_config(raw_config, prepared_config):
    validate_config(raw_config)
    validate_config(prepared_config)
    assert prepared_config["cluster_name"] == "sseg"
    assert prepared_config["provider"]["type"] == "aws"


@pytest.mark.parametrize("mutate, error", [
    (lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="8"),
     jsonschema.ValidationError),
    (lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=1),
     jsonschema.ValidationError),
    (lambda c: c.update(head_node_type="no_such_type"), ValueError),
    (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=13), ValueError),
])
def test_ray_schema_rejects_broken_variants(raw_config, mutate, error):
    broken = copy.deepcopy(raw_config)
    mutate(broken)
    with pytest.raises(error):
        validate_config(broken)


def test_node_types_and_autoscaling_bounds(prepared_config):
    types = prepared_config["available_node_types"]
    assert set(types) == {"head", "gpu_worker", "cpu_decode_worker"}
    assert prepared_config["head_node_type"] == "head"

    head = types["head"]
    assert head["resources"] == {"CPU": 0}, "no tasks may be scheduled on the head"
    assert head["node_config"]["InstanceType"] == "m6i.2xlarge"

    gpu = types["gpu_worker"]
    assert gpu["node_config"]["InstanceType"] in {"p4d.24xlarge", "p5.48xlarge"}
    assert gpu["resources"]["GPU"] == 8
    assert (gpu["min_workers"], gpu["max_workers"]) == (0, 4)

    cpu = types["cpu_decode_worker"]
    assert cpu["node_config"]["InstanceType"] == "c6i.8xlarge"
    assert "GPU" not in cpu["resources"]
    assert (cpu["min_workers"], cpu["max_workers"]) == (0, 8)

    assert prepared_config["max_workers"] == gpu["max_workers"] + cpu["max_workers"]
    assert prepared_config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("node_type", ["gpu_worker", "cpu_decode_worker"])
def test_worker_resources_match_instance_hardware(prepared_config, node_type):
    spec = prepared_config["available_node_types"][node_type]
    cpus, gpus = INSTANCE_HARDWARE[spec["node_config"]["InstanceType"]]
    assert spec["resources"].get("CPU") == cpus
    assert spec["resources"].get("GPU", 0) == gpus


def test_setup_installs_project_and_replaces_ray_defaults(prepared_config):
    # Keys left out of the file fall back to aws/defaults.yaml, which installs a Ray nightly wheel.
    all_setup = (prepared_config["setup_commands"] + prepared_config["head_setup_commands"]
                 + prepared_config["worker_setup_commands"])
    assert not any("ray-wheels" in c or "ray-3.0.0.dev0" in c for c in all_setup)
    install = re.compile(r"pip install .*-e ~/sseg\b")
    assert any(install.search(c) for c in prepared_config["head_setup_commands"])
    assert any(install.search(c) for c in prepared_config["worker_setup_commands"])
    cpu_setup = prepared_config["available_node_types"]["cpu_decode_worker"]["worker_setup_commands"]
    assert any(install.search(c) for c in cpu_setup)
    assert any("download.pytorch.org/whl/cpu" in c for c in cpu_setup)

    mounts = prepared_config["file_mounts"]
    assert mounts["/home/ray/sseg"] == "."
    assert mounts["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".venv" in prepared_config["rsync_exclude"]
    assert prepared_config["docker"]["image"].startswith("rayproject/ray:")


def test_head_start_commands(prepared_config):
    commands = prepared_config["head_start_ray_commands"]
    start = _ray_start_command(commands)
    assert "--head" in start
    assert "--dashboard-host=127.0.0.1" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start
    assert "RAY_AUTH_MODE=token" in start
    assert "MLFLOW_TRACKING_URI=http://" in start and ":5000" in start
    assert "OMP_WAIT_POLICY=PASSIVE" in start

    mlflow = [c for c in commands if "mlflow server" in c]
    assert len(mlflow) == 1
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow[0]
    assert "--port 5000" in mlflow[0]
    # The server must be up before the first job driver starts on this node.
    assert commands.index(mlflow[0]) < commands.index(start)


def test_worker_start_commands(prepared_config):
    start = _ray_start_command(prepared_config["worker_start_ray_commands"])
    assert "--address=$RAY_HEAD_IP:6379" in start
    assert "--head" not in start
    assert "RAY_AUTH_MODE=token" in start
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in start
    assert "OMP_WAIT_POLICY=PASSIVE" in start


def _rsync_excludes(pattern: str, relative_path: str) -> bool:
    """rsync's rule for a pattern without "/" inside: it matches any path component; a leading
    "/" anchors it to the transfer root."""
    if pattern.startswith("/"):
        anchored = pattern.lstrip("/")
        return relative_path == anchored or relative_path.startswith(anchored + "/")
    return any(fnmatch.fnmatchcase(part, pattern) for part in relative_path.split("/"))


def test_rsync_excludes_keep_every_source_file(prepared_config):
    patterns = prepared_config["rsync_exclude"]
    assert "rsync_filter" not in prepared_config or not prepared_config["rsync_filter"]
    sources = [path.relative_to(ROOT).as_posix() for folder in SOURCE_DIRS
               for path in (ROOT / folder).rglob("*")
               if path.is_file() and "__pycache__" not in path.parts]
    sources += ["pyproject.toml", "constraints.txt"]
    dropped = [(src, pat) for src in sources for pat in patterns if _rsync_excludes(pat, src)]
    assert dropped == []
    for local_only in [".venv/bin/python", ".cluster/mlflow.db", "data/shards/000.tar",
                       "tests/artifacts/shot.png", "sseg/__pycache__/x.pyc"]:
        assert any(_rsync_excludes(p, local_only) for p in patterns), local_only
