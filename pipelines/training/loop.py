"""The one Ray Train loop of every training stage, and the TorchTrainer around it.

A stage brings a *step builder* — a module-level function (pickled by reference) that, on each worker,
builds a :class:`sseg.training.TrainingStep` (model, optimizer, scheduler and ``run(batch) -> metrics``,
plain PyTorch) from the job config. The loop owns everything distributed and operational:

* the worker's Ray Data shard, with every worker stopping at the same batch count (DDP would hang
  on a worker that has one batch more than another);
* resume from the latest checkpoint (Ray Train restarts the workers after a failure, FailureConfig):
  model, optimizer, scheduler, step and data position (``sseg.checkpoints.DataPosition``: the resumed
  epoch skips the batches it had already trained on), logged as ``train.resumed_from_step``;
  a checkpoint every ``checkpoint_every`` steps and at the end, rank 0 writing it;
* a non-finite loss stops every worker and keeps the last good checkpoint;
* rank-0 MLflow metrics, a progress line and images/s every ``log_every`` steps;
* ``callbacks``: module-level functions called after every step with a small event dict; an extension
  point (tests inject faults through it, from the test side);
* a deterministic error (:class:`sseg.errors.ConfigError`, ``DataError``, ``CheckpointError``) is told to
  the progress actor and ends the worker instead of raising: Ray Train's failure policy would restart
  the workers and hit it again ``max_failures`` times;
* stall detection: every worker tells a small progress actor when it waits for data and when it runs
  a step; :func:`fit_watched` stops the run with a message naming the starved stage when nothing has
  moved for ``stall_timeout_s``.
"""

from __future__ import annotations

import _thread
import logging
import math
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class LoopSettings:
    """What the loop needs besides the stage's own config (sent to every worker as a plain dict)."""

    step_builder: Callable[..., Any]  # (config, *, device, rank, world_size, total_steps, warmup_steps) -> TrainingStep
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
    callbacks: list[Callable[[dict], None]] = field(default_factory=list)
    progress_actor: str | None = None  # name of the ProgressMonitor actor (stall detection), if any
    # Not None: the dataset is read in a fixed order (Ray Data preserve_order) and the local shuffle of
    # epoch e is seeded with data_seed·1000 + e, so a rerun sees the same batches (the dataset's own
    # random choices must be seeded too). None: Ray Data's fastest, non-deterministic order.
    data_seed: int | None = None
    # A checkpoint directory to start from when Ray Train has none registered for this run (``--resume``
    # after the driver was killed: the checkpoint is on disk but the controller never recorded it).
    resume_checkpoint: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every worker (one tiny all-reduce; keeps DDP workers in step)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _progress_line(step: int, total: int, metrics: dict, keys: tuple[str, ...]) -> str:
    parts = [f"[sseg] step {step}/{total} loss {metrics['loss']:.3f}"]
    parts += [f"{label} {metrics[key]:.3f}" for key, label in keys if key in metrics]
    parts.append(f"{metrics['images_per_s']:.0f} img/s")
    return " ".join(parts)


def train_loop_per_worker(loop_config: dict) -> None:
    from sseg.errors import CheckpointError, ConfigError, DataError

    settings = LoopSettings(**loop_config)
    try:
        _train(settings)
    except (ConfigError, DataError, CheckpointError) as exc:  # the same on every retry: fail once
        if not settings.progress_actor:
            raise
        import ray

        actor = ray.get_actor(settings.progress_actor, namespace="sseg")
        ray.get(actor.fatal.remote(type(exc).__name__, str(exc)), timeout=60)


