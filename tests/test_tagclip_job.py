"""jobs/tagclip.py: bad input (one line, exit 2, nothing written), configs/tagclip_voc.yaml with a random-init
CLIP of the real architecture, and tiny end-to-end runs through Ray Train, Ray Data and MLflow (a run, the
checkpoint through segment/evaluate's loader)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_semivl import _tiny_sseg_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PARENT = "0123456789abcdef0123456789abcdef"


def _overrides(tiny_world, tmp_path, checkpoint, *extra):
    return ["world=null", f"data.root={tiny_world / 'voc'}", "data.templates=single", f"vlm.checkpoint={checkpoint}",
            "model.heads=2", "train.steps=2", "train.batch_size=4", "train.log_every=1", "train.checkpoint_every=2",
            "eval.max_images=4", "eval.pictures=2", f"storage_path={tmp_path / 'runs'}",
            "tracking.run_name=tiny-tagclip", *extra]


def _split(tmp_path, name, **spec) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return f"data.split={path}"


@pytest.mark.parametrize("case", ["unknown_class", "no_unseen", "no_seen", "unseen_in_text", "embed_dim",
                                  "reserved", "heads"])
def test_bad_input_is_one_line_exit_2_nothing_written(case, tiny_world, tmp_path, unwritten_mlflow_uri, capsys):
    import tagclip as job
    from pipelines.cli import run_job

    checkpoint = _tiny_sseg_checkpoint(tmp_path / "sseg")
    extra = {
        "unknown_class": [_split(tmp_path, "unknown", unseen=["car", "unicorn"])],
        "no_unseen": [_split(tmp_path, "empty", unseen=[])],
        "no_seen": [_split(tmp_path, "everything", unseen=["ball", "box", "tree", "car", "house", "fish", "bird", "flower", "star",
                                             "cup", "sky", "grass", "water", "sand"])],
        "unseen_in_text": ["data.templates=[a photo of a {} next to a car.]"],
        "embed_dim": ["vlm.embed_dim=512"],
        "reserved": ["model.seen_classes=[ball]"],
        "heads": ["model.heads=3"],
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        run_job(job.main, _overrides(tiny_world, tmp_path, checkpoint, *extra))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert {"unknown_class": "names class 'unicorn' (unseen), which the dataset does not have",
            "no_unseen": "has no unseen class", "no_seen": "leaves no seen class",
            "unseen_in_text": "unseen class 'car' occurs in the training text",
            "embed_dim": "embedding size 32, the config expects vlm.embed_dim=512",
            "reserved": "model.seen_classes is set by the run",
            "heads": "embedding size 32 is not divisible by model.heads=3"}[case] in err[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_parent_names_the_command_that_makes_one(tmp_path, mlflow_uri, capsys):
    import tagclip as job
    from pipelines.cli import run_job

    with pytest.raises(SystemExit) as exit_info:
        run_job(job.main, [f"storage_path={tmp_path / 'runs'}", f"world_dir={tmp_path / 'world'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "python jobs/pretrain.py" in err and "vlm.checkpoint" in err
    assert not (tmp_path / "world").exists() and not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def random_clip_b16(tmp_path_factory):
    """A random-init open_clip ViT-B/16 state dict (fp16 to halve the file), as a local weights file."""
    import sseg._compat  # noqa: F401 - torchvision fix before open_clip
    import open_clip

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "ViT-B-16-random.pt"
    torch.save({k: v.half() for k, v in open_clip.create_model("ViT-B-16").state_dict().items()}, path)
    return path


def _voc_root(tmp_path) -> Path:
    from PIL import Image

    base = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    for key in ("a", "b"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(base / "JPEGImages" / f"{key}.jpg")
        Image.fromarray(np.full((8, 8), 17, np.uint8), mode="L").save(base / "SegmentationClass" / f"{key}.png")
    for split in ("train_aug", "val"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("a\nb\n")
    return base


def test_voc_config_builds_with_a_random_clip_of_the_real_architecture(random_clip_b16, tmp_path):
    from pipelines.inputs.tagclip import prepare
    from pipelines.runs.tagclip import build_step
    from schemas.configs import TagCLIPConfig
    from sseg.config import load_config
    from sseg.tagclip.splits import ClassSplit

    cfg = load_config(TagCLIPConfig, ROOT / "configs" / "tagclip_voc.yaml",
                      [f"vlm.checkpoint={random_clip_b16}", f"data.root={_voc_root(tmp_path)}"])
    prep = prepare(cfg)
    assert prep.split.unseen_names == ("potted plant", "sheep", "sofa", "train", "tv monitor")
    assert len(prep.split.seen) == 15 and prep.split.ignored == (0,)
    assert prep.training_text[0] == "a photo of a aeroplane." and not any("sheep" in t for t in prep.training_text)
    assert prep.model_config["clip_model"] == "ViT-B-16" and prep.model_config["prompt_tokens"] == 10
    from dataclasses import asdict

    step = build_step({"job": cfg.model_dump(mode="json"),
                       "resolved": {"model_config": prep.model_config, "vlm_checkpoint": prep.vlm_checkpoint,
                                    "train_split": asdict(prep.train_split)}},
                      device=torch.device("cpu"), rank=0, world_size=1, total_steps=20000, warmup_steps=1500)
    model = step.core
    assert model.prompts.embeddings.shape == (12, 10, 768)  # 10 prompts before each of the 12 blocks
    assert model.decoder.dim == 512 and model.decoder.layers[0].cross.heads == 8
    assert step.text.shape == (15, 512)
    state = {k: v.half() for k, v in model.vlm.clip.state_dict().items()}
    saved = torch.load(random_clip_b16, weights_only=True)
    assert all(torch.equal(state[k], saved[k]) for k in ("visual.proj", "text_projection"))  # the file was loaded
    lrs = {g["group"]: g["initial_lr"] for g in step.optimizer.param_groups}
    assert lrs == {"head": pytest.approx(2e-4), "prompts": pytest.approx(2e-4)}
    assert isinstance(ClassSplit(**asdict(prep.split)), ClassSplit)


def test_voc_config_refuses_a_missing_weights_file(tmp_path, mlflow_uri, capsys):
    import tagclip as job
    from pipelines.cli import run_job

    with pytest.raises(SystemExit) as exit_info:
        run_job(job.main, ["--config", str(ROOT / "configs" / "tagclip_voc.yaml"),
                           f"vlm.checkpoint={tmp_path / 'ViT-B-16.pt'}", f"storage_path={tmp_path / 'runs'}"])
    assert exit_info.value.code == 2
    assert "CLIP checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_job(job.main, ["--config", str(ROOT / "configs" / "tagclip_voc.yaml")])
    assert "vlm.kind=clip needs vlm.checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_tagclip_end_to_end(ray_session, tiny_world, tmp_path, mlflow_uri, capsys):
    """jobs/tagclip.py on the tiny world from a tiny S-Seg checkpoint: 4 steps through the real loop, seen /
    unseen evaluation, MLflow lineage; the checkpoint segments any class list through the loader that
    jobs/segment.py and jobs/evaluate.py use. (Killing a worker and ``--resume latest`` go through the same
    generic loop as S-Seg+'s and SemiVL's runs, whose end-to-end tests kill and resume them.)"""
    import tagclip as job
    from mlflow.tracking import MlflowClient

    from sseg.checkpoints import model_from_checkpoint
    from sseg.inference import SegmentConfig, Segmenter

    checkpoint = _tiny_sseg_checkpoint(tmp_path / "sseg", run_id=PARENT)
    args = _overrides(tiny_world, tmp_path, checkpoint, "train.steps=4", "tracking.run_name=tiny-tagclip")
    capsys.readouterr()
    assert job.main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert result["steps"] == 4 and run.info.status == "FINISHED" and run.info.run_name == "tiny-tagclip"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train.loss")) == [1, 2, 3, 4]
    for key in ("miou_seen", "miou_unseen", "hiou", "trusty_auroc", "unseen_as_seen"):
        assert 0.0 <= result[key] <= 1.0 or np.isnan(result[key])
    assert run.info.status == "FINISHED" and run.data.tags["sseg.stage"] == "tagclip"
    assert run.data.tags["sseg.parent_run_id"] == PARENT and run.data.tags["sseg.variant"] == "tagclip"
    assert run.data.tags["sseg.split"] == "world: unseen tree, car, house, water"
    assert {"eval.miou_seen", "eval.miou_unseen", "eval.hiou", "eval.miou"} <= set(run.data.metrics)
    model, state = model_from_checkpoint(result["checkpoint"], segmenting=True)
    assert state["kind"] == "tagclip" and state["model_name"] == "tagclip"
    assert "car" not in model.cfg.seen_classes and "ball" in model.cfg.seen_classes
    assert model.cfg.zero_shot_ensemble == 0.8  # the world default's inference travels with the checkpoint
    segmenter = Segmenter.for_classes(model, "ball,unicorn,grass", SegmentConfig(templates="single", bg_mode="none",
                                                                                 short_side=None, window=64,
                                                                                 stride=64))
    assert segmenter.predict(np.zeros((64, 64, 3), np.uint8)).labels.shape == (64, 64)
    import segment as segment_job

    image = next((tiny_world / "voc" / "JPEGImages").glob("*.jpg"))
    capsys.readouterr()
    assert segment_job.main(["--checkpoint", result["checkpoint"], "--classes", "ball,unicorn;horn horse,grass",
                             "--out", str(tmp_path / "seg"), str(image), "segment.templates=single",
                             "segment.short_side=null", "segment.window=64", "segment.stride=64"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 1
    assert (tmp_path / "seg" / f"{image.stem}_labels.png").is_file()




def test_ablation_evaluates_tagclip_under_each_other_inference_rule():
    from pipelines.runs.tagclip import NO_ENSEMBLE, NO_WEIGHTING, inference_rows

    assert inference_rows({"zero_shot_ensemble": 0.8}) == [
        (NO_WEIGHTING, "no_weighting", {"inference_weighting": False}),
        (NO_ENSEMBLE, "no_ensemble", {"zero_shot_ensemble": 0.0})]
    assert inference_rows({}) == [(NO_WEIGHTING, "no_weighting", {"inference_weighting": False})]  # the paper's
