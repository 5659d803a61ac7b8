"""Checkpoints of every training stage: one file format, one loader for every kind.

A checkpoint is ``{"kind", "model_name", "model_config", "model", "optimizer", "scheduler", "step",
"epoch", "data_position", "extra"}`` saved with ``torch.save`` and read with ``weights_only=True``.
``kind`` names the stage that wrote it (``sseg-pretrain``, ``sseg-plus``, …); ``model_name`` + ``model_config`` rebuild
the model through :mod:`sseg.models.registry`. Checkpoints written before ``model_name`` existed are
S-Seg pretraining checkpoints (model ``sseg``).

Resuming a training stage (:func:`save_training_state` / :func:`restore_training_state`, used by the
training loop) restores the model, the optimizer state (AdamW's ``exp_avg``, ``exp_avg_sq``, ``step``),
the scheduler (``last_epoch``, hence the learning rate), the step counter and the data position
(:class:`DataPosition`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from sseg.errors import CheckpointError, first_line

CHECKPOINT_FILE = "sseg_checkpoint.pt"
PRETRAIN_KIND = "sseg-pretrain"
_LEGACY_MODEL = {PRETRAIN_KIND: "sseg"}


@dataclass(frozen=True)
class DataPosition:
    """Where the training data stood when a checkpoint was written.

    ``epoch``: the data epoch in progress; ``batches_in_epoch``: the batches every worker had taken
    from its shard of that epoch (all workers take the same number); ``samples_seen``: the samples of
    all workers together since step 0. On resume the loop re-opens epoch ``epoch`` and skips its first
    ``batches_in_epoch`` batches on every worker, so the epoch boundaries, the samples seen per epoch
    and the epoch number logged with each step are those of an uninterrupted run. The skipped batches
    are read and dropped (data-loading time, no training). With seeded data (``train.deterministic_data``,
    the default) the epoch's order and crops are those of the uninterrupted run, so the resumed run sees the
    same samples; without it the rest of the epoch comes from a fresh shuffle — exact in count only.
    """

    epoch: int = 0
    batches_in_epoch: int = 0
    samples_seen: int = 0


def save_checkpoint(directory: str | Path, *, model: nn.Module, model_config: dict, kind: str = PRETRAIN_KIND,
                    model_name: str = "sseg", optimizer=None, scheduler=None, step: int = 0, epoch: int = 0,
                    extra: dict | None = None, data_position: DataPosition | None = None) -> Path:
    """Write atomically (temp file + rename): a crash mid-save never leaves a half checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    core = model.module if hasattr(model, "module") else model
    state = {
        "kind": kind, "model_name": model_name, "model_config": model_config,
        "model": core.state_dict(), "step": step, "epoch": epoch, "extra": extra or {},
        "data_position": asdict(data_position or DataPosition(epoch=epoch)),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
    }
    tmp = directory / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / CHECKPOINT_FILE)
    return directory / CHECKPOINT_FILE


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    kinds: Iterable[str] | None = None) -> dict:
    """Read a checkpoint (the file or the directory holding it); ``kinds``: the kinds accepted."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    if not isinstance(state, dict) or "kind" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not an sseg checkpoint")
    state.setdefault("model_name", _LEGACY_MODEL.get(state["kind"], "sseg"))
    kinds = list(kinds) if kinds is not None else None
    if kinds is not None and state["kind"] not in kinds:
        raise CheckpointError(f"{path} is a '{state['kind']}' checkpoint; this needs {' or '.join(kinds)}")
    return state


def save_training_state(directory: str | Path, step_obj, *, step: int, position: DataPosition,
                        extra: dict | None = None) -> Path:
    """The checkpoint a training stage resumes from: ``step_obj`` is a :class:`sseg.training.TrainingStep`
    (its unwrapped model, optimizer, scheduler, kind, model name and config)."""
    return save_checkpoint(directory, model=step_obj.core, model_config=step_obj.model_config,
                           kind=step_obj.kind, model_name=step_obj.model_name, optimizer=step_obj.optimizer,
                           scheduler=step_obj.scheduler, step=step, epoch=position.epoch, extra=extra,
                           data_position=position)


def data_position_of(state: dict) -> DataPosition:
    """The data position of a loaded checkpoint; one written before positions were saved resumes at the
    start of its epoch (what the loop did then)."""
    saved = state.get("data_position")
    if not saved:
        return DataPosition(epoch=int(state.get("epoch", 0)))
    return DataPosition(epoch=int(saved["epoch"]), batches_in_epoch=int(saved["batches_in_epoch"]),
                        samples_seen=int(saved["samples_seen"]))


def restore_training_state(path: str | Path, step_obj, map_location="cpu") -> tuple[int, DataPosition]:
    """Load model, optimizer and scheduler state into ``step_obj`` (before any DDP wrapping); returns the
    step counter and the data position to continue from. Refuses a checkpoint of another kind or model."""
    state = load_checkpoint(path, map_location=map_location, kinds=[step_obj.kind])
    check_model_config(state, step_obj.model_config, "being resumed", step_obj.model_name)
    if state.get("optimizer") is None or state.get("scheduler") is None:
        raise CheckpointError(f"checkpoint {path} has no optimizer/scheduler state: it cannot be resumed")
    step_obj.load_state_dict(state)
    return int(state["step"]), data_position_of(state)


# Research-only model fields that older checkpoints carry; at these values the model is today's.
_RETIRED_MODEL_FIELDS = {"sseg": {"mask_pooling": "assignment", "semantic_head_layers": 0}}


def upgrade_model_config(model_name: str, model_config: dict, source: str = "checkpoint") -> dict:
    """Drop retired fields that hold today's behaviour; refuse a config that used a retired variant."""
    config = dict(model_config)
    for key, value in _RETIRED_MODEL_FIELDS.get(model_name, {}).items():
        if key in config:
            if config[key] != value:
                raise CheckpointError(f"{source} was trained with the research variant model.{key}="
                                      f"{config[key]!r}, which the product model no longer builds")
            del config[key]
    return config


