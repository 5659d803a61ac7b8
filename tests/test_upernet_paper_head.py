"""S-Seg+'s paper head and data (issue 24, defect 6): BEiT/MAE's UperNet has 768 channels, an auxiliary FCN
head (256 channels on block 8, loss weight 0.4), synchronised batch norm over the GPUs (2 images each) and
mmseg's training pipeline (resize ratio 0.5-2.0 of 2048x512, crop 512 with cat_max_ratio 0.75, flip,
photometric distortion). The paper configs use them; the demo keeps its own settings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides):
    from sseg.models.upernet import UperNetConfig

    base = dict(class_names=["background", "cat", "dog"], image_size=32, patch_size=8, embed_dim=32, depth=4,
                num_heads=2, channels=8, drop_path_rate=0.0, dropout=0.0)
    return UperNetConfig(**{**base, **overrides})


def _model(**overrides):
    from sseg.models.upernet import UperNetViT

    torch.manual_seed(0)
    return UperNetViT(_config(**overrides))


# ----------------------------------------------------------------------------- auxiliary head


def test_aux_head_reads_block_8_at_stride_p_and_only_in_training_calls():
    from sseg.models.upernet import FCNHead

    model = _model(aux_head=True, aux_channels=16).eval()
    assert isinstance(model.aux_head, FCNHead)
    assert model.aux_head.convs[0].in_channels == 32 and model.aux_head.convs[0].out_channels == 16
    assert model.aux_head.convs[0].kernel_size == (3, 3)
    images = torch.randn(2, 3, 64, 96)
    logits, aux = model(images, with_aux=True)
    assert tuple(logits.shape) == (2, 3, 64 // 2, 96 // 2)  # the neck's finest level: stride p/4
    assert tuple(aux.shape) == (2, 3, 64 // 8, 96 // 8)  # level 2 = the block-8 output at stride p
    torch.testing.assert_close(model(images), logits)  # inference: the decode head only
    # without the option: no head, no auxiliary logits, and the demo's state dict is unchanged
    plain = _model()
    assert plain.aux_head is None and plain(images, with_aux=True)[1] is None
    assert not any(k.startswith("aux_head.") for k in plain.state_dict())


def test_decode_and_aux_loss_weights_the_aux_cross_entropy():
    import torch.nn.functional as F

    from sseg.models.upernet import IGNORE_INDEX, decode_and_aux_loss

    torch.manual_seed(1)
    logits, aux = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 16, 16))
    labels[0, :4] = IGNORE_INDEX
    loss, parts = decode_and_aux_loss(logits, aux, labels, 0.4)

    def ce(x):
        up = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        return F.cross_entropy(up, labels, ignore_index=IGNORE_INDEX)

    assert float(loss) == pytest.approx(float(ce(logits) + 0.4 * ce(aux)), rel=1e-6)
    assert parts["decode_loss"] == pytest.approx(float(ce(logits)), rel=1e-6)
    assert parts["aux_loss"] == pytest.approx(float(ce(aux)), rel=1e-6)
    alone, none = decode_and_aux_loss(logits, None, labels, 0.4)
    assert float(alone) == pytest.approx(float(ce(logits)), rel=1e-6) and none == {}


def test_self_train_step_trains_the_aux_head_with_its_weight():
    from sseg.self_training import SSegPlusStep

    torch.manual_seed(0)
    cfg = _config(aux_head=True, aux_weight=0.4).model_dump(mode="json")
    step = SSegPlusStep.create(cfg, device=torch.device("cpu"), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999),
                               layer_decay=0.9, total_steps=10, warmup_steps=0)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
             "label": rng.integers(0, 3, (2, 32, 32), dtype=np.uint8)}
    before = step.core.aux_head.conv_seg.weight.detach().clone()
    metrics = step.run(batch)
    assert metrics["loss"] == pytest.approx(metrics["decode_loss"] + 0.4 * metrics["aux_loss"], rel=1e-5)
    assert not torch.equal(before, step.core.aux_head.conv_seg.weight)  # the aux head is trained
    # it sits with the head in the layer-decay groups (full lr)
    aux_params = {id(p) for p in step.core.aux_head.parameters()}
    lrs = {g["lr_scale"] for g in step.optimizer.param_groups if any(id(p) in aux_params for p in g["params"])}
    assert lrs == {1.0}


# ----------------------------------------------------------------------------- SyncBN


def test_sync_bn_converts_every_batch_norm_on_several_cuda_workers_and_keeps_the_parameters():
    from sseg.models.upernet import synchronise_batch_norm

    model = _model(aux_head=True, sync_bn=True)
    params = [id(p) for p in model.parameters()]
    bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert bns > 0
    converted = synchronise_batch_norm(model, world_size=8, device=torch.device("cuda"))
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == bns
    assert not any(type(m) is nn.BatchNorm2d for m in converted.modules())
    assert [id(p) for p in converted.parameters()] == params  # an optimizer built before keeps them
    # one worker, CPU workers (SyncBatchNorm is CUDA-only) or the flag off: unchanged
    for world_size, device, flag in ((1, "cuda", True), (2, "cpu", True), (8, "cuda", False)):
        other = _model(sync_bn=flag)
        out = synchronise_batch_norm(other, world_size=world_size, device=torch.device(device))
        assert out is other and not any(isinstance(m, nn.SyncBatchNorm) for m in out.modules())


def test_step_builder_applies_sync_bn_with_the_world_size(monkeypatch):
    import sseg.models.upernet as upernet
    from pipelines.training.self_train_step import build_self_train_step
    from schemas.configs import SelfTrainConfig

    seen = []
    monkeypatch.setattr(upernet, "synchronise_batch_norm",
                        lambda model, world_size, device: seen.append((model.cfg.sync_bn, world_size)) or model)
    cfg = SelfTrainConfig().model_dump(mode="json")
    cfg["model"].update(class_names=["a", "b"], sync_bn=True)
    build_self_train_step(cfg, device=torch.device("cpu"), rank=0, world_size=8, total_steps=2, warmup_steps=0)
    assert seen == [(True, 8)]


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["self_train_voc", "self_train_context", "self_train_coco"])
def test_paper_configs_use_the_paper_head_and_data(name):
    from schemas.configs import SelfTrainConfig
    from sseg.config import load_config

    cfg = load_config(SelfTrainConfig, ROOT / "configs" / f"{name}.yaml")
    m, t = cfg.model, cfg.train
    assert (m.channels, m.aux_head, m.aux_channels, m.aux_level, m.aux_weight, m.sync_bn) == (768, True, 256, 2, 0.4,
                                                                                              True)
    assert t.global_batch_size // t.num_workers == 2
    assert (t.augment, t.crop_size, tuple(t.resize_scale), tuple(t.ratio_range), t.cat_max_ratio) == \
        ("mmseg", 512, (2048, 512), (0.5, 2.0), 0.75)


def test_demo_defaults_are_unchanged():
    from schemas.configs import SelfTrainConfig
    from sseg.models.registry import load_model_config

    cfg = SelfTrainConfig()
    assert (cfg.model.aux_head, cfg.model.sync_bn, cfg.model.channels) == (False, False, 32)
    assert cfg.train.augment == "random_resized_crop"
    paper = load_model_config("sseg_plus_vit_b16")[1]
    assert (paper["channels"], paper["aux_head"], paper["sync_bn"]) == (768, True, True)


# ----------------------------------------------------------------------------- mmseg's training pipeline


def _photo(h=375, w=500, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), np.uint8)
    labels[h // 3:, w // 4:w // 2] = 1
    labels[: h // 5, w // 2:] = 2
    return image, labels


def test_mmseg_view_is_deterministic_per_seed_and_crop_sized():
    from sseg.data.transforms import mmseg_train_view

    image, labels = _photo()
    views = [mmseg_train_view(image, labels, 512, np.random.default_rng(s)) for s in (7, 7, 8)]
    for img, lab in views:
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8
        assert lab.shape == (512, 512) and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= {0, 1, 2, 255}
    assert np.array_equal(views[0][0], views[1][0]) and np.array_equal(views[0][1], views[1][1])
    assert not np.array_equal(views[0][0], views[2][0])


def test_mmseg_resize_ratio_range_of_2048x512():
    from sseg.data.transforms import mmseg_resize

    image, labels = _photo()
    shorts = []
    for seed in range(200):
        img, lab = mmseg_resize(image, labels, np.random.default_rng(seed))
        assert img.shape[:2] == lab.shape
        assert abs(img.shape[1] / img.shape[0] - 500 / 375) < 0.01  # aspect kept
        shorts.append(min(img.shape[:2]))
    assert 256 <= min(shorts) < 300 and 950 < max(shorts) <= 1024  # short side 512 x [0.5, 2.0]


def test_small_views_are_padded_with_ignore_and_the_mean_colour():
    from sseg.data.transforms import mmseg_train_view

    image, labels = _photo(100, 120)
    img, lab = mmseg_train_view(image, labels, 512, np.random.default_rng(0), scale=(256, 64),
                                ratio_range=(1.0, 1.0), photometric=False, hflip=False)
    assert (lab[64:] == 255).all() and (lab[:, 77:] == 255).all() and (lab[:64, :77] != 255).all()
    assert (img[100:] == [124, 116, 104]).all()


def test_cat_max_ratio_redraws_crops_dominated_by_one_class():
    from sseg.data.transforms import random_crop_cat_max

    labels = np.zeros((100, 400), np.uint8)
    labels[:, 300:] = 1  # only crops reaching x >= 300 hold two classes
    image = np.zeros((100, 400, 3), np.uint8)
    mixed = 0
    for seed in range(50):
        _, lab = random_crop_cat_max(image, labels, 100, np.random.default_rng(seed), 0.75)
        counts = np.bincount(lab.ravel(), minlength=2)
        mixed += counts.min() > 0 and counts.max() / counts.sum() < 0.75
    plain = sum(int(np.random.default_rng(s).integers(0, 301)) > 225 for s in range(50))
    assert mixed > plain + 10  # far more balanced crops than a single uniform draw gives


def test_photometric_distortion_is_seeded_and_changes_colours():
    from sseg.data.transforms import photometric_distortion

    image, _ = _photo(64, 64)
    a = photometric_distortion(image, np.random.default_rng(3))
    b = photometric_distortion(image, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.shape == image.shape and a.dtype == np.uint8
    assert any(not np.array_equal(photometric_distortion(image, np.random.default_rng(s)), image) for s in range(5))


def test_self_train_data_stage_mmseg_option():
    from pipelines.stages.self_train_data import CropPseudoLabels

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    image, labels = _photo()
    confidence = np.full(labels.shape, 255, np.uint8)
    confidence[:10] = 0  # below the threshold: ignored before the crop
    batch = {"key": np.array(["a", "b"], object), "image": np.array([png(image)] * 2, object),
             "label_png": np.array([png(labels)] * 2, object),
             "confidence_png": np.array([png(confidence)] * 2, object)}
    stage = CropPseudoLabels(512, (0.5, 1.0), 0.5, seed=0, augment="mmseg")
    out, again = stage(batch), stage(batch)
    assert out["image"].shape == (2, 512, 512, 3) and out["label"].shape == (2, 512, 512)
    assert np.array_equal(out["image"], again["image"]) and np.array_equal(out["label"], again["label"])
    assert not np.array_equal(out["image"][0], out["image"][1])  # each row its own view (key-seeded)
    with pytest.raises(ValueError, match="augment"):
        CropPseudoLabels(512, (0.5, 1.0), 0.5, augment="nope")
