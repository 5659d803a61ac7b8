"""Parent lookup (pipelines/lineage.py): the newest finished run of an experiment, a missing parent named in
one line with the command that makes one, nothing written before (no world, no MLflow store, no run)."""

from __future__ import annotations

import pytest

from pipelines.lineage import is_run_id, newest_finished_run


def test_run_id_pattern():
    assert is_run_id("0123456789abcdef0123456789abcdef")
    assert not is_run_id("0123456789abcdef") and not is_run_id("runs/x") and not is_run_id("G" * 32)


def test_newest_finished_run_with_and_without_checkpoint(tmp_path, mlflow_uri):
    from pipelines.tracking import tracked_run
    from sseg.checkpoints import save_checkpoint

    assert newest_finished_run("sseg-pretrain", with_checkpoint=True) is None
    checkpoint = save_checkpoint(tmp_path / "c", model=__import__("torch").nn.Linear(1, 1), model_config={})
    with tracked_run("sseg-pretrain", stage="pretrain") as with_ckpt:
        with_ckpt.log_artifact(checkpoint, "checkpoints/final")
    with tracked_run("sseg-pretrain", stage="pretrain") as without:
        pass
    with pytest.raises(RuntimeError):
        with tracked_run("sseg-pretrain", stage="pretrain"):
            raise RuntimeError("a failed run is never a parent")
    assert newest_finished_run("sseg-pretrain", with_checkpoint=False) == without.run_id
    assert newest_finished_run("sseg-pretrain", with_checkpoint=True) == with_ckpt.run_id


@pytest.mark.parametrize("job", ["self_train", "semivl"])
def test_missing_parent_is_one_line_naming_the_command_and_nothing_is_written(job, tmp_path, monkeypatch, capsys):
    import importlib

    from pipelines.cli import run_job

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    main = importlib.import_module(f"jobs.{job}").main
    with pytest.raises(SystemExit) as exit_info:
        run_job(main, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished run of experiment 'sseg-pretrain'" in err[0], err
    assert "`python jobs/pretrain.py`" in err[0]
    assert list(tmp_path.iterdir()) == []  # no world, no mlflow.db, no runs/