def _train(settings: LoopSettings) -> None:
    import sseg  # noqa: F401 - torchvision fix in this worker process
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from pipelines.io.ray_private import quiet_train_report_log
    from pipelines.tracking import Tracker
    from sseg.checkpoints import DataPosition, restore_training_state, save_training_state

    quiet_train_report_log()
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    beat = _heartbeat(settings.progress_actor, rank)
    beat(0, "starting")
    torch.set_num_threads(settings.threads)
    device = ray.train.torch.get_device()
    local_batch = settings.global_batch_size // world_size
    shard = ray.train.get_dataset_shard("train")
    checkpoint = ray.train.get_checkpoint()
    # a fresh run starts epoch 0's data (Ray Data's first execution: its actors and tasks start, import and
    # read) while the step builds the model, instead of after it (issue 25: the two overlapped take ≈ the
    # longer one). A resumed run opens its epoch once the checkpoint says which.
    early = None
    if checkpoint is None and not settings.resume_checkpoint:
        early = _FirstBatch(shard.iter_batches(**_batch_options(settings, local_batch, 0)))
    step_obj = settings.step_builder(settings.config, device=device, rank=rank, world_size=world_size,
                     total_steps=settings.total_steps, warmup_steps=settings.warmup_steps)
    callbacks = settings.callbacks

    step, position = 0, DataPosition()
    if checkpoint is None and settings.resume_checkpoint:
        checkpoint = Checkpoint.from_directory(settings.resume_checkpoint)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            step, position = restore_training_state(directory, step_obj, map_location=device)
        if rank == 0:
            print(f"[sseg] resumed from checkpoint at step {step} (epoch {position.epoch}, "
                  f"{position.batches_in_epoch} batches into it, {position.samples_seen} samples seen)",
                  flush=True)
    epoch, skip_batches, samples_seen = position.epoch, position.batches_in_epoch, position.samples_seen
    if step and not samples_seen:  # a checkpoint written before data positions were saved
        samples_seen = step * settings.global_batch_size
    if world_size > 1:
        step_obj.wrap_model(lambda model: ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True}))

    tracker = Tracker("unused", run_id=settings.mlflow_run_id, enabled=rank == 0,
                      tracking_uri=settings.tracking_uri)
    if checkpoint is not None:
        tracker.log_metrics({"train.resumed_from_step": step}, step=step)

    def report(metrics: dict, save: bool) -> None:
        if save and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_training_state(tmp, step_obj, step=step,
                                    position=DataPosition(epoch, steps_this_epoch, samples_seen),
                                    extra={"mlflow_run_id": settings.mlflow_run_id})
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    window_start, window_images = time.perf_counter(), 0
    while step < settings.total_steps:
        if early is not None:
            batches, early = early.batches(), None
        else:
            batches = iter(shard.iter_batches(**_batch_options(settings, local_batch, epoch)))
        steps_this_epoch = 0
        if skip_batches:  # resumed mid-epoch: drop the batches this epoch has already trained on
            beat(step, "data")
            while steps_this_epoch < skip_batches and next(batches, None) is not None:
                steps_this_epoch += 1
            skip_batches = 0
        while step < settings.total_steps:
            beat(step, "data")
            batch = next(batches, None)
            if not _all_true(batch is not None, device):
                break
            beat(step, "step")
            metrics = step_obj.run(batch)
            if not _all_true(math.isfinite(metrics["loss"]), device):
                report({"step": step, "nan_stop": 1.0}, save=False)
                if rank == 0:
                    print(f"[sseg] non-finite loss at step {step}: stopping; the last good checkpoint "
                          "is kept", flush=True)
                return
            step += 1
            steps_this_epoch += 1
            samples_seen += local_batch * world_size
            window_images += local_batch * world_size
            for callback in callbacks:
                callback({"step": step, "rank": rank, "world_size": world_size, "run_dir": settings.run_dir,
                          "metrics": metrics})
            if step % settings.log_every == 0 or step == settings.total_steps:
                elapsed = time.perf_counter() - window_start
                metrics["images_per_s"] = window_images / max(elapsed, 1e-9)
                metrics["epoch"] = epoch
                metrics["samples_seen"] = samples_seen
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


def _batch_options(settings: LoopSettings, local_batch: int, epoch: int) -> dict:
    """``iter_batches`` arguments of one epoch (the local shuffle's seed follows the data seed and the epoch)."""
    seeded = settings.data_seed is not None and settings.shuffle_buffer
    return dict(batch_size=local_batch, batch_format="numpy", drop_last=True,
                local_shuffle_buffer_size=settings.shuffle_buffer or None,
                local_shuffle_seed=settings.data_seed * 1000 + epoch if seeded else None, prefetch_batches=2)


