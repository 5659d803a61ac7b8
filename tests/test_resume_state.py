"""Save → load round trip of everything a resumed training run needs (no Ray): model, optimizer state,
scheduler state, step counter and data position compare exactly, and the next step after restoring
is bit-identical to the next step of the run that never stopped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sseg.checkpoints import (DataPosition, data_position_of, load_checkpoint, restore_training_state,
                              save_checkpoint, save_training_state)
from sseg.errors import CheckpointError

TINY_MODEL = [
    "model.num_queries=4", "model.dec_layers=2", "model.hidden_dim=32", "model.mask_dim=32",
    "model.nheads=2", "model.dim_feedforward=64", "model.text_layers=1", "model.text_width=32",
    "model.text_heads=2", "model.embed_dim=32", "model.context_length=16",
    "model.tiny_convnet_widths=[8,16,16,32]", "model.mask_feature_source=pooled",
    # the whole-caption text feature and no word-to-mask term: no per-step template draw, so two steps
    # can match bit for bit
    "train.caption_feature=sequence", "train.weight_words=0", "train.lr=1e-2",
]


def _step(seed: int):
    from pipelines.training.pretrain_step import build_pretrain_step
    from schemas.configs import PretrainConfig
    from sseg.config import load_config

    cfg = load_config(PretrainConfig, None, TINY_MODEL + [f"train.seed={seed}"])
    return build_pretrain_step(cfg.model_dump(mode="json"), device=torch.device("cpu"), rank=0, world_size=1,
                               total_steps=10, warmup_steps=3)


def _batch(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
            "segments": rng.integers(0, 4, (2, 32, 32), dtype=np.uint8),
            "caption": np.asarray(["red ball grass", "tree sky"], dtype=object)}


def _assert_tree_equal(a, b, where: str = "") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_tree_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tree_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _trees_equal(a, b) -> bool:
    try:
        _assert_tree_equal(a, b)
        return True
    except AssertionError:
        return False


def test_round_trip_restores_model_optimizer_scheduler_step_and_data_position(tmp_path):
    torch.manual_seed(0)
    running = _step(seed=0)
    for i in range(3):
        running.run(_batch(i))
    position = DataPosition(epoch=1, batches_in_epoch=2, samples_seen=7 * 16)
    save_training_state(tmp_path, running, step=3, position=position, extra={"mlflow_run_id": "abc"})

    fresh = _step(seed=1)  # another init: every piece below must come from the checkpoint
    assert not _trees_equal(fresh.model.state_dict(), running.model.state_dict())
    assert not _trees_equal(fresh.scheduler.state_dict(), running.scheduler.state_dict())
    step, restored_position = restore_training_state(tmp_path, fresh)

    assert step == 3 and restored_position == position
    _assert_tree_equal(fresh.model.state_dict(), running.model.state_dict(), "model")
    # AdamW: exp_avg, exp_avg_sq and the per-parameter step of every parameter, and the param groups
    _assert_tree_equal(fresh.optimizer.state_dict(), running.optimizer.state_dict(), "optimizer")
    adam_state = fresh.optimizer.state_dict()["state"]
    assert adam_state and all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in adam_state.values())
    _assert_tree_equal(fresh.scheduler.state_dict(), running.scheduler.state_dict(), "scheduler")
    assert fresh.scheduler.last_epoch == running.scheduler.last_epoch == 3
    assert [g["lr"] for g in fresh.optimizer.param_groups] == [g["lr"] for g in running.optimizer.param_groups]
    assert load_checkpoint(tmp_path)["extra"] == {"mlflow_run_id": "abc"}

    # the next step of the resumed run is the next step of the run that never stopped, bit for bit
    torch.manual_seed(7)
    expected = running.run(_batch(3))
    torch.manual_seed(7)
    got = fresh.run(_batch(3))
    assert got == expected
    _assert_tree_equal(fresh.model.state_dict(), running.model.state_dict(), "model after one more step")
    _assert_tree_equal(fresh.optimizer.state_dict(), running.optimizer.state_dict(), "optimizer after one more step")


def test_checkpoint_without_data_position_resumes_at_the_start_of_its_epoch(tmp_path):
    step_obj = _step(seed=0)
    save_checkpoint(tmp_path, model=step_obj.model, model_config=step_obj.model_config, kind=step_obj.kind,
                    model_name=step_obj.model_name, optimizer=step_obj.optimizer, scheduler=step_obj.scheduler,
                    step=5, epoch=2)
    state = load_checkpoint(tmp_path)
    del state["data_position"]  # as written before positions were saved
    assert data_position_of(state) == DataPosition(epoch=2, batches_in_epoch=0, samples_seen=0)


def test_restore_refuses_a_checkpoint_without_optimizer_state(tmp_path):
    step_obj = _step(seed=0)
    save_checkpoint(tmp_path, model=step_obj.model, model_config=step_obj.model_config, kind=step_obj.kind,
                    model_name=step_obj.model_name, step=5)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        restore_training_state(tmp_path, _step(seed=0))
