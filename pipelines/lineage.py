"""Which run a stage starts from: the MLflow run-id pattern, the newest finished run of an experiment,
and a parent checkpoint resolved from a run id or a path. Every stage that has a parent resolves it
here, before it writes anything."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.tracking import resolve_tracking_uri

RUN_ID = re.compile(r"[0-9a-f]{32}")
FINAL_CHECKPOINT = "checkpoints/final"  # where every training stage logs its final checkpoint


def is_run_id(spec: str) -> bool:
    return RUN_ID.fullmatch(spec) is not None


def _store_exists(uri: str) -> bool:
    """False for a local sqlite store that does not exist yet (asking it would create it)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return True


def newest_finished_run(experiment: str, *, with_checkpoint: bool, tracking_uri: str | None = None) -> str | None:
    """The id of the newest FINISHED run of ``experiment`` (``with_checkpoint``: the newest that also holds
    a final checkpoint artifact), or None. Never creates the store."""
    from sseg.checkpoints import CHECKPOINT_FILE

    uri = resolve_tracking_uri(tracking_uri)
    if not _store_exists(uri):
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    for run in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=50):
        if not with_checkpoint or any(a.path.endswith(CHECKPOINT_FILE)
                                      for a in client.list_artifacts(run.info.run_id, FINAL_CHECKPOINT)):
            return run.info.run_id
    return None


def resolve_checkpoint(spec: str, tracking_uri: str | None = None, artifact_path: str = FINAL_CHECKPOINT) -> str:
    """A checkpoint given as a path (file or directory) or as an MLflow run id (``runs:/<id>`` too)."""
    from sseg.errors import CheckpointError, first_line

    if Path(spec).exists():
        return str(spec)
    run_id = spec[len("runs:/"):].strip("/").split("/")[0] if spec.startswith("runs:/") else spec
    if not is_run_id(run_id):
        raise CheckpointError(f"checkpoint not found: {spec} (give a path or an MLflow run id)")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    try:
        target = tempfile.mkdtemp(prefix="sseg-ckpt-")
        return client.download_artifacts(run_id, artifact_path, target)
    except Exception as exc:  # noqa: BLE001 - unknown run, missing artifact, unreachable server
        raise CheckpointError(f"MLflow run {run_id} has no checkpoint at '{artifact_path}': "
                              f"{first_line(exc)[:200]}") from None


@dataclass
class Parent:
    """The run a stage starts from: its checkpoint file, the loaded checkpoint and its MLflow run id."""

    checkpoint: Path  # the checkpoint file
    state: dict
    run_id: str | None


def resolve_parent(spec: str | None, *, experiment: str, kinds: list[str], field: str, make_with: str) -> Parent:
    """The parent checkpoint: ``spec`` (a path or an MLflow run id), or None for the newest finished run of
    ``experiment`` with a final checkpoint. No such run: a one-line :class:`CheckpointError` naming
    ``make_with`` (the command that makes one) and ``field`` (the config field that names one)."""
    from sseg.checkpoints import CHECKPOINT_FILE, load_checkpoint
    from sseg.errors import CheckpointError

    if spec is None:
        spec = newest_finished_run(experiment, with_checkpoint=True)
        if spec is None:
            raise CheckpointError(f"no finished run of experiment '{experiment}' holds a checkpoint: make one "
                                  f"with `{make_with}`, or give {field}=<run id or checkpoint path>")
        print(f"[sseg] parent: the newest finished '{experiment}' run {spec}", flush=True)
    path = Path(resolve_checkpoint(spec))
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    state = load_checkpoint(path, kinds=kinds)  # missing / unreadable / another kind: one line
    run_id = spec if is_run_id(spec) else (state.get("extra") or {}).get("mlflow_run_id")
    return Parent(path, state, run_id)
