"""The trainer's run identity (no Ray): a new run never takes an existing name, --resume latest finds this
stage's newest run, and a resume must repeat the run's config (runtime, steps and eval may differ)."""

from __future__ import annotations

import json
import os
import time

import pytest

from pipelines.training.trainer import RUN_INFO, resume_config, run_identity
from schemas.configs import PretrainConfig, SemiVLConfig
from sseg.config import load_config
from sseg.errors import ConfigError


def _cfg(tmp_path, *overrides, cls=PretrainConfig):
    return load_config(cls, None, [f"storage_path={tmp_path}", *overrides])


def _started(run, mtime=None):
    """What open_run writes for a new run (without MLflow)."""
    run.dir.mkdir(parents=True)
    (run.dir / RUN_INFO).write_text(json.dumps({"run_name": run.name, "stage": run.stage,
                                                "mlflow_run_id": "0" * 32, "config": run.config}))
    if mtime is not None:
        os.utime(run.dir / RUN_INFO, (mtime, mtime))


def test_a_new_run_never_takes_an_existing_name(tmp_path):
    cfg = _cfg(tmp_path, "tracking.run_name=x")
    run = run_identity("pretrain", cfg, None)
    assert run.name == "x" and not run.resuming and not run.dir.exists()  # nothing written
    _started(run)
    with pytest.raises(ConfigError, match="tracking.run_name=x: a run of that name exists.*--resume x"):
        run_identity("pretrain", _cfg(tmp_path, "tracking.run_name=x", "train.lr=0.003"), None)


def test_generated_names_take_a_fresh_directory(tmp_path):
    first = run_identity("semivl", _cfg(tmp_path, cls=SemiVLConfig), None)
    _started(first)
    second = run_identity("semivl", _cfg(tmp_path, cls=SemiVLConfig), None)
    assert second.name != first.name and second.name.startswith("semivl-") and not second.dir.exists()


def test_resume_latest_is_this_stages_newest_run(tmp_path):
    now = time.time()
    _started(run_identity("pretrain", _cfg(tmp_path, "tracking.run_name=old"), None), now - 20)
    _started(run_identity("pretrain", _cfg(tmp_path, "tracking.run_name=new"), None), now - 10)
    _started(run_identity("semivl", _cfg(tmp_path, "tracking.run_name=other", cls=SemiVLConfig), None), now)
    run = run_identity("pretrain", _cfg(tmp_path), "latest")
    assert run.resuming and run.name == "new" and run.mlflow_run_id == "0" * 32
    assert run_identity("pretrain", _cfg(tmp_path), "old").name == "old"
    with pytest.raises(ConfigError, match="no pretrain run of that name"):
        run_identity("pretrain", _cfg(tmp_path), "other")
    with pytest.raises(ConfigError, match="no self-train run under"):
        run_identity("self-train", _cfg(tmp_path), "latest")


def test_resume_must_repeat_the_config_but_not_runtime_steps_or_eval(tmp_path):
    _started(run_identity("pretrain", _cfg(tmp_path, "tracking.run_name=r"), None))
    run_identity("pretrain", _cfg(tmp_path, "train.steps=5", "train.num_workers=2", "train.log_every=1",
                                  "eval.labeled_split=null", "ray.num_cpus=4"), "r")
    with pytest.raises(ConfigError, match=r"another config \(train.lr: 0.001, now 0.003\)"):
        run_identity("pretrain", _cfg(tmp_path, "train.lr=0.003"), "r")
    with pytest.raises(ConfigError, match="model.num_queries"):
        run_identity("pretrain", _cfg(tmp_path, "model.num_queries=3"), "r")


def test_resume_config_keeps_the_parent():
    cfg = load_config(SemiVLConfig, None, [])
    assert resume_config(cfg, {"parent": "abc"})["parent"] == "abc"
    assert "train.lr" in resume_config(cfg) and "train.num_workers" not in resume_config(cfg)
