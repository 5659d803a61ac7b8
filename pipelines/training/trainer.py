"""The trainer every training stage uses around the one Ray Train loop (loop.py): the run's identity
(a new name, or ``--resume``), its MLflow run and ``sseg_run.json``, the CPUs of the workers, the
``LoopSettings`` built from the config's shared runtime section (``schemas.configs.RuntimeConfig``), and
the fit with its one-line errors.

A stage calls, in this order (nothing is written before the third):
``run = run_identity(stage, cfg, resume)`` → ``cpus = plan_cpus(cfg.train)`` (after ``init_ray``) →
``with open_run(run, cfg, ...) as tracker:`` → ``summary = train(step_builder, step_config, dataset, ...)``.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pydantic import BaseModel

from pipelines.tracking import Tracker, generated_run_name, tracked_run
from pipelines.training.loop import (DEFAULT_DATA_STAGES, DataStageCpus, LoopSettings, data_stage_names, describe_stall, fit_watched,
                                     make_trainer, monitor_snapshot, newest_checkpoint, plan_worker_cpus,
                                     start_progress_monitor)
from schemas.configs import RuntimeConfig
from sseg.checkpoints import CHECKPOINT_FILE
from sseg.config import flatten
from sseg.errors import CheckpointError, ConfigError, DataError, SsegError

RUN_INFO = "sseg_run.json"
DETERMINISTIC = (ConfigError, DataError, CheckpointError)  # raised in a worker: reported, never retried
# What may differ between a run and its --resume: where and how it runs, how long, and what it reports.
RESUME_FREE_SECTIONS = ("ray", "tracking", "eval")
RESUME_FREE_TRAIN_FIELDS = (*RuntimeConfig.model_fields, "steps")


# ---- run identity -------------------------------------------------------------------------------------


@dataclass
class RunIdentity:
    stage: str
    name: str
    dir: Path  # storage_path/name: Ray Train's checkpoints and sseg_run.json
    config: dict  # what a --resume must repeat (resume_config)
    info: dict | None = None  # its sseg_run.json (a new run: once open_run wrote it)
    resuming: bool = False

    @property
    def mlflow_run_id(self) -> str | None:
        return self.info["mlflow_run_id"] if self.info else None


def resume_config(cfg: BaseModel, extra: dict | None = None) -> dict:
    """The parts of a stage config a --resume must repeat, flattened (plus ``extra``, e.g. the parent)."""
    tree = cfg.model_dump(mode="json")
    for section in RESUME_FREE_SECTIONS:
        tree.pop(section, None)
    for name in RESUME_FREE_TRAIN_FIELDS:
        tree.get("train", {}).pop(name, None)
    return {**flatten(tree), **(extra or {})}


def run_identity(stage: str, cfg: BaseModel, resume: str | None, *, extra: dict | None = None) -> RunIdentity:
    """The run's name and directory under ``cfg.storage_path``; writes nothing.

    No ``resume``: ``tracking.run_name`` (a name that exists is a one-line error: a new run never inherits
    another's checkpoints) or ``<stage>-<time>``. ``resume`` = a run name or ``latest`` (this stage's newest
    run there): that run, refused when its config differs (``resume_config``)."""
    storage = Path(cfg.storage_path).resolve()
    config = resume_config(cfg, extra)
    if resume is None:
        name = cfg.tracking.run_name
        if name is None:
            name = base = generated_run_name(stage)
            for i in range(2, 1000):
                if not (storage / name).exists():
                    break
                name = f"{base}-{i}"
        elif (storage / name).exists():
            raise ConfigError(f"tracking.run_name={name}: a run of that name exists under {storage}; continue "
                              f"it with --resume {name}, or choose another name")
        return RunIdentity(stage, name, storage / name, config)
    if resume == "latest":
        infos = [p for p in storage.glob(f"*/{RUN_INFO}") if _read_info(p).get("stage") == stage]
        if not infos:
            raise ConfigError(f"--resume latest: no {stage} run under {storage}")
        info_path = max(infos, key=lambda p: p.stat().st_mtime)
    else:
        info_path = storage / resume / RUN_INFO
        if _read_info(info_path).get("stage") != stage:
            raise ConfigError(f"--resume {resume}: no {stage} run of that name under {storage}")
    info = _read_info(info_path)
    before = info.get("config") or {}
    changed = sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k))
    if changed:
        key = changed[0]
        raise ConfigError(f"--resume {info['run_name']}: that run was started with another config ({key}: "
                          f"{before.get(key)!r}, now {config.get(key)!r}); resume with the config it was "
                          "started with")
    return RunIdentity(stage, info["run_name"], info_path.parent, config, info, resuming=True)


def _read_info(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def open_run(run: RunIdentity, cfg: BaseModel, *, parent_run_id: str | None = None,
             tags: dict | None = None) -> Iterator[Tracker]:
    """The stage's MLflow run (``tracking.experiment``): new, with params and config.json, and the run
    directory with its ``sseg_run.json``; or, resuming, the stopped run reopened."""
    new = not run.resuming
    with tracked_run(cfg.tracking.experiment, stage=run.stage, run_name=run.name, run_id=run.mlflow_run_id,
                     parent_run_id=parent_run_id, tags=tags, params=flatten(cfg) if new else None,
                     config=cfg.model_dump(mode="json") if new else None) as tracker:
        if new:
            run.dir.mkdir(parents=True, exist_ok=True)
            run.info = {"run_name": run.name, "stage": run.stage, "mlflow_run_id": tracker.run_id,
                        "config": run.config}
            (run.dir / RUN_INFO).write_text(json.dumps(run.info, indent=1))
        yield tracker


# ---- resources ------------------------------------------------------------------------------------------


def check_gpus(runtime: RuntimeConfig) -> None:
    from pipelines.io.runtime import require_gpus

    require_gpus(1 if runtime.use_gpu else 0, "train.use_gpu")


def plan_cpus(runtime: RuntimeConfig, extra_data_cpus: float = 0.0,
              stages: Sequence[DataStageCpus] = DEFAULT_DATA_STAGES) -> float:
    """CPUs per training worker leaving ``train.data_cpus`` (+ ``extra_data_cpus``: e.g. CPU actors that
    feed training), and at least what ``stages`` (every Ray Data stage that holds a CPU: read tasks, map
    tasks, CPU actor pools) need, to the data stages; a one-line error naming the stage that would wait
    when they cannot fit beside the workers. An autoscaling cluster may add nodes, so there the request
    stands as given. Needs Ray."""
    import ray

    if os.environ.get("SSEG_AUTOSCALING_CLUSTER", "0") == "1":
        return runtime.cpus_per_worker or 1.0
    cpus, note = plan_worker_cpus(runtime.num_workers, runtime.cpus_per_worker,
                                  runtime.data_cpus + extra_data_cpus,
                                  float(ray.cluster_resources().get("CPU", 0)), stages=stages)
    if note:
        print(f"[sseg] {note}", flush=True)
    return cpus


def data_seed(runtime: RuntimeConfig) -> int | None:
    """The seed of the data order, crops and views (``train.deterministic_data``), or None."""
    return runtime.seed if runtime.deterministic_data else None


# ---- training -------------------------------------------------------------------------------------------


def train(step_builder: Callable[..., Any], step_config: dict, dataset, *, runtime: RuntimeConfig,
          run: RunIdentity, tracker: Tracker, storage_path: str, total_steps: int, warmup_steps: int,
          global_batch_size: int, cpus_per_worker: float, seed: int | None,
          callbacks: Sequence[Callable[[dict], None]] = ()) -> dict:
    """The loop over ``dataset`` with the step ``step_builder(step_config, ...)`` builds on each worker;
    resumes from the newest checkpoint on disk when ``run`` is resuming; logs the final checkpoint to
    ``checkpoints/final``. ``seed``: :func:`data_seed` (None: Ray Data's fastest order)."""
    settings = LoopSettings(
        step_builder=step_builder, config=step_config, total_steps=total_steps, warmup_steps=warmup_steps,
        global_batch_size=global_batch_size, log_every=runtime.log_every,
        checkpoint_every=runtime.checkpoint_every, shuffle_buffer=runtime.shuffle_buffer,
        threads=int(runtime.threads_per_worker or max(1, int(cpus_per_worker))),
        mlflow_run_id=tracker.run_id, tracking_uri=tracker.tracking_uri, run_dir=str(run.dir),
        callbacks=list(callbacks), data_seed=seed)
    if run.resuming:  # the checkpoint on disk, in case Ray Train never registered it
        found = newest_checkpoint(run.dir)
        if found is not None:
            settings.resume_checkpoint = found[0]
            print(f"[sseg] --resume {run.name}: newest checkpoint on disk is step {found[1]} ({found[0]})",
                  flush=True)
    tracker.log_params({"derived.total_steps": total_steps, "derived.warmup_steps": warmup_steps})
    summary = fit(settings, dataset, runtime, run.name, run.dir, storage_path, cpus_per_worker)
    tracker.log_artifact(Path(summary["checkpoint"]) / CHECKPOINT_FILE, "checkpoints/final")
    return summary


def fit(settings: LoopSettings, dataset, runtime: RuntimeConfig, run_name: str, run_dir: Path,
        storage_path: str, cpus_per_worker: float) -> dict:
    """Run the Ray Train fit; one-line errors for a failed run, a stall, a NaN stop, a deterministic error
    in a worker or a missing checkpoint. Returns steps, seconds, the final checkpoint and metrics."""
    import uuid

    import ray

    # the progress actor: stall detection, and where a worker tells a deterministic error
    settings.progress_actor = f"sseg-progress-{run_name}-{uuid.uuid4().hex[:8]}"
    monitor = start_progress_monitor(settings.progress_actor)
    trainer = make_trainer(settings, dataset, run_name=run_name, storage_path=storage_path,
                           num_workers=runtime.num_workers, use_gpu=runtime.use_gpu,
                           cpus_per_worker=cpus_per_worker, max_failures=runtime.max_failures,
                           checkpoints_to_keep=runtime.checkpoints_to_keep,
                           placement_strategy=runtime.placement_strategy)
    worker_resources = {"CPU": cpus_per_worker, **({"GPU": 1} if runtime.use_gpu else {})}
    stages = data_stage_names(dataset)

    def describe(snapshot: dict) -> str:
        return describe_stall(snapshot, runtime.stall_timeout_s, data_stages=stages,
                              num_workers=runtime.num_workers, worker_resources=worker_resources)

    started = time.perf_counter()
    try:
        result = fit_watched(trainer, monitor_snapshot(monitor), runtime.stall_timeout_s, describe)
        error = monitor_snapshot(monitor)()["error"]
    except SsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors; keep the first line
        raise SsegError(f"training failed: {first_line(exc)} (checkpoints kept in {run_dir})") from None
    finally:
        ray.kill(monitor)
    if error:
        raise {cls.__name__: cls for cls in DETERMINISTIC}.get(error[0], SsegError)(error[1])
    metrics = dict(result.metrics or {})
    if metrics.get("nan_stop"):
        raise SsegError(f"training stopped: non-finite loss at step {int(metrics.get('step', -1))}; "
                        f"last good checkpoint: {result.checkpoint.path if result.checkpoint else 'none'}")
    if result.checkpoint is None:
        raise SsegError("training finished without a checkpoint")
    return {"run_name": run_name, "steps": int(metrics.get("step", settings.total_steps)),
            "train_seconds": time.perf_counter() - started, "checkpoint": str(Path(result.checkpoint.path)),
            "final_loss": metrics.get("loss"), "train_images_per_s": metrics.get("images_per_s"),
            "final_metrics": metrics}


def first_line(exc: BaseException) -> str:
    """The root cause of a (Ray-wrapped) exception as one line, e.g. ``TypeError: ...``."""
    text = str(exc)
    causes = re.findall(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception|Interrupt)): (.+)$", text, re.M)
    causes = [c for c in causes if c[0] not in ("WorkerGroupError", "TrainingFailedError", "UserCodeException")]
    if causes:
        name, message = causes[-1]
        return f"{name}: {message.strip()}"[:400]
    for line in text.splitlines():
        if line.strip() and not line.startswith("Traceback"):
            return line.strip()[:400]
    return type(exc).__name__