class _FirstBatch:
    """Pulls the first batch of an iterable in a background thread; :meth:`batches` iterates over every batch
    (an error of the pull is raised at its first ``next``, in the training thread)."""

    def __init__(self, iterable) -> None:
        self._iterator = iter(iterable)
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._pull, name="sseg-first-batch", daemon=True)
        self._thread.start()

    def _pull(self) -> None:
        try:
            self._box["first"] = next(self._iterator, None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread
            self._box["error"] = exc

    def batches(self):
        """A generator: it waits for the first batch only when asked for it, so the loop's "waiting for data"
        heartbeat comes before the wait (the stall detector tells a starved data stage from a slow start)."""
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        first = self._box["first"]
        if first is None:
            return
        yield first
        yield from self._iterator


def newest_checkpoint(run_dir: str | Path) -> tuple[str, int] | None:
    """(directory, step) of the newest readable checkpoint under a run directory, or None; one that
    cannot be read (cut short when its writer was killed) is passed over."""
    from sseg.checkpoints import CHECKPOINT_FILE, load_checkpoint

    found = []
    for path in Path(run_dir).glob(f"checkpoint_*/{CHECKPOINT_FILE}"):
        found.append((path.stat().st_mtime, path))
    for _, path in sorted(found, reverse=True):
        try:
            step = int(load_checkpoint(path).get("step", 0))
        except Exception:  # noqa: BLE001 - a partial file: take the one before
            continue
        return str(path.parent), step
    return None


def make_trainer(settings: LoopSettings, dataset, *, run_name: str, storage_path: str, num_workers: int,
                 use_gpu: bool, cpus_per_worker: float | None, max_failures: int, checkpoints_to_keep: int,
                 placement_strategy: str = "PACK"):
    """``cpus_per_worker``: None means 1 (use :func:`plan_worker_cpus` to fit it to the cluster);
    ``placement_strategy``: Ray Train's PACK (default) or SPREAD across nodes."""
    from pathlib import Path

    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    data_config = None
    if settings.data_seed is not None:
        options = DataConfig.default_ingest_options()
        options.preserve_order = True
        data_config = DataConfig(execution_options=options)

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=settings.to_dict(),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1.0 if cpus_per_worker is None
                                                           else cpus_per_worker,
                                                           **({"GPU": 1} if use_gpu else {})},
                                     placement_strategy=placement_strategy),
        run_config=RunConfig(
            name=run_name, storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=checkpoints_to_keep),
            # Ray Train would also send every print of a worker through its logger, which writes it to
            # the worker's stderr while the print itself still reaches stdout: each progress line
            # appeared twice on the driver's console. Plain prints, forwarded once by Ray.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
        ),
        datasets={"train": dataset},
        **({"dataset_config": data_config} if data_config is not None else {}),
    )


# ---- CPU for the data stages, and stall detection ------------------------------------------------------


@dataclass(frozen=True)
class DataStageCpus:
    """A Ray Data stage that holds CPU while training runs. ``held``: an actor pool holding ``cpus`` in
    all for the whole run; else tasks of ``cpus`` each (a read or map task: Ray Data's default is 1 CPU),
    of which one at a time is the least that moves the stream."""

    name: str
    cpus: float
    held: bool = False

    def describe(self) -> str:
        return f"{self.name} ({self.cpus:g} CPU, held while training runs)" if self.held else \
            f"{self.name} ({self.cpus:g} CPU a task)"


# Every stage feeds training through Ray Data tasks of 1 CPU (reads and maps) unless the run names them.
DEFAULT_DATA_STAGES = (DataStageCpus("the Ray Data read and map tasks", 1.0),)


def data_stage_need(stages: Sequence[DataStageCpus]) -> float:
    """The least CPU the stages need beside the training workers: every held pool + the largest task."""
    return sum(s.cpus for s in stages if s.held) + max([s.cpus for s in stages if not s.held], default=0.0)


