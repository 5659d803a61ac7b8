"""jobs/tuss.py end to end through Ray Data and MLflow on the tiny world, the cache's resume and refusal, and bad
input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

TINY_SSEG = {
    "backbone": "tiny_convnet", "tiny_convnet_widths": [8, 16, 16, 32], "image_size": 64, "hidden_dim": 32,
    "num_queries": 4, "dec_layers": 1, "nheads": 2, "dim_feedforward": 64, "decoder_dropout": 0.0,
    "mask_dim": 32, "text_layers": 1, "text_width": 32, "text_heads": 2, "context_length": 16,
    "embed_dim": 32, "mask_feature_source": "pooled",
}
PARENT = "0123456789abcdef0123456789abcdef"


def _checkpoint(directory):
    from sseg.checkpoints import save_checkpoint
    from sseg.models.config import ModelConfig
    from sseg.models.sseg_model import SSegModel

    torch.manual_seed(0)
    return save_checkpoint(directory, model=SSegModel(ModelConfig.model_validate(TINY_SSEG)), model_config=TINY_SSEG,
                           extra={"mlflow_run_id": PARENT})


def _overrides(tiny_world, tmp_path, checkpoint):
    # the tiny world's own config (conftest), so its captions can be rendered again
    return ["world.seed=3", "world.num_train=96", "world.num_val=24", "world.num_labeled_train=16",
            "world.shard_size=32", f"world_dir={tiny_world}", f"data.root={tiny_world / 'voc'}",
            f"vlm.checkpoint={checkpoint}", f"cache_dir={tmp_path / 'cache'}", f"storage_path={tmp_path / 'runs'}",
            "data.templates=single", "data.chunk_size=10", 'classifier.grid={"alpha": [0.5, 0.9], "k": [5]}',
            "classifier.glcc.probe.epochs=3", "masks.generator.num_segments=4", "threads=1", "pictures=2"]


@pytest.mark.slow
def test_tuss_weak_from_captions_end_to_end_and_resume(ray_session, tiny_world, tmp_path, mlflow_uri, capsys):
    import tuss as job
    from mlflow.tracking import MlflowClient

    checkpoint = _checkpoint(tmp_path / "sseg")
    assert job.main(_overrides(tiny_world, tmp_path, checkpoint)) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["f1"] <= 1.0
    assert "to embed" in out and "(train): 0 of 2 chunks already" in out
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["sseg.stage"] == "tuss"
    assert run.data.tags["sseg.parent_run_id"] == PARENT  # lineage to the VLM's run
    metrics = run.data.metrics
    for name in ("eval.miou", "eval.f1", "eval.pseudo_before.miou", "eval.pseudo_after.miou", "eval.seconds.probe",
                 "embed.train.images_ok", "embed.val.images_per_s"):
        assert name in metrics, name
    assert metrics["embed.train.images_ok"] == 16 and metrics["embed.val.images_ok"] == 24
    assert run.data.params["supervision.kind"] == "weak" and run.data.params["supervision.image_labels"] == "captions"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert "eval/input_prediction_truth.png" in artifacts and "eval/tuning_trials.json" in artifacts
    # --resume latest continues that MLflow run, reads the cache (nothing embedded again), same figures
    assert job.main(["--resume", "latest", *_overrides(tiny_world, tmp_path, checkpoint)]) == 0
    out = capsys.readouterr().out
    again = json.loads(out.strip().splitlines()[-1])
    assert "(train): 2 of 2 chunks already" in out and "(val): 3 of 3 chunks already" in out
    assert again["miou"] == pytest.approx(result["miou"]) and again["f1"] == pytest.approx(result["f1"])
    assert again["mlflow_run_id"] == result["mlflow_run_id"]
    assert client.get_run(result["mlflow_run_id"]).info.status == "FINISHED"
    # resuming with another config is refused, naming the field
    changed = [*_overrides(tiny_world, tmp_path, checkpoint), "classifier.glcc.probe.epochs=4"]
    err = _run_bad(["--resume", "latest", *changed], capsys)
    assert "another config (classifier.glcc.probe.epochs" in err
    # an interrupted cache (a chunk without its done marker) redoes that chunk only
    marker = next((tmp_path / "cache").glob("world-train-*/_done/chunk-00001.json"))
    marker.unlink()
    assert job.main(_overrides(tiny_world, tmp_path, checkpoint)) == 0
    out = capsys.readouterr().out
    assert "(train): 1 of 2 chunks already" in out and "(val): 3 of 3 chunks already" in out
    assert json.loads(out.strip().splitlines()[-1])["miou"] == pytest.approx(result["miou"])


def _run_bad(args, capsys):
    import tuss as job
    from pipelines.cli import run_job

    with pytest.raises(SystemExit) as exit_info:
        run_job(job.main, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("case", ["wrong_weights", "bad_label", "clip_without_weights", "method_mismatch"])
def test_bad_input_is_one_line_exit_2_nothing_written(case, tiny_world, tmp_path, unwritten_mlflow_uri, capsys):
    import shutil

    from PIL import Image

    checkpoint = _checkpoint(tmp_path / "sseg")
    args = _overrides(tiny_world, tmp_path, checkpoint)
    if case == "wrong_weights":  # a CLIP file that is another model
        torch.save({"visual.conv1.weight": torch.zeros(8, 3, 16, 16), "visual.proj": torch.zeros(8, 4),
                    "text_projection": torch.zeros(8, 4), "token_embedding.weight": torch.zeros(10, 8)},
                   tmp_path / "clip.pt")
        args += ["vlm.kind=clip", f"vlm.checkpoint={tmp_path / 'clip.pt'}", "embed.method=dba"]
        expect = "does not fit"
    elif case == "bad_label":
        world = tmp_path / "world"
        shutil.copytree(tiny_world / "voc", world / "voc")
        for path in sorted((world / "voc" / "SegmentationClass").glob("val_*.png"))[:1]:
            label = np.array(Image.open(path))
            label[0, 0] = 40
            image = Image.fromarray(label, mode="P")
            image.putpalette(Image.open(path).getpalette())
            image.save(path)
        args += [f"data.root={world / 'voc'}"]
        expect = "[40] outside the 14 classes"
    elif case == "clip_without_weights":
        args += ["vlm.kind=clip", "vlm.checkpoint=null", "embed.method=dba"]
        expect = "needs vlm.checkpoint"
    else:
        args += ["embed.method=dba"]
        expect = "does not fit vlm.kind=sseg"
    assert expect in _run_bad(args, capsys)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_the_cache_refuses_another_identity(tmp_path):
    from pipelines.io.tuss_cache import TussCache, tuss_identity
    from sseg.errors import DataError

    base = dict(vlm_file=None, vlm_kind="sseg", masks={"source": "generator"}, embed={"method": "pooled"},
                dataset="world", split="train", class_names=["a", "b"], keys=["x", "y", "z"], chunk_size=2)
    cache = TussCache(tmp_path / "c", tuss_identity(**base)).open()
    assert cache.num_chunks() == 2 and cache.todo() == [0, 1]
    with pytest.raises(DataError, match="another embedding method"):
        TussCache(tmp_path / "c", tuss_identity(**{**base, "embed": {"method": "pooled_dba"}})).open()
    with pytest.raises(DataError, match="another mask source"):
        TussCache(tmp_path / "c", tuss_identity(**{**base, "masks": {"source": "files"}})).open()


@pytest.mark.slow
def test_tuss_masks_from_files_full_supervision_counts_bad_files(ray_session, tiny_world, tmp_path, mlflow_uri,
                                                                   capsys):
    """masks.source=files (how SAM masks come in): a file of the wrong size, a missing file and an image whose
    only mask is under min_area are skipped and counted; the rest is classified under full supervision."""
    import tuss as job
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from sseg.data.datasets import build_dataset

    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for split in ("train", "val"):
        reader = build_dataset("world", tiny_world / "voc", split)
        for i, key in enumerate(reader.keys[:6]):
            _, image, label = reader[i]
            ids = np.where(label == 255, 0, label).astype(np.uint8)  # one mask per class present
            if split == "train" and i == 0:
                ids = ids[:32]  # wrong size
            if split == "train" and i == 1:
                continue  # no file
            if split == "train" and i == 2:
                ids = np.zeros_like(ids)
                ids[0, 0] = 1  # id 1 has one pixel: under min_area; id 0 covers the rest
            Image.fromarray(ids).save(masks_dir / f"{key}.png")
    args = _overrides(tiny_world, tmp_path, _checkpoint(tmp_path / "sseg")) + [
        "masks.source=files", f"masks.files_dir={masks_dir}", "supervision.kind=full", "data.max_train_images=6",
        "data.max_val_images=6", "classifier.tune=false", "classifier.glcc.propagation.k=5"]
    assert job.main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = MlflowClient(mlflow_uri).get_run(result["mlflow_run_id"]).data.metrics
    assert metrics["embed.train.images_size_mismatch"] == 1 and metrics["embed.train.images_missing_file"] == 1
    assert metrics["embed.train.images_ok"] == 4 and metrics["embed.val.images_ok"] == 6
    assert metrics["embed.train.dropped_masks"] >= 1
    assert 0.0 <= result["miou"] <= 1.0


@pytest.mark.slow
def test_tuss_table_prints_the_tables_with_nested_runs(ray_session, tiny_world, tmp_path, mlflow_uri, capsys):
    import tuss as job
    from mlflow.tracking import MlflowClient

    args = ["table", *_overrides(tiny_world, tmp_path, _checkpoint(tmp_path / "sseg")), "supervision.num_labeled=4",
            "classifier.glcc.probe.epochs=1", "classifier.glcc.propagation.k=5", "classifier.glcc.noise_model.epochs=2",
            "pictures=0"]
    assert job.main(args) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    for row in ("| pooled + probe |", "| + DBA + probe |", "| + DBA + GLCC |", "| pooled + GLCC (the configured "
                "embedding) |", "| LP→IL→LP→IL |", "| GLCC, confusion noise |",
                "| GLCC + noise model, confusion noise |"):
        assert row in out, row
    client = MlflowClient(mlflow_uri)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.data.tags["sseg.stage"] == "tuss-table" and parent.data.tags["sseg.parent_run_id"] == PARENT
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=100)
    assert len(children) == 3 * 4 - 1 + 3 + 7 + 2 * 3 * 4
    assert all(c.info.status == "FINISHED" and "miou" in c.data.metrics for c in children)
    modelled = [c for c in children if "noise model" in c.data.tags["sseg.table_cell"]]
    assert len(modelled) == 2 * 4 and all("noise_model.heldout_nll.identity" in c.data.metrics for c in modelled)
    tables = json.loads((tmp_path / "runs" / f"tuss-table-{parent.info.run_id[:8]}" / "table.json").read_text())
    assert set(tables["main"][2]["cells"]) == {"full", "semi", "weak"}  # GLCC trains nothing without supervision