def _with_defaults(model_name: str, model_config: dict) -> dict:
    """The config with every field filled in, so a checkpoint written before a field existed compares
    equal to a config that leaves that field at its default."""
    from sseg.models.registry import validate_model_config

    try:
        return validate_model_config(model_name, model_config).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError: compare the raw dicts, naming the first difference
        return dict(model_config)


def check_model_config(state: dict, model_config: dict, source: str, model_name: str = "sseg") -> None:
    """Refuse to resume from a checkpoint of another model (first differing field named)."""
    saved_name = state.get("model_name", "sseg")
    if saved_name != model_name:
        raise CheckpointError(f"checkpoint {source} holds a '{saved_name}' model, this config builds '{model_name}'")
    saved = _with_defaults(model_name, upgrade_model_config(model_name, state.get("model_config", {}), source))
    model_config = _with_defaults(model_name, model_config)
    for key in sorted(set(saved) | set(model_config)):
        if saved.get(key) != model_config.get(key):
            raise CheckpointError(
                f"checkpoint {source} was trained with model.{key}={saved.get(key)!r}, "
                f"this config has {model_config.get(key)!r}")


def model_from_checkpoint(path: str | Path, map_location="cpu", kinds: Iterable[str] | None = None,
                          segmenting: bool = False):
    """(model in eval mode, state) from a checkpoint of any registered kind. ``segmenting``: refuse a
    model that cannot segment with class names."""
    from sseg.models.registry import create_model, model_entry

    state = load_checkpoint(path, map_location, kinds)
    if segmenting and not model_entry(state["model_name"]).segments:
        raise CheckpointError(f"checkpoint {path} holds a '{state['model_name']}' model, which cannot segment")
    state["model_config"] = upgrade_model_config(state["model_name"], state["model_config"], str(path))
    # the backbone's starting weights (an MAE / ImageNet file named in the config) are all replaced by the
    # checkpoint's own below: not read again (the file may be gone, or on another machine)
    build = state["model_config"]
    if build.get("backbone_checkpoint"):
        build = {**build, "backbone_checkpoint": None}
    model = create_model(state["model_name"], build)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit its own model config: "
                              f"{first_line(exc)}") from None
    return model.eval(), state