def plan_worker_cpus(num_workers: int, cpus_per_worker: float | None, data_cpus: float,
                     cluster_cpus: float, *, field: str = "train",
                     stages: Sequence[DataStageCpus] = ()) -> tuple[float, str | None]:
    """CPUs per training worker that leave ``data_cpus`` of the cluster to the Ray Data stages feeding
    training (Ray Data only gets what the training workers do not hold; with nothing left the stream
    stops and training waits forever). ``stages``: the stages that hold CPU; the reserve is raised to what
    they need (:func:`data_stage_need`), and when even that does not fit the error names them.
    ``data_cpus`` 0 is the user's call: no reserve, no stage check. ``cpus_per_worker`` None: 1, lowered
    to fit (returns a note saying so). Given explicitly and not fitting: a one-line :class:`SsegError`."""
    from sseg.errors import SsegError

    need = data_stage_need(stages) if data_cpus > 0 else 0.0
    if need > data_cpus + 1e-9:
        workers = num_workers * (cpus_per_worker or 0.0)
        if cluster_cpus - workers - need < (-1e-9 if cpus_per_worker is not None else 0.01 * num_workers):
            fit = math.floor((cluster_cpus - need) / num_workers * 100) / 100
            hint = (f"set {field}.cpus_per_worker={fit:g} or leave it unset" if fit > 0
                    else "use a larger cluster (ray.num_cpus on one machine) or fewer CPU actors")
            held = (f"{num_workers} training worker(s) x {cpus_per_worker:g} CPU leave "
                    f"{max(cluster_cpus - workers, 0):g}" if cpus_per_worker is not None
                    else f"{num_workers} training worker(s) leave less than {max(cluster_cpus - need, 0):g} + {need:g}")
            raise SsegError(f"the data stages feeding training need {need:g} CPU beside the training workers "
                            f"({' + '.join(s.describe() for s in stages)}); {held} of the cluster's "
                            f"{cluster_cpus:g} CPU, so {_starved(stages, cluster_cpus - workers)} would wait "
                            f"forever; {hint}")
        data_cpus = need
    room = cluster_cpus - data_cpus
    if cpus_per_worker is not None:
        if num_workers * cpus_per_worker <= room + 1e-9:
            return cpus_per_worker, None
        fit = math.floor(room / num_workers * 100) / 100
        hint = (f"set {field}.cpus_per_worker={fit:g} or leave it unset" if fit > 0
                else f"use fewer workers, a smaller {field}.data_cpus or a larger cluster")
        raise SsegError(f"{field}.num_workers={num_workers} x {field}.cpus_per_worker={cpus_per_worker:g} CPU "
                        f"leave {max(cluster_cpus - num_workers * cpus_per_worker, 0):g} of the cluster's "
                        f"{cluster_cpus:g} CPU for the data stages that feed training, which need "
                        f"{field}.data_cpus={data_cpus:g}: training would wait forever; {hint}")
    if num_workers <= room + 1e-9:
        return 1.0, None
    fit = math.floor(room / num_workers * 100) / 100
    if fit <= 0:
        raise SsegError(f"the cluster's {cluster_cpus:g} CPU cannot hold {num_workers} training worker(s) and "
                        f"{field}.data_cpus={data_cpus:g} CPU for the data stages that feed them; use fewer "
                        f"workers, a smaller {field}.data_cpus or a larger cluster")
    return fit, (f"{num_workers} training workers get {fit:g} CPU each, keeping {data_cpus:g} of the cluster's "
                 f"{cluster_cpus:g} CPU for the data stages ({field}.cpus_per_worker to choose)")


def _starved(stages: Sequence[DataStageCpus], free: float) -> str:
    """The first stage that cannot get its CPU from ``free`` (held pools take theirs first)."""
    for stage in sorted(stages, key=lambda s: not s.held):
        if stage.cpus > free + 1e-9:
            return stage.name
        if stage.held:
            free -= stage.cpus
    return stages[-1].name


def start_progress_monitor(name: str):
    """The named :class:`ProgressMonitor` actor for one run (``LoopSettings.progress_actor = name``)."""
    import ray

    from pipelines.training.progress import ProgressMonitor

    return ray.remote(num_cpus=0)(ProgressMonitor).options(name=name, namespace="sseg",
                                                            lifetime="non_detached").remote()


def _heartbeat(name: str | None, rank: int) -> Callable[[int, str], None]:
    if not name:
        return lambda step, phase: None
    import ray

    actor = ray.get_actor(name, namespace="sseg")
    last = [None]

    def beat(step: int, phase: str) -> None:
        if last[0] != (step, phase):
            last[0] = (step, phase)
            actor.beat.remote(rank, step, phase)  # fire and forget

    return beat


