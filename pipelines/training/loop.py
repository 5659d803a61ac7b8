"""The one Ray Train loop of every training stage, and the TorchTrainer around it.

A stage brings a *step builder* — an importable ``"package.module:function"`` that, on each worker,
builds a :class:`sseg.training.TrainingStep` (model, optimizer, scheduler and ``run(batch) -> metrics``,
plain PyTorch) from the job config. The loop owns everything distributed and operational:

* the worker's Ray Data shard, with every worker stopping at the same batch count (DDP would hang
  on a worker that has one batch more than another);
* resume from the latest checkpoint (Ray Train restarts the workers after a failure, FailureConfig),
  a checkpoint every ``checkpoint_every`` steps and at the end, rank 0 writing it;
* a non-finite loss stops every worker and keeps the last good checkpoint;
* rank-0 MLflow metrics, a progress line and images/s every ``log_every`` steps;
* ``callbacks``: importable functions called after every step with a small event dict; an extension
  point (tests inject faults through it, from the test side).
"""

from __future__ import annotations

import importlib
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    """What the loop needs besides the stage's own config (sent to every worker as a plain dict)."""

    step_builder: str  # "package.module:function" -> TrainingStep
    config: dict  # the job config as JSON, handed to the step builder
    total_steps: int
    warmup_steps: int
    global_batch_size: int
    log_every: int
    checkpoint_every: int
    shuffle_buffer: int
    threads: int
    mlflow_run_id: str | None
    tracking_uri: str
    run_dir: str
    callbacks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def import_object(path: str) -> Any:
    """``"package.module:attribute"`` → the attribute."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"expected 'package.module:attribute', got {path!r}")
    return getattr(importlib.import_module(module), name)


def _all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every worker (one tiny all-reduce; keeps DDP workers in step)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _quiet_report_log() -> None:
    """Ray Train logs every report's full metrics dict at INFO; our own progress line says enough."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _progress_line(step: int, total: int, metrics: dict, keys: tuple[str, ...]) -> str:
    parts = [f"[sseg] step {step}/{total} loss {metrics['loss']:.3f}"]
    parts += [f"{label} {metrics[key]:.3f}" for key, label in keys if key in metrics]
    parts.append(f"{metrics['images_per_s']:.0f} img/s")
    return " ".join(parts)


def train_loop_per_worker(loop_config: dict) -> None:
    import sseg  # noqa: F401 - torchvision fix in this worker process
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from pipelines.tracking import Tracker
    from sseg.checkpoints import check_model_config, load_checkpoint, save_checkpoint

    settings = LoopSettings(**loop_config)
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(settings.threads)
    device = ray.train.torch.get_device()
    build: Callable = import_object(settings.step_builder)
    step_obj = build(settings.config, device=device, rank=rank, world_size=world_size,
                     total_steps=settings.total_steps, warmup_steps=settings.warmup_steps)
    callbacks = [import_object(path) for path in settings.callbacks]

    step, epoch = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory, map_location=device, kinds=[step_obj.kind])
            check_model_config(state, step_obj.model_config, "being resumed", step_obj.model_name)
            step_obj.model.load_state_dict(state["model"])
            step_obj.optimizer.load_state_dict(state["optimizer"])
            step_obj.scheduler.load_state_dict(state["scheduler"])
            step, epoch = int(state["step"]), int(state["epoch"])
        if rank == 0:
            print(f"[sseg] resumed from checkpoint at step {step} (epoch {epoch})", flush=True)
    core_model = step_obj.model
    if world_size > 1:
        step_obj.model = ray.train.torch.prepare_model(
            core_model, parallel_strategy_kwargs={"find_unused_parameters": True})

    tracker = Tracker("unused", run_id=settings.mlflow_run_id, enabled=rank == 0,
                      tracking_uri=settings.tracking_uri)
    local_batch = settings.global_batch_size // world_size
    shard = ray.train.get_dataset_shard("train")

    def report(metrics: dict, save: bool) -> None:
        if save and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(tmp, model=core_model, model_config=step_obj.model_config,
                                kind=step_obj.kind, model_name=step_obj.model_name,
                                optimizer=step_obj.optimizer, scheduler=step_obj.scheduler, step=step,
                                epoch=epoch, extra={"mlflow_run_id": settings.mlflow_run_id})
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    window_start, window_images = time.perf_counter(), 0
    while step < settings.total_steps:
        batches = iter(shard.iter_batches(batch_size=local_batch, batch_format="numpy", drop_last=True,
                                          local_shuffle_buffer_size=settings.shuffle_buffer or None,
                                          prefetch_batches=2))
        steps_this_epoch = 0
        while step < settings.total_steps:
            batch = next(batches, None)
            if not _all_true(batch is not None, device):
                break
            metrics = step_obj.run(batch)
            if not _all_true(math.isfinite(metrics["loss"]), device):
                report({"step": step, "nan_stop": 1.0}, save=False)
                if rank == 0:
                    print(f"[sseg] non-finite loss at step {step}: stopping; the last good checkpoint "
                          "is kept", flush=True)
                return
            step += 1
            steps_this_epoch += 1
            window_images += local_batch * world_size
            for callback in callbacks:
                callback({"step": step, "rank": rank, "world_size": world_size, "run_dir": settings.run_dir,
                          "metrics": metrics})
            if step % settings.log_every == 0 or step == settings.total_steps:
                elapsed = time.perf_counter() - window_start
                metrics["images_per_s"] = window_images / max(elapsed, 1e-9)
                metrics["epoch"] = epoch
                tracker.log_metrics({f"train.{k}": v for k, v in metrics.items()}, step=step)
                if rank == 0:
                    print(_progress_line(step, settings.total_steps, metrics, step_obj.progress_keys),
                          flush=True)
                save = step % settings.checkpoint_every == 0 or step == settings.total_steps
                report({"step": step, **metrics}, save=save)
                window_start, window_images = time.perf_counter(), 0
            elif step % settings.checkpoint_every == 0:
                report({"step": step, **metrics}, save=True)
        if steps_this_epoch == 0:
            raise RuntimeError("the training data yielded no full batch: fewer samples than "
                               f"the global batch size {settings.global_batch_size}")
        epoch += 1


def make_trainer(settings: LoopSettings, dataset, *, run_name: str, storage_path: str, num_workers: int,
                 use_gpu: bool, cpus_per_worker: float, max_failures: int, checkpoints_to_keep: int):
    from pathlib import Path

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=settings.to_dict(),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(
            name=run_name, storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=checkpoints_to_keep),
        ),
        datasets={"train": dataset},
    )
