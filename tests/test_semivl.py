"""SemiVL: known-answer unit tests (losses, masks, CutMix, λ schedule, concept max, freeze rule, decoder
shapes, bad input) and one tiny end-to-end run through real Ray Train + Ray Data + MLflow."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sseg.errors import CheckpointError, ConfigError, DataError
from sseg.semivl import losses as L
from sseg.semivl.augment import cutmix, cutmix_box, strong_view, weak_view
from sseg.semivl.config import SemiVLModelConfig
from sseg.semivl.model import SemiVLModel, max_over_concepts

TINY_SSEG = {
    "backbone": "tiny_convnet", "tiny_convnet_widths": [8, 16, 16, 32], "image_size": 64, "hidden_dim": 32,
    "num_queries": 4, "dec_layers": 1, "nheads": 2, "dim_feedforward": 64, "decoder_dropout": 0.0,
    "mask_dim": 32, "text_layers": 1, "text_width": 32, "text_heads": 2, "context_length": 16,
    "embed_dim": 32, "mask_feature_source": "pooled",
}
TINY_HEAD = {"channels": 16, "text_channels": 16, "up_channels": (16, 8), "skip_channels": (8, 4),
             "transformer_heads": 2, "deeplab_channels": 32}
TINY_CLIP = {  # an open_clip CLIP ViT of the paper's shape, shrunk (patch 16, 5 blocks)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 5, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def sseg_model(decoder="language", num_classes=None) -> SemiVLModel:
    torch.manual_seed(0)
    return SemiVLModel(SemiVLModelConfig(vlm="sseg", sseg=TINY_SSEG, decoder=decoder, num_classes=num_classes,
                                         **TINY_HEAD))


# ----------------------------------------------------------------------------- losses


def test_unimatch_weighting_matches_hand_computation():
    total, loss_u = L.unimatch_total(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0))
    assert loss_u.item() == pytest.approx(0.5 * 2 + 0.25 * 3 + 0.25 * 4)  # 2.75
    assert total.item() == pytest.approx((1 + 2.75) / 2)
    g = L.guidance_total(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), lam=0.1)
    assert g.item() == pytest.approx(0.1 * (0.25 + 0.5 + 2.0))


def test_confidence_mask_and_normalisation_by_valid_pixels():
    # 1 image, 2 classes, 4 pixels; logits give CE = log(1 + e^-2) for class 0 everywhere
    logits = torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]).view(1, 2, 1, 4)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    conf = torch.tensor([0.95, 0.9499, 0.99, 0.99]).view(1, 1, 4)
    ignore = torch.tensor([0, 0, 0, 255]).view(1, 1, 4)
    ce = math.log(1 + math.exp(-2.0))
    # kept: pixel 0 (conf == τ) and pixel 2; pixel 1 below τ; pixel 3 padding (not in the denominator)
    assert L.confident_loss(logits, target, conf, ignore, 0.95).item() == pytest.approx(2 * ce / 3, rel=1e-6)
    assert L.confidence_mask(conf, ignore, 0.95).tolist() == [[[True, False, True, False]]]


def test_guidance_targets_scale_softmax_and_threshold():
    # cos sims of 2 classes at 3 pixels: margins 0.03 / 0.02 / 0.0 → ×100 → p_top = σ(3), σ(2), 0.5
    sim = torch.tensor([[0.53, 0.52, 0.5], [0.5, 0.5, 0.5]]).view(1, 2, 1, 3)
    target = L.guidance_targets(sim, (1, 3), None, scale=100.0, threshold=0.9)
    # σ(3) = 0.9526 kept, σ(2) = 0.8808 and 0.5 ignored
    assert target.tolist() == [[[0, 255, 255]]]
    ignore = torch.tensor([[[255, 0, 0]]])
    assert L.guidance_targets(sim, (1, 3), ignore).tolist() == [[[255, 255, 255]]]
    # 'mean_all': the kept pixels' CE over all pixels
    logits = torch.zeros(1, 2, 1, 3)
    assert L.guidance_loss(logits, target).item() == pytest.approx(math.log(2) / 3)


def test_guidance_lambda_is_linear_from_point_one_to_zero():
    assert L.guidance_lambda(0, 200) == pytest.approx(0.1)
    assert L.guidance_lambda(50, 200) == pytest.approx(0.075)
    assert L.guidance_lambda(100, 200) == pytest.approx(0.05)
    assert L.guidance_lambda(200, 200) == pytest.approx(0.0)


def test_max_over_concepts():
    scores = torch.tensor([1.0, 5.0, 2.0, -1.0, 3.0]).view(1, 5, 1, 1)
    concept_to_class = torch.tensor([0, 0, 1, 1, 2])
    out = max_over_concepts(scores, concept_to_class, 3)
    assert out.flatten().tolist() == [5.0, 2.0, 3.0]


# ----------------------------------------------------------------------------- augmentations


def test_cutmix_box_area_and_probability():
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(200):
        box = cutmix_box(64, rng, p=1.0)
        ys, xs = torch.nonzero(box, as_tuple=True)
        assert box.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one rectangle
        areas.append(box.float().mean().item())
    # int() truncation of the sides can only shrink the drawn area
    assert 0 < min(areas) and max(areas) <= 0.4 + 1e-9
    assert min(areas) < 0.1 and max(areas) > 0.3
    assert not cutmix_box(64, np.random.default_rng(0), p=0.0).any()


def test_cutmix_mixes_images_and_labels_inside_the_box():
    box = torch.zeros(1, 4, 4, dtype=torch.bool)
    box[0, 1:3, 0:2] = True
    base_label, other_label = torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 7)
    mixed = cutmix(base_label, other_label, box)
    assert mixed[0, 1:3, 0:2].eq(7).all() and mixed.eq(7).sum() == 4
    images = cutmix(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), box)
    assert images.sum() == 3 * 4 and images[:, :, 1:3, 0:2].eq(1).all()


def test_weak_view_pads_with_ignore_and_strong_view_keeps_range():
    rng = np.random.default_rng(1)
    image = np.full((32, 32, 3), 200, np.uint8)
    img, ign = weak_view(image, None, 64, rng, scale=(0.5, 0.5))  # 16x16 content padded to 64
    assert img.shape == (64, 64, 3) and ign.shape == (64, 64)
    assert (ign == 255).sum() == 64 * 64 - 16 * 16
    strong = strong_view(torch.rand(3, 16, 16), np.random.default_rng(2))
    assert strong.shape == (3, 16, 16) and 0 <= strong.min() and strong.max() <= 1


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize("num_classes", [1, 14, 150])
def test_language_decoder_any_class_count(num_classes):
    model = sseg_model().eval()
    text = torch.randn(num_classes, 32)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), text, torch.arange(num_classes), num_classes)
    assert out.shape == (2, num_classes, 64, 64)


def test_feature_perturbation_touches_only_its_rows():
    model = sseg_model().eval()
    text = torch.randn(3, 32)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        clean = model(x, text, torch.arange(3), 3)
        torch.manual_seed(0)
        pert = model(x, text, torch.arange(3), 3, fp_range=(2, 4))
    assert torch.allclose(clean[:2], pert[:2], atol=1e-5)
    assert not torch.allclose(clean[2:], pert[2:], atol=1e-3)


def test_deeplab_head_has_fixed_classes():
    model = sseg_model("deeplab", 5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64), num_classes=5).shape == (1, 5, 64, 64)
        with pytest.raises(ConfigError):
            model(torch.randn(1, 3, 64, 64), num_classes=6)


def test_freeze_rule_embedded_backbone():
    model = sseg_model()
    trainable = set(model.set_trainable(spatial_only=True))
    vision = [n for n, _ in model.vlm.vision_parameters()]
    expected_vision = {f"vlm.{n}" for n in vision if (
        n.startswith("model.maskformer.backbone.stem.0.") or n.startswith("model.maskformer.backbone.stem.1.")
        or any(n.startswith(f"model.maskformer.backbone.stages.{i}.0.") for i in range(3))
        or n.startswith("model.maskformer.pixel_decoder.top_output.")
        or n.startswith("model.maskformer.pixel_decoder.output."))}
    head = {f"head.{n}" for n, _ in model.head.named_parameters()}
    assert trainable == expected_vision | head
    assert not any("text_encoder" in n or "semantic_proj" in n or "image_projection" in n or "lateral" in n
                   or "stem.2" in n or re.search(r"stages\.\d+\.1\.", n) for n in trainable if n.startswith("vlm."))
    # without spatial fine-tuning the whole vision tower trains, the text tower never does
    trainable = set(model.set_trainable(spatial_only=False))
    assert trainable == {f"vlm.{n}" for n in vision} | head
    # a frozen BatchNorm keeps its running statistics in train mode
    model.set_trainable(spatial_only=True)
    model.train()
    assert not model.vlm.model.maskformer.backbone.stem[2][1].training
    assert model.vlm.model.maskformer.backbone.stem[1][1].training


def test_freeze_rule_vit():
    pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = SemiVLModel(SemiVLModelConfig(vlm="clip", clip_model_cfg=TINY_CLIP, **TINY_HEAD))
    trainable = set(model.set_trainable(spatial_only=True))
    vision_trainable = {n for n in trainable if n.startswith("vlm.")}
    expected = {f"vlm.clip.visual.{n}" for n, _ in model.vlm.clip.visual.named_parameters()
                if "attn" in n or n == "positional_embedding"}
    assert vision_trainable == expected
    assert any(n.endswith("attn.in_proj_weight") for n in expected)
    assert "vlm.clip.visual.positional_embedding" in expected
    assert not any("mlp" in n or "text" in n or "token_embedding" in n for n in vision_trainable)
    dense, skips = model.vlm.dense(torch.randn(2, 3, 64, 64))
    assert dense.shape == (2, 32, 4, 4) and [s.shape[1] for s in skips] == [64, 64]


def test_maskclip_dense_features_are_value_path():
    """MaskCLIP: with every patch identical, attention would mix nothing new; the dense feature of a patch
    must equal the value path computed by hand from the last block."""
    pytest.importorskip("open_clip")
    torch.manual_seed(0)
    from sseg.semivl.vlm import ClipVLM

    vlm = ClipVLM(model_cfg=TINY_CLIP).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dense, _ = vlm.dense(images)
        x, h, w = vlm._tokens(images)
        for block in vlm.clip.visual.transformer.resblocks[:-1]:
            x = block(x)
        last = vlm.clip.visual.transformer.resblocks[-1]
        width = x.shape[-1]
        v = F.linear(last.ln_1(x), last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
        v = x + last.attn.out_proj(v)
        v = v + last.mlp(last.ln_2(v))
        expected = vlm.clip.visual.ln_post(v[:, 1:]) @ vlm.clip.visual.proj
    assert torch.allclose(dense.flatten(2).transpose(1, 2), expected, atol=1e-5)


def test_segmenter_uses_semivl_per_pixel_scores():
    from sseg.inference import SegmentConfig, Segmenter

    model = sseg_model().eval()
    segmenter = Segmenter.for_classes(model, {"ball": ["ball", "sphere"], "sky": ["sky"]},
                                      SegmentConfig(templates="single", bg_mode="none", short_side=None,
                                                    window=64, stride=64))
    pred = segmenter.predict(np.zeros((64, 64, 3), np.uint8))
    assert pred.labels.shape == (64, 64) and set(np.unique(pred.labels)) <= {0, 1}
    assert torch.allclose(pred.scores.sum(0), torch.ones(64, 64), atol=1e-4)


# ----------------------------------------------------------------------------- class definitions, splits


def test_concept_files_are_the_paper_tables_and_world_synonyms():
    from sseg.world.vocab import CLASS_SYNONYMS
    from sseg.prompts import CITYSCAPES_CONCEPTS, VOC_CONCEPTS
    from sseg.semivl.concepts import read_concept_file

    assert read_concept_file("voc") == {k: list(v) for k, v in VOC_CONCEPTS.items()}
    assert read_concept_file("voc")["chair"] == ["chair", "armchair", "deckchair"]
    assert "stool" in read_concept_file("voc")["background"]
    assert read_concept_file("cityscapes") == {k: list(v) for k, v in CITYSCAPES_CONCEPTS.items()}
    assert read_concept_file("world") == {k: list(v) for k, v in CLASS_SYNONYMS.items()}


def test_concept_file_with_unknown_class(tmp_path):
    from sseg.semivl.concepts import class_definitions

    path = tmp_path / "defs.yaml"
    path.write_text("ball: [ball, sphere]\nunicorn: [unicorn]\n")
    with pytest.raises(ConfigError, match="unknown class"):
        class_definitions(["ball", "sky"], str(path))
    assert [d.concepts for d in class_definitions(["ball", "sky"], None)] == [("ball",), ("sky",)]


def test_splits(tmp_path):
    from sseg.semivl.splits import check_split, random_split, read_split, write_split

    split = random_split([f"id{i}" for i in range(20)], 4, seed=3)
    assert len(split.labeled) == 4 and len(split.unlabeled) == 16 and not split.official
    assert split == random_split([f"id{i}" for i in range(20)], 4, seed=3)
    back = read_split(write_split(split, tmp_path / "world" / "4"))
    assert back.labeled == split.labeled and back.official
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "labeled.txt").write_text("JPEGImages/id1.jpg SegmentationClass/id1.png\nmissing7\n")
    (tmp_path / "u" / "unlabeled.txt").write_text("id2\n")
    with pytest.raises(DataError, match="missing7"):
        check_split(read_split(tmp_path / "u"), [f"id{i}" for i in range(20)], "the pool")


def test_pair_rows_cycles_the_smaller_set():
    from pipelines.stages.semivl_data import pair_rows

    labeled = ([f"l{i}.jpg" for i in range(3)], [f"l{i}.png" for i in range(3)])
    rows = pair_rows(labeled, [f"u{i}.jpg" for i in range(7)], seed=0)
    assert [r["image_u"] for r in rows] == [f"u{i}.jpg" for i in range(7)]
    counts = np.bincount([int(r["image_l"][1]) for r in rows], minlength=3)
    assert sorted(counts) == [2, 2, 3]  # each labelled image 7/3 times, rounded
    assert all(r["label_l"] == r["image_l"].replace(".jpg", ".png") for r in rows)
    # a labelled set larger than the unlabelled one (a fully supervised reference) is not truncated
    big = ([f"l{i}.jpg" for i in range(10)], [f"l{i}.png" for i in range(10)])
    rows = pair_rows(big, ["u0.jpg", "u1.jpg"], seed=0)
    assert sorted(r["image_l"] for r in rows) == sorted(big[0])
    assert [r["image_u"] for r in rows] == ["u0.jpg", "u1.jpg"] * 5
    assert [r["row"] for r in rows] == list(range(10))


def test_seeded_weak_views_repeat_per_seed_and_change_per_epoch(tiny_world, monkeypatch):
    from pipelines.stages import semivl_data
    from sseg.data.datasets import build_dataset

    reader = build_dataset("world", str(tiny_world / "voc"), "train")
    images, labels = reader.image_paths[:4], reader.label_paths[:4]
    batch = {"row": np.arange(4), "image_l": np.array(images), "label_l": np.array(labels),
             "image_u": np.array(images[::-1])}

    def views(seed, epoch):
        monkeypatch.setattr(semivl_data, "_execution_index", lambda: epoch)
        return semivl_data.weak_views(batch, crop=32, scale=(0.5, 2.0), num_classes=14, seed=seed)

    first = views(0, 0)
    assert all(np.array_equal(first[k], views(0, 0)[k]) for k in first)
    assert not np.array_equal(first["image_u"], views(0, 1)["image_u"])
    assert not np.array_equal(first["image_u"], views(1, 0)["image_u"])


# ----------------------------------------------------------------------------- end to end (Ray + MLflow)

E2E_HEAD = ["model.channels=16", "model.text_channels=16", "model.up_channels=[8,8]", "model.skip_channels=[4,4]",
            "model.transformer_heads=2", "model.deeplab_channels=16"]


def _tiny_sseg_checkpoint(directory, run_id="0123456789abcdef0123456789abcdef"):
    from sseg.checkpoints import save_checkpoint
    from sseg.models.sseg_model import SSegModel
    from sseg.models.config import ModelConfig

    torch.manual_seed(0)
    return save_checkpoint(directory, model=SSegModel(ModelConfig.model_validate(TINY_SSEG)),
                           model_config=TINY_SSEG, extra={"mlflow_run_id": run_id})


def _overrides(tiny_world, tmp_path, checkpoint):
    return ["world=null", f"data.root={tiny_world / 'voc'}", "data.num_labeled=4", "data.templates=single",
            f"vlm.checkpoint={checkpoint}", "train.steps=2", "train.batch_size=4", "train.log_every=1",
            "train.checkpoint_every=2", "eval.max_images=4", f"storage_path={tmp_path / 'runs'}",
            "tracking.run_name=tiny-semivl", *E2E_HEAD]


@pytest.mark.parametrize("case", ["missing_image", "bad_label", "unknown_concept", "embed_dim"])
def test_bad_input_is_one_line_exit_2_nothing_written(case, tiny_world, tmp_path, unwritten_mlflow_uri, capsys):
    import shutil

    import semivl as job
    from pipelines.cli import run_job

    checkpoint = _tiny_sseg_checkpoint(tmp_path / "sseg")
    args = _overrides(tiny_world, tmp_path, checkpoint)
    world = tiny_world
    if case == "missing_image":
        (tmp_path / "split").mkdir()
        (tmp_path / "split" / "labeled.txt").write_text("train_000000\nno_such_image\n")
        (tmp_path / "split" / "unlabeled.txt").write_text("train_000002\n")
        args.append(f"data.split_dir={tmp_path / 'split'}")
    elif case == "bad_label":
        world = tmp_path / "world"
        shutil.copytree(tiny_world / "voc", world / "voc")
        from PIL import Image

        for path in (world / "voc" / "SegmentationClass").glob("*.png"):
            label = np.array(Image.open(path))
            label[0, 0] = 40  # 14 classes: 40 is no class and not 255
            image = Image.fromarray(label, mode="P")
            image.putpalette(Image.open(path).getpalette())
            image.save(path)
        args.append(f"data.root={world / 'voc'}")
    elif case == "unknown_concept":
        (tmp_path / "defs.yaml").write_text("ball: [ball]\nunicorn: [unicorn, horn horse]\n")
        args.append(f"data.concepts={tmp_path / 'defs.yaml'}")
    else:
        args.append("vlm.embed_dim=512")
    with pytest.raises(SystemExit) as exit_info:
        run_job(job.main, args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert {"missing_image": "no_such_image", "bad_label": "[40]", "unknown_concept": "unicorn",
            "embed_dim": "embedding size 32"}[case] in err[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_semivl_killed_then_resumed_end_to_end(ray_session, tiny_world, tmp_path, mlflow_uri, capsys):
    """jobs/semivl.py on a 16-image labelled pool (4 labelled, 12 unlabelled) from a tiny S-Seg checkpoint.
    The worker raises a deterministic DataError after step 3: the run ends at once with that error, not
    retried (train.max_failures=2 would start the worker twice more and hit it again); ``--resume latest``
    (the data fixed) continues it from its step-2 checkpoint in the same MLflow run, no step logged twice.
    A new run under the same name, or a resume with another config, is refused before any work. The
    finished run: evaluation, MLflow lineage, the split written; the checkpoint segments through
    model_from_checkpoint like any other."""
    import semivl as job
    from mlflow.tracking import MlflowClient

    from sseg.checkpoints import model_from_checkpoint
    from sseg.inference import SegmentConfig, Segmenter

    from pipelines.runs.semivl import run_semivl
    from schemas.configs import SemiVLConfig
    from sseg.config import load_config
    from tests.fault_hooks import checkpoint_steps, data_error_at_step_3

    checkpoint = _tiny_sseg_checkpoint(tmp_path / "sseg")
    args = _overrides(tiny_world, tmp_path, checkpoint) + ["train.steps=4", "tracking.run_name=killed",
                                                           "train.max_failures=2"]
    with pytest.raises(DataError, match=r"^bad sample in shard 7 \(a test fault\)$"):
        run_semivl(load_config(SemiVLConfig, None, args), callbacks=[data_error_at_step_3])
    run_dir = tmp_path / "runs" / "killed"
    assert (run_dir / "data_error_attempts").read_text().split() == ["0"]
    assert checkpoint_steps(run_dir) == [2]
    with pytest.raises(ConfigError, match="a run of that name exists"):
        job.main(args)
    with pytest.raises(ConfigError, match=r"another config \(train.lr"):
        job.main(args + ["train.lr=0.01", "--resume", "latest"])
    capsys.readouterr()
    assert job.main(args + ["--resume", "latest"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert result["steps"] == 4 and run.info.status == "FINISHED" and run.info.run_name == "killed"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train.resumed_from_step")] \
        == [(2, 2.0)]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train.loss")) == [1, 2, 3, 4]
    assert 0.0 <= result["miou"] <= 1.0 and run.data.tags["sseg.stage"] == "semivl"
    assert run.data.tags["sseg.parent_run_id"] == "0123456789abcdef0123456789abcdef"
    assert "not an official split" in run.data.tags["sseg.split"]
    assert run.data.params["derived.num_labeled"] == "4" and "eval.miou" in run.data.metrics
    split_dir = tmp_path / "runs" / "killed" / "splits" / "world" / "4"
    assert len((split_dir / "labeled.txt").read_text().split()) == 4
    assert len((split_dir / "unlabeled.txt").read_text().split()) == 12
    model, state = model_from_checkpoint(result["checkpoint"], segmenting=True)
    assert state["kind"] == "semivl" and state["model_name"] == "semivl"
    segmenter = Segmenter.for_classes(model, "cat,dog,grass", SegmentConfig(templates="single", bg_mode="none",
                                                                           short_side=None, window=64, stride=64))
    assert segmenter.predict(np.zeros((64, 64, 3), np.uint8)).labels.shape == (64, 64)


def test_a_query_feature_parent_is_refused_before_ray(tiny_world, tmp_path, unwritten_mlflow_uri, capsys):
    """The S-Seg VLM needs pooled mask features: a parent trained with query features is refused by the
    pre-flight checks (one line, exit 2, nothing written), not in the workers."""
    import semivl as job
    from pipelines.cli import run_job
    from sseg.checkpoints import save_checkpoint
    from sseg.models.config import ModelConfig
    from sseg.models.sseg_model import SSegModel

    config = {**TINY_SSEG, "mask_feature_source": "query"}
    checkpoint = save_checkpoint(tmp_path / "sseg", model=SSegModel(ModelConfig.model_validate(config)),
                                 model_config=config, extra={})
    with pytest.raises(SystemExit) as exit_info:
        run_job(job.main, _overrides(tiny_world, tmp_path, checkpoint))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mask_feature_source=pooled" in err[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
