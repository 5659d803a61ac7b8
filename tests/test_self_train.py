"""S-Seg+ self-training: UperNet-ViT (layer-decay groups, poly schedule, neck strides, ignore index, MAE
weights), closed-vocabulary inference, the pseudo-label cache (schema, refusal, resume), and one tiny
end-to-end run through real Ray Data, Ray Train and MLflow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

WORLD_CLASSES = ["ball", "box", "tree", "car", "house", "fish", "bird", "flower", "star", "cup",
                 "sky", "grass", "water", "sand"]


def _tiny_config(**overrides):
    from sseg.models.upernet import UperNetConfig

    base = dict(class_names=["ball", "sky", "grass"], image_size=32, patch_size=8, embed_dim=32, depth=4,
                num_heads=2, channels=8, drop_path_rate=0.0, dropout=0.0)
    return UperNetConfig(**{**base, **overrides})


def _model(**overrides):
    from sseg.models.upernet import UperNetViT

    torch.manual_seed(0)
    return UperNetViT(_tiny_config(**overrides))


# ----------------------------------------------------------------------------- model


def test_feature_blocks_are_the_papers_scaled_to_depth():
    from sseg.models.upernet import vit_feature_blocks

    assert vit_feature_blocks(12) == [3, 5, 7, 11]  # blocks 4, 6, 8, 12 (1-based)
    assert vit_feature_blocks(6) == [1, 2, 3, 5]
    assert vit_feature_blocks(8) == [2, 3, 4, 7]
    assert vit_feature_blocks(4) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        vit_feature_blocks(3)


@pytest.mark.parametrize("patch, strides", [(16, (4, 8, 16, 32)), (8, (2, 4, 8, 16))])
def test_neck_output_strides_and_model_output_shape(patch, strides):
    model = _model(patch_size=patch, image_size=64).eval()
    images = torch.randn(2, 3, 64, 96)  # not square, not the training size
    features = model.backbone(images)
    assert [tuple(f.shape) for f in features] == [(2, 32, 64 // s, 96 // s) for s in strides]
    logits = model(images)
    assert tuple(logits.shape) == (2, 3, 64 // strides[0], 96 // strides[0])
    assert tuple(model.class_logits(images).shape) == (2, 3, 64, 96)


def test_layer_decay_groups_exact_multipliers_per_block():
    from sseg.self_training import build_sseg_plus_optimizer

    model = _model()  # depth 4: layer ids 0 (embeddings), 1..4 (blocks), 5 (neck + head)
    optimizer = build_sseg_plus_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.7)
    by_name = {name: group for group in optimizer.param_groups for name in group["names"]}
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    expected = {
        "backbone.vit.cls_token": 0.7 ** 5, "backbone.vit.pos_embed": 0.7 ** 5,
        "backbone.vit.patch_embed.proj.weight": 0.7 ** 5,
        "backbone.vit.blocks.0.attn.qkv.weight": 0.7 ** 4, "backbone.vit.blocks.1.mlp.fc1.weight": 0.7 ** 3,
        "backbone.vit.blocks.2.norm1.weight": 0.7 ** 2, "backbone.vit.blocks.3.mlp.fc2.weight": 0.7 ** 1,
        "backbone.neck.fpn1.0.weight": 1.0, "decode_head.conv_seg.weight": 1.0,
        "decode_head.ppm.bottleneck.0.weight": 1.0,
    }
    for name, scale in expected.items():
        assert by_name[name]["lr_scale"] == pytest.approx(scale), name
        assert by_name[name]["lr"] == pytest.approx(1e-4 * scale), name
    # no weight decay on biases, norms, the position embedding and the class token
    for name in ("backbone.vit.cls_token", "backbone.vit.pos_embed", "backbone.vit.blocks.0.norm1.weight",
                 "backbone.vit.blocks.0.attn.qkv.bias", "decode_head.conv_seg.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    for name in ("backbone.vit.blocks.0.attn.qkv.weight", "decode_head.conv_seg.weight"):
        assert by_name[name]["weight_decay"] == 0.05, name


def test_poly_schedule_with_warmup_values():
    from sseg.training import poly_with_warmup

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 2.0}], lr=2.0)
    scheduler = poly_with_warmup(optimizer, total_steps=10, warmup_steps=4, power=1.0, warmup_ratio=1e-6)
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # mmcv: poly (1 - i/10) times warmup 1 - (1 - i/4)(1 - 1e-6) for i < 4
    expected = [2.0 * (1 - i / 10) * ((1 - (1 - i / 4) * (1 - 1e-6)) if i < 4 else 1.0) for i in range(11)]
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert lrs[0] == pytest.approx(2e-6) and lrs[4] == pytest.approx(1.2) and lrs[10] == 0.0
    squared = poly_with_warmup(torch.optim.SGD([param], lr=1.0), total_steps=10, warmup_steps=0, power=2.0)
    assert squared.lr_lambdas[0](5) == pytest.approx(0.25)


def test_cross_entropy_ignores_the_ignore_index():
    from sseg.models.upernet import IGNORE_INDEX, segmentation_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    labels = torch.randint(0, 4, (2, 8, 8))
    labels[:, :4] = IGNORE_INDEX
    loss = segmentation_loss(logits, labels)
    loss.backward()
    assert torch.all(logits.grad[:, :, :4] == 0) and torch.any(logits.grad[:, :, 4:] != 0)
    # the value: mean cross-entropy over the labelled pixels only
    valid = labels != IGNORE_INDEX
    log_probs = logits.detach().log_softmax(1).permute(0, 2, 3, 1)[valid]
    assert float(loss) == pytest.approx(float(-log_probs.gather(1, labels[valid][:, None]).mean()), rel=1e-6)
    changed = logits.detach().clone()
    changed[:, :, :4] = 100 * torch.randn_like(changed[:, :, :4])
    assert float(segmentation_loss(changed, labels)) == pytest.approx(float(loss), rel=1e-6)
    uniform = torch.zeros(1, 5, 4, 4, requires_grad=True)
    assert float(segmentation_loss(uniform, torch.zeros(1, 4, 4, dtype=torch.long))) == pytest.approx(math.log(5))
    nothing = segmentation_loss(uniform, torch.full((1, 4, 4), IGNORE_INDEX))
    nothing.backward()
    assert float(nothing) == 0.0 and torch.all(uniform.grad == 0)


def test_mae_weights_load_from_a_local_file(tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    from sseg.errors import CheckpointError
    from sseg.models.upernet import UperNetViT

    torch.manual_seed(1)  # an MAE-style encoder at another input size (pos-embed grid 6x6 vs 4x4)
    mae = VisionTransformer(img_size=48, patch_size=8, embed_dim=32, depth=4, num_heads=2, num_classes=0)
    torch.save({"model": mae.state_dict()}, tmp_path / "mae.pth")
    model = UperNetViT(_tiny_config(backbone_checkpoint=str(tmp_path / "mae.pth")))
    assert torch.equal(model.backbone.vit.blocks[2].attn.qkv.weight, mae.blocks[2].attn.qkv.weight)
    assert torch.equal(model.backbone.vit.patch_embed.proj.weight, mae.patch_embed.proj.weight)
    assert tuple(model.backbone.vit.pos_embed.shape) == (1, 1 + 16, 32)  # resampled to this grid
    with pytest.raises(CheckpointError, match="backbone checkpoint not found"):
        UperNetViT(_tiny_config(backbone_checkpoint=str(tmp_path / "missing.pth")))


def test_closed_vocabulary_segmenter_maps_requested_names_to_trained_classes():
    from sseg.errors import ConfigError
    from sseg.inference import SegmentConfig, Segmenter, build_text_classifier

    model = _model().eval()  # trained classes: ball, sky, grass
    fixed = torch.zeros(1, 3, 16, 16)
    fixed[:, 0, :, :8] = 5.0  # ball on the left half
    fixed[:, 2, :, 8:] = 5.0  # grass on the right half
    model.class_logits = lambda images: fixed.expand(images.shape[0], -1, *images.shape[-2:]).clone()
    cfg = SegmentConfig(bg_mode="none", short_side=None, sliding=False, size_divisor=1, templates="clip7")
    segmenter = Segmenter(model, build_text_classifier(model, ["Grass", "sphere;ball"], "clip7"), cfg)
    prediction = segmenter.predict(np.zeros((16, 16, 3), np.uint8))
    assert segmenter.class_names == ["Grass", "sphere"]
    assert np.all(prediction.labels[:, :8] == 1) and np.all(prediction.labels[:, 8:] == 0)
    assert torch.allclose(prediction.scores.sum(0), torch.ones(16, 16))
    with pytest.raises(ConfigError, match="'cat' is not one this closed-vocabulary model was trained on"):
        build_text_classifier(model, ["ball", "cat"], "clip7")


def test_class_list_must_match_the_dataset():
    from pipelines.runs.self_train import check_class_list
    from sseg.errors import ConfigError

    assert check_class_list(None, ["a", "b"]) == ["a", "b"]
    assert check_class_list(["a", "b"], ["a", "b"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="missing b; not in the dataset: c"):
        check_class_list(["a", "c"], ["a", "b"])
    with pytest.raises(ConfigError, match="another order"):
        check_class_list(["b", "a"], ["a", "b"])


# ----------------------------------------------------------------------------- pseudo-label cache


def _identity(tmp_path, checkpoint_bytes=b"weights", classes=("a", "b"), keys=("k0", "k1", "k2")):
    from pipelines.io.pseudo_label_cache import pseudo_label_identity

    path = tmp_path / f"ckpt-{len(checkpoint_bytes)}-{checkpoint_bytes[:4].hex()}.pt"
    path.write_bytes(checkpoint_bytes)
    return pseudo_label_identity(checkpoint_file=path, class_names=list(classes), segment={"short_side": 64},
                                 dataset="world", split="train", keys=list(keys), chunk_size=2)


def test_pseudo_label_cache_refuses_another_checkpoint_or_class_list(tmp_path):
    from pipelines.io.pseudo_label_cache import PseudoLabelCache
    from sseg.errors import DataError

    root = tmp_path / "cache"
    cache = PseudoLabelCache(root, _identity(tmp_path)).open()
    assert cache.num_chunks() == 2 and cache.chunk_range(1) == (2, 3) and cache.todo() == [0, 1]
    PseudoLabelCache(root, _identity(tmp_path)).open()  # the same identity reopens
    with pytest.raises(DataError, match=r"another checkpoint \(sha256 .*this run has sha256"):
        PseudoLabelCache(root, _identity(tmp_path, checkpoint_bytes=b"other weights")).open()
    with pytest.raises(DataError, match=r"another class list \(\[\"a\", \"b\"\], this run has \[\"a\", \"c\"\]\)"):
        PseudoLabelCache(root, _identity(tmp_path, classes=("a", "c"))).open()
    with pytest.raises(DataError, match="another image list"):
        PseudoLabelCache(root, _identity(tmp_path, keys=("k0", "k1"))).open()


# ----------------------------------------------------------------------------- through Ray


def _untrained_sseg_checkpoint(directory, seed=0):
    from schemas.configs import PretrainConfig
    from sseg.checkpoints import save_checkpoint
    from sseg.config import load_config
    from sseg.models import SSegModel

    model_cfg = load_config(PretrainConfig, None, [
        "model.num_queries=4", "model.dec_layers=1", "model.hidden_dim=16", "model.mask_dim=16", "model.nheads=2",
        "model.dim_feedforward=32", "model.text_layers=1", "model.text_width=16", "model.text_heads=2",
        "model.embed_dim=16", "model.context_length=16", "model.tiny_convnet_widths=[8,8,16,16]"]).model
    torch.manual_seed(seed)
    return save_checkpoint(directory, model=SSegModel(model_cfg), model_config=model_cfg.model_dump(mode="json"),
                           extra={})


def test_pseudo_label_cache_schema_and_resume_after_interruption(ray_session, tiny_world, tmp_path):
    import pyarrow.parquet as pq

    from pipelines.io.pseudo_label_cache import PseudoLabelCache, pseudo_label_identity
    from pipelines.stages.pseudo_labels import build_pseudo_label_cache, decode_png, pseudo_label_statistics
    from schemas.arrow import PSEUDO_LABEL_SCHEMA
    from sseg.data.datasets import build_dataset

    checkpoint = _untrained_sseg_checkpoint(tmp_path / "sseg")
    reader = build_dataset("world", tiny_world / "voc", "train")
    segment = {"short_side": 64, "sliding": False, "window": 64, "stride": 64, "templates": "single",
               "bg_mode": "none"}
    identity = pseudo_label_identity(checkpoint_file=checkpoint, class_names=reader.class_names, segment=segment,
                                     dataset="world", split="train", keys=reader.keys, chunk_size=5)
    cache = PseudoLabelCache(tmp_path / "cache", identity).open()
    dataset = {"name": "world", "root": str(tiny_world / "voc"), "split": "train"}
    first = build_pseudo_label_cache(cache, checkpoint, dataset, reader.class_names, segment, num_actors=1)
    assert first["chunks_labelled"] == 4 and first["images_labelled"] == 16 == cache.num_rows()
    files = cache.files()
    table = pq.read_table(files[1])
    assert table.schema.equals(PSEUDO_LABEL_SCHEMA, check_metadata=True)
    assert table.column("index").to_pylist() == [5, 6, 7, 8, 9]
    row = table.slice(0, 1).to_pylist()[0]
    labels, confidence = decode_png(row["label_png"]), decode_png(row["confidence_png"])
    assert labels.shape == confidence.shape == (row["height"], row["width"]) == decode_png(row["image"]).shape[:2]
    assert labels.max() < len(reader.class_names) and confidence.dtype == np.uint8

    # an interruption: chunk 2 never finished (its marker missing, a half-written file left behind)
    mtimes = {c: cache.parquet_path(c).stat().st_mtime_ns for c in (0, 1, 3)}
    (cache.root / "_done" / "chunk-00002.json").unlink()
    cache.parquet_path(2).with_suffix(".parquet.tmp").write_bytes(b"half")
    again = build_pseudo_label_cache(PseudoLabelCache(tmp_path / "cache", identity).open(), checkpoint, dataset,
                                     reader.class_names, segment, num_actors=1)
    assert again["chunks_labelled"] == 1 and again["images_labelled"] == 5 and cache.todo() == []
    assert {c: cache.parquet_path(c).stat().st_mtime_ns for c in (0, 1, 3)} == mtimes  # never redone
    assert pq.read_table(cache.parquet_path(2)).column("index").to_pylist() == [10, 11, 12, 13, 14]

    stats = pseudo_label_statistics(cache.files(), reader.class_names, 0.0, dataset)
    assert stats["images"] == 16 and stats["kept_fraction"] == 1.0
    assert sum(stats["class_histogram"].values()) == stats["pixels"] == 16 * 64 * 64
    assert 0.0 <= stats["miou"] <= 1.0 and stats["miou_kept"] == pytest.approx(stats["miou"])


@pytest.mark.slow
def test_self_train_job_end_to_end(ray_session, tiny_world, tmp_path, monkeypatch, capsys, new_mlflow_store):
    """No checkpoint given: the newest finished sseg-pretrain run of the store is the parent. The run:
    pseudo-labels, training through the generic loop, both models evaluated; then a new run under the same
    name, or a resume with another config, is refused before any work; the S-Seg+ checkpoint works with
    jobs/evaluate.py and jobs/segment.py; a foreign cache and a bad class list are one-line errors. (A killed
    run resumed: the same loop in SemiVL's and the pretraining's end-to-end tests; the pseudo-label cache
    resumed: test_pseudo_label_cache_schema_and_resume_after_interruption.)"""
    from mlflow.tracking import MlflowClient

    from jobs.self_train import main
    from pipelines.cli import run_job
    from pipelines.tracking import tracked_run
    from sseg.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    checkpoint = _untrained_sseg_checkpoint(tmp_path / "parent")
    with tracked_run("sseg-pretrain", stage="pretrain", run_name="parent") as tracker:
        tracker.log_artifact(checkpoint, "checkpoints/final")
    args = ["world=null", f"target.root={tiny_world / 'voc'}", "pseudo_labels.chunk_size=8",
            "pseudo_labels.num_actors=1", "model.embed_dim=32", "model.num_heads=2", "model.depth=4",
            "model.channels=8", "train.global_batch_size=4", "train.steps=4", "train.warmup_steps=1",
            "train.log_every=1", "train.checkpoint_every=2", "train.shuffle_buffer=0",
            "eval.num_actors=1", "eval.protocols=[]", "eval.pictures=2", "eval.max_images=8",
            "pseudo_labels.segment.templates=single", "eval.segment.templates=single",
            "tracking.run_name=tiny-self-train"]
    capsys.readouterr()
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = MlflowClient(uri)
    run = client.get_run(result["mlflow_run_id"])
    assert result["steps"] == 4 and run.info.status == "FINISHED" and run.info.run_name == "tiny-self-train"
    assert result["pseudo_label_chunks_labelled"] == 2  # 16 images in chunks of 8, none cached before
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train.loss")) == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="a run of that name exists"):
        main(args)
    with pytest.raises(ConfigError, match=r"another config \(train.lr"):
        main(args + ["train.lr=0.01", "--resume", "latest"])

    assert result["parent_run_id"] == tracker.run_id
    for key in ("sseg_miou", "sseg_plus_miou", "pseudo_label_miou", "pseudo_label_mean_confidence"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["gain"] == pytest.approx(result["sseg_plus_miou"] - result["sseg_miou"])
    assert result["eval_protocol"] == "all_classes" and result["pseudo_label_images"] == 16
    assert run.data.tags["sseg.parent_run_id"] == tracker.run_id and run.data.tags["sseg.stage"] == "self-train"
    for metric in ("sseg_miou", "sseg_plus_miou", "gain", "pseudo_labels.miou", "eval.miou_all_classes",
                   "parent_eval.miou_all_classes", "train.loss"):
        assert metric in run.data.metrics, metric
    artifacts = {a.path for prefix in ("eval/all_classes", "pseudo_labels", "checkpoints/final")
                 for a in client.list_artifacts(run.info.run_id, prefix)}
    assert {"eval/all_classes/input_prediction_truth.png", "eval/all_classes/per_class_iou.png",
            "pseudo_labels/class_histogram.png", "checkpoints/final/sseg_checkpoint.pt"} <= artifacts

    # the S-Seg+ checkpoint in the evaluate and segment jobs
    from jobs.evaluate import main as evaluate
    from jobs.segment import main as segment

    assert evaluate([f"checkpoint={result['checkpoint']}", f"root={tiny_world / 'voc'}", "pictures=0",
                     "max_images=4"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["checkpoint_kind"] == "sseg-plus" and 0.0 <= evaluated["miou_without_background"] <= 1.0
    image = sorted((tiny_world / "voc" / "JPEGImages").glob("*.jpg"))[0]
    assert segment(["--checkpoint", result["checkpoint"], "--classes", "sky,grass;lawn", "--out",
                    str(tmp_path / "seg"), str(image), "--set", "short_side=64", "sliding=false"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 1

    def one_line_error(argv) -> str:
        with pytest.raises(SystemExit) as exit_info:
            run_job(main, argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        return err[-1]

    with pytest.raises(SystemExit):
        run_job(segment, ["--checkpoint", result["checkpoint"], "--classes", "sky,cat", str(image)])
    assert "'cat' is not one this closed-vocabulary model was trained on" in capsys.readouterr().err
    args = [a for a in args if not a.startswith("tracking.run_name=")]
    other = _untrained_sseg_checkpoint(tmp_path / "other", seed=1)
    message = one_line_error(args + [f"checkpoint={other}", f"pseudo_labels.cache_dir={result['pseudo_label_cache']}"])
    assert message.startswith("error: pseudo-label cache") and "another checkpoint" in message
    assert "does not match the dataset" in one_line_error(args + [f"checkpoint={checkpoint}",
                                                                  "target.classes=[sky,grass]"])
    assert "checkpoint not found" in one_line_error(args + [f"checkpoint={tmp_path / 'nope.pt'}"])
    (tmp_path / "empty" / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in ("JPEGImages", "SegmentationClass"):
        (tmp_path / "empty" / name).mkdir()
    (tmp_path / "empty" / "ImageSets" / "Segmentation" / "train.txt").write_text("")
    (tmp_path / "empty" / "ImageSets" / "Segmentation" / "val.txt").write_text("x\n")
    (tmp_path / "empty" / "class_names.txt").write_text("sky\n")
    assert "split file is empty" in one_line_error(args + [f"checkpoint={checkpoint}", f"target.root={tmp_path / 'empty'}"])


def test_balanced_class_weights_known_answer():
    from sseg.self_training import balanced_class_weights

    # frequencies 0.64 / 0.32 / 0.04 / 0: raw weights 1.25, 1.768, 5 → pixel-weighted mean 1.5657
    weights = balanced_class_weights([64, 32, 4, 0])
    raw = np.array([1 / 0.8, 1 / np.sqrt(0.32), 1 / 0.2])
    expected = raw / float((np.array([0.64, 0.32, 0.04]) * raw).sum())
    assert weights[:3] == pytest.approx(expected.tolist(), rel=1e-9)
    assert weights[3] == 10.0  # no pixels: the cap
    assert float(np.dot([0.64, 0.32, 0.04], weights[:3])) == pytest.approx(1.0)
    assert balanced_class_weights([1_000_000, 1])[1] == 10.0  # capped
    with pytest.raises(ValueError, match="no labelled pixel"):
        balanced_class_weights([0, 0])


def test_weighted_segmentation_loss_is_the_weighted_mean_of_pixel_losses():
    from sseg.models.upernet import IGNORE_INDEX, segmentation_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, 0] = IGNORE_INDEX
    weights = torch.tensor([0.5, 1.0, 4.0])
    per_pixel = -torch.log_softmax(logits, 1).gather(1, labels.clamp(max=2).unsqueeze(1)).squeeze(1)
    valid = labels != IGNORE_INDEX
    w = weights[labels.clamp(max=2)] * valid
    expected = (per_pixel * w).sum() / w.sum()
    assert float(segmentation_loss(logits, labels, IGNORE_INDEX, weights)) == pytest.approx(float(expected), rel=1e-6)
