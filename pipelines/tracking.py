"""MLflow helpers shared by every job, and the one run context every job opens (:func:`tracked_run`).

The store is ``MLFLOW_TRACKING_URI`` when set, otherwise a local ``sqlite:///<cwd>/mlflow.db``
with artifacts under ``<cwd>/mlruns``. The URI is resolved to an absolute one in the driver and
passed on to Ray workers (whose working directory differs). Only rank 0 logs: a tracker built
with ``enabled=False`` accepts every call and does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

ENV_URI = "MLFLOW_TRACKING_URI"
LINEAGE_TAG = "sseg.parent_run_id"
STAGE_TAG = "sseg.stage"


def generated_run_name(*parts: str, now: float | None = None) -> str:
    """A readable MLflow run name for a run the config does not name: the parts and the local time,
    ``pseudo-masks-pixel-20260101-120000`` (the form of pretraining's ``pretrain-<time>``)."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return "-".join([*(str(p) for p in parts if str(p)), stamp])


def resolve_tracking_uri(uri: str | None = None) -> str:
    uri = uri or os.environ.get(ENV_URI)
    if not uri:
        return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def _default_artifact_root(uri: str) -> str | None:
    """For a local sqlite store, keep artifacts next to the database (absolute path)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
    return None


class Tracker:
    """A thin MlflowClient wrapper bound to one run; a no-op when ``enabled`` is False."""

    def __init__(self, experiment: str, *, run_id: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None, enabled: bool = True,
                 tracking_uri: str | None = None):
        self.enabled = enabled
        self.run_id = run_id
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if not enabled:
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.tracking_uri)
        if run_id is None:
            experiment_id = self._experiment_id(experiment)
            run = self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
            self.run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
            if tags:
                self.set_tags(tags)

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=_default_artifact_root(self.tracking_uri))
        except Exception:  # created concurrently by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()
                 if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        if self.enabled:
            self.client.log_dict(self.run_id, data, name)

    def log_figure(self, figure, name: str) -> None:
        if self.enabled:
            self.client.log_figure(self.run_id, figure, name)

    def log_image(self, image, name: str) -> None:
        """Log a PIL image or HxWx3 uint8 array as a PNG artifact."""
        if not self.enabled:
            return
        from PIL import Image
        import numpy as np

        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(name).name
            image.save(target)
            parent = str(Path(name).parent)
            self.log_artifact(target, None if parent == "." else parent)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id:
            self.client.set_terminated(self.run_id, status=status)


def deviation_tags(deviations: Sequence[str]) -> dict[str, str]:
    """The run's ``sseg.deviation`` tag: every setting of its config that differs from the paper, joined
    with "; " (no tag when there is none)."""
    return {"sseg.deviation": "; ".join(deviations)} if deviations else {}


def emit_result(result: Mapping[str, Any]) -> None:
    """Print the job's headline metrics as the last stdout line (one JSON object), after the Ray session
    the job opened is closed (nothing forwarded from Ray's workers can follow it)."""
    if "ray" in sys.modules:
        from pipelines.io.runtime import release_ray

        release_ray()
    sys.stdout.flush()
    print(json.dumps(dict(result), sort_keys=True, default=float), flush=True)


@contextmanager
def tracked_run(experiment: str, *, stage: str, run_name: str | None = None, run_id: str | None = None,
                parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None,
                params: Mapping[str, Any] | None = None, config: Any = None) -> Iterator[Tracker]:
    """The MLflow run of one job: opened (or reopened by ``run_id``) with the stage and lineage tags,
    params and ``config.json`` logged, ended FINISHED — or FAILED when the body raises."""
    all_tags = {STAGE_TAG: stage, **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags[LINEAGE_TAG] = parent_run_id
    tracker = Tracker(experiment, run_id=run_id, run_name=run_name, tags=all_tags)
    try:
        if params:
            tracker.log_params(params)
        if config is not None:
            tracker.log_dict(config, "config.json")
        yield tracker
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
