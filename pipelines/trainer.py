"""S-Seg pretraining on Ray Train: the per-worker loop and the TorchTrainer around it."""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


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


def train_loop_per_worker(loop_config: dict) -> None:
    import sseg  # noqa: F401 - torchvision fix in this worker process
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from schemas.configs import PretrainConfig
    from sseg.losses.contrastive import ContrastiveLoss
    from sseg.losses.criterion import SSegCriterion
    from sseg.models import SSegModel
    from sseg.prompts import resolve_templates
    from sseg.tracking import Tracker
    from sseg.training import (TrainStep, build_optimizer, check_model_config, cosine_with_warmup,
                               load_checkpoint, prepare_batch, save_checkpoint)

    cfg = PretrainConfig.model_validate(loop_config["config"])
    _quiet_report_log()
    total_steps = int(loop_config["total_steps"])
    warmup_steps = int(loop_config["warmup_steps"])
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(cfg.train.threads_per_worker or max(1, int(cfg.train.cpus_per_worker))))
    device = ray.train.torch.get_device()
    bf16 = cfg.train.bf16 == "on" or (cfg.train.bf16 == "auto" and device.type == "cuda")

    torch.manual_seed(cfg.train.seed)
    model = SSegModel(cfg.model).to(device)
    model_config = cfg.model.model_dump(mode="json")
    optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay, tuple(cfg.train.betas))
    scheduler = cosine_with_warmup(optimizer, total_steps, warmup_steps)
    step, epoch = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(directory, map_location=device)
            check_model_config(state, model_config, "being resumed")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, epoch = int(state["step"]), int(state["epoch"])
        if rank == 0:
            print(f"[sseg] resumed from checkpoint at step {step} (epoch {epoch})", flush=True)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True}) \
        if world_size > 1 else model
    criterion = SSegCriterion(
        weight_focal=cfg.train.weight_focal, weight_dice=cfg.train.weight_dice,
        weight_mask=cfg.train.weight_mask, weight_contrastive=cfg.train.weight_contrastive,
        contrastive=ContrastiveLoss(), weight_words=cfg.train.weight_words)
    needs_words = cfg.train.weight_words > 0 or cfg.train.caption_feature == "word_mean"
    word_templates = resolve_templates(cfg.train.word_templates) if needs_words else None
    word_rng = random.Random(cfg.train.seed * 1009 + rank)
    train_step = TrainStep(model, criterion, optimizer, scheduler, cfg.pseudo_masks.num_segments,
                           cfg.train.grad_clip, world_size=world_size, bf16=bf16,
                           caption_feature=cfg.train.caption_feature)
    tracker = Tracker(cfg.tracking.experiment, run_id=loop_config["mlflow_run_id"], enabled=rank == 0,
                      tracking_uri=loop_config["tracking_uri"])
    local_batch = cfg.train.global_batch_size // world_size
    shard = ray.train.get_dataset_shard("train")

    def report(metrics: dict, save: bool) -> None:
        if save and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(tmp, model=model, model_config=model_config, optimizer=optimizer,
                                scheduler=scheduler, step=step, epoch=epoch,
                                extra={"mlflow_run_id": loop_config["mlflow_run_id"]})
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    window_start, window_images = time.perf_counter(), 0
    while step < total_steps:
        batches = iter(shard.iter_batches(batch_size=local_batch, batch_format="numpy", drop_last=True,
                                          local_shuffle_buffer_size=cfg.train.shuffle_buffer or None,
                                          prefetch_batches=2))
        steps_this_epoch = 0
        while step < total_steps:
            batch = next(batches, None)
            if not _all_true(batch is not None, device):
                break
            if cfg.train.fault_injection_step == step and rank == 0:
                marker = Path(loop_config["run_dir"]) / "fault_injected"
                if not marker.exists():
                    marker.write_text(str(step))
                    print(f"[sseg] fault injection: worker exits at step {step}", flush=True)
                    os._exit(1)
            data = prepare_batch(batch["image"], batch["segments"], batch["caption"],
                                 cfg.model.context_length, device, word_templates, word_rng)
            metrics = train_step(data)
            if not _all_true(math.isfinite(metrics["loss"]), device):
                report({"step": step, "nan_stop": 1.0}, save=False)
                if rank == 0:
                    print(f"[sseg] non-finite loss at step {step}: stopping; the last good checkpoint "
                          "is kept", flush=True)
                return
            step += 1
            steps_this_epoch += 1
            window_images += local_batch * world_size
            if step % cfg.train.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - window_start
                metrics["images_per_s"] = window_images / max(elapsed, 1e-9)
                metrics["epoch"] = epoch
                tracker.log_metrics({f"train.{k}": v for k, v in metrics.items()}, step=step)
                if rank == 0:
                    print(f"[sseg] step {step}/{total_steps} loss {metrics['loss']:.3f} "
                          f"mask {metrics.get('loss_mask', float('nan')):.3f} "
                          f"con {metrics.get('loss_contrastive', float('nan')):.3f} "
                          + (f"words {metrics['loss_words']:.3f} " if "loss_words" in metrics else "") +
                          f"T {metrics['temperature']:.1f} collapse {metrics['query_collapse']:.2f} "
                          f"{metrics['images_per_s']:.0f} img/s", flush=True)
                save = step % cfg.train.checkpoint_every == 0 or step == total_steps
                report({"step": step, **metrics}, save=save)
                window_start, window_images = time.perf_counter(), 0
            elif step % cfg.train.checkpoint_every == 0:
                report({"step": step, **metrics}, save=True)
        if steps_this_epoch == 0:
            raise RuntimeError("the training data yielded no full batch: fewer samples than "
                               f"train.global_batch_size={cfg.train.global_batch_size}")
        epoch += 1


def make_trainer(cfg, dataset, *, loop_config: dict, run_name: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = str(Path(cfg.storage_path).resolve())
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                     resources_per_worker={"CPU": cfg.train.cpus_per_worker,
                                                           **({"GPU": 1} if cfg.train.use_gpu else {})}),
        run_config=RunConfig(
            name=run_name, storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
        ),
        datasets={"train": dataset},
    )