def data_stage_names(dataset) -> str:
    """``ReadParquet → MapBatches(CropCachedSamples)``: the operators of a Ray Dataset, in order."""
    from pipelines.io.ray_private import operator_names

    try:
        return " → ".join(operator_names(dataset))
    except Exception:  # noqa: BLE001 - private API; the message stays useful without the names
        return "the Ray Data stages"


def describe_stall(snapshot: dict, timeout_s: float, *, data_stages: str, num_workers: int,
                   worker_resources: dict, total: dict | None = None, free: dict | None = None) -> str:
    """One line: how long nothing moved, what every worker was doing, and where the CPUs are (``total`` /
    ``free``: the cluster's resources, asked from Ray when not given)."""
    now, workers = snapshot["now"], snapshot["workers"]
    idle = now - snapshot["last_change"]
    if total is None or free is None:
        import ray

        total, free = ray.cluster_resources(), ray.available_resources()
    cpus = (f"the cluster has {free.get('CPU', 0):g} of {total.get('CPU', 0):g} CPU free, the {num_workers} "
            f"training worker(s) asked for {num_workers * worker_resources.get('CPU', 0):g}")
    waiting = [r for r, (_, phase, _) in workers.items() if phase == "data"]
    stepping = [r for r, (_, phase, _) in workers.items() if phase == "step"]
    if len(workers) < num_workers and not stepping and not waiting:
        what = (f"{num_workers - len(workers)} of {num_workers} training worker(s) never started (each needs "
                f"{worker_resources}; the cluster cannot place them)")
    elif waiting and not stepping:
        step = max(workers[r][0] for r in waiting)
        what = (f"every training worker has waited {now - max(workers[r][2] for r in waiting):.0f} s for its "
                f"next batch after step {step}: the data stages feeding training are starved ({data_stages})")
    elif stepping:
        rank = min(stepping, key=lambda r: workers[r][2])
        what = (f"rank {rank} has been in its training step {now - workers[rank][2]:.0f} s at step "
                f"{workers[rank][0]} (waiting in a collective for a worker that is not there?); "
                f"{len(waiting)} worker(s) wait for data ({data_stages})")
    else:
        what = "the training workers are still starting (building the model, joining the process group)"
    return (f"no training progress for {idle:.0f} s (train.stall_timeout_s={timeout_s:g}): {what}; {cpus}")


def monitor_snapshot(monitor) -> Callable[[], dict]:
    """The poll :func:`fit_watched` calls: the :class:`ProgressMonitor` actor's snapshot."""
    import ray

    return lambda: ray.get(monitor.snapshot.remote(), timeout=30)


def fit_watched(trainer, snapshot: Callable[[], dict] | None, stall_timeout_s: float | None,
                describe: Callable[[dict], str]):
    """``trainer.fit()``, stopped with a one-line :class:`SsegError` (``describe(snapshot)``) when no
    worker changes phase for ``stall_timeout_s`` seconds. ``snapshot``: a :class:`ProgressMonitor`
    snapshot (:func:`monitor_snapshot`). None/0 timeout: no watch."""
    from sseg.errors import SsegError

    if not stall_timeout_s or snapshot is None:
        return trainer.fit()
    stalled: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(min(5.0, max(0.5, stall_timeout_s / 10))):
            try:
                state = snapshot()
            except Exception:  # noqa: BLE001 - a slow poll is no stall; try again
                continue
            if state["now"] - state["last_change"] >= stall_timeout_s:
                stalled.append(describe(state))
                print(f"[sseg] {stalled[0]}; stopping the run", flush=True)
                _thread.interrupt_main()  # Ray Train's SIGINT handler aborts the run gracefully
                return

    watcher = threading.Thread(target=watch, name="sseg-stall-watch", daemon=True)
    watcher.start()
    try:
        result = trainer.fit()
    except BaseException:  # KeyboardInterrupt, or SystemExit from Ray Train's SIGINT handler
        if stalled:
            raise SsegError(stalled[0]) from None
        raise
    finally:
        done.set()
    if stalled:
        raise SsegError(stalled[0])
    return result
