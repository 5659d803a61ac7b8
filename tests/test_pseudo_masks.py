"""Pseudo-mask generators (pixel, DINO), their config/factory, and the oracle mIoU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sseg  # noqa: F401  (before timm: torchvision fix)
from sseg.errors import CheckpointError, ConfigError, DataError
from sseg.pseudo_masks import (
    DinoKMeansGenerator,
    OracleMIoU,
    PixelKMeansGenerator,
    PseudoMaskConfig,
    build_generator,
    load_dino_state_dict,
    oracle_relabel,
    rgb_to_lab,
)
from sseg.pseudo_masks.dino import create_vit
from sseg.pseudo_masks.generator import upsample_labels

# ---------------------------------------------------------------- colour conversion


def test_rgb_to_lab_known_values() -> None:
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [0.5, 0.5, 0.5]])
    expected = torch.tensor(  # CIE L*a*b* (D65) reference values
        [
            [53.24, 80.09, 67.20],
            [87.73, -86.18, 83.18],
            [32.30, 79.19, -107.86],
            [100.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [53.39, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(rgb_to_lab(rgb), expected, atol=0.02, rtol=0)


# ---------------------------------------------------------------- pixel generator


def _quadrant_images() -> tuple[torch.Tensor, np.ndarray]:
    """Two 32x40 images of four flat-coloured quadrants, with ground truth 0..3 per quadrant."""
    colours = torch.tensor([[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40]], dtype=torch.uint8)
    gt = np.zeros((32, 40), dtype=np.uint8)
    gt[:16, 20:], gt[16:, :20], gt[16:, 20:] = 1, 2, 3
    first = colours[torch.from_numpy(gt).long()]
    second = colours[torch.from_numpy(gt[::-1, ::-1].copy()).long()]
    return torch.stack([first, second]), np.stack([gt, gt[::-1, ::-1]])


def test_pixel_generator_separates_flat_regions_exactly(caplog: pytest.LogCaptureFixture) -> None:
    images, gt = _quadrant_images()
    with caplog.at_level(logging.WARNING):
        generator = build_generator(PseudoMaskConfig(generator="pixel", num_segments=4, pixel_stride=2,
                                                     pixel_position_weight=0.1))
    assert isinstance(generator, PixelKMeansGenerator) and generator.name == "pixel"
    assert "PIXEL K-Means baseline" in caplog.text
    masks = generator(images)
    assert masks.shape == (2, 32, 40) and masks.dtype == torch.uint8
    for b in range(2):  # one segment per quadrant: a bijection between segment ids and gt labels
        pairs = set(zip(masks[b].numpy().ravel().tolist(), gt[b].ravel().tolist()))
        assert len(pairs) == 4 and len({s for s, _ in pairs}) == 4
    oracle = OracleMIoU(num_classes=4)
    oracle.update(masks, gt)
    assert oracle.compute()["miou"] == 1.0


def test_pixel_generator_output_range_odd_sizes_and_determinism() -> None:
    images = torch.randint(0, 256, (3, 21, 17, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    generator = build_generator(PseudoMaskConfig(num_segments=5, pixel_stride=4))
    masks = generator(images)
    assert masks.shape == (3, 21, 17) and masks.dtype == torch.uint8
    assert int(masks.max()) < 5
    assert torch.equal(masks, generator(images))
    single = generator(images[0].numpy())  # one numpy HxWx3 image is accepted too
    assert single.shape == (1, 21, 17)


def test_position_weight_moves_segments_towards_a_grid() -> None:
    flat = torch.full((1, 32, 32, 3), 128, dtype=torch.uint8)  # no colour information at all
    masks = build_generator(PseudoMaskConfig(num_segments=4, pixel_position_weight=1.0))(flat)[0]
    sizes = torch.bincount(masks.flatten().long(), minlength=4)
    assert (sizes > 0).all()  # position alone splits the image into 4 connected areas
    assert sizes.max() <= 2 * sizes.min()


def test_config_hash_names_only_what_changes_the_output() -> None:
    base = PseudoMaskConfig()
    hash_of = lambda **kw: build_generator(base.model_copy(update=kw)).config_hash()  # noqa: E731
    assert hash_of() == hash_of(dino_feature="keys") == hash_of(device="cpu")
    assert hash_of() != hash_of(pixel_stride=4)
    assert hash_of() != hash_of(num_segments=6)
    assert hash_of() != hash_of(seed=1)


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(2, 8, 8, 3), torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(8, 8, dtype=torch.uint8)],
)
def test_generator_rejects_wrong_input(bad: torch.Tensor) -> None:
    with pytest.raises(DataError, match=r"uint8 RGB \[B, H, W, 3\]"):
        build_generator(PseudoMaskConfig())(bad)


def test_config_rejects_unknown_generator_and_fields() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PseudoMaskConfig(generator="spectral")
    with pytest.raises(ValidationError):
        PseudoMaskConfig(num_clusters=8)


def test_upsample_bilinear_one_hot_keeps_blocks_and_ids() -> None:
    labels = torch.tensor([[[0, 1], [2, 3]]])
    for mode in ("nearest", "bilinear"):
        up = upsample_labels(labels, (8, 8), 4, mode)[0]
        assert up.dtype == torch.uint8
        assert up[0, 0] == 0 and up[0, 7] == 1 and up[7, 0] == 2 and up[7, 7] == 3
        assert torch.bincount(up.flatten().long(), minlength=4).tolist() == [16, 16, 16, 16]


# ---------------------------------------------------------------- DINO generator


@pytest.fixture(scope="module")
def dino_state() -> dict[str, torch.Tensor]:
    """A random-init timm ViT-S/8 state_dict in the official DINO layout (no head)."""
    torch.manual_seed(0)
    state = create_vit().state_dict()
    assert not any(k.startswith("head") for k in state)
    return state


@pytest.fixture(scope="module")
def dino_checkpoint(dino_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dino") / "dino_deitsmall8_pretrain.pth"
    torch.save(dino_state, path)
    return path


@pytest.fixture(scope="module")
def dino_generator(dino_checkpoint: Path) -> DinoKMeansGenerator:
    cfg = PseudoMaskConfig(generator="dino", dino_checkpoint=str(dino_checkpoint), device="cpu")
    generator = build_generator(cfg)
    assert isinstance(generator, DinoKMeansGenerator)
    return generator


def test_dino_checkpoint_loads_into_the_model(dino_generator: DinoKMeansGenerator,
                                             dino_state: dict[str, torch.Tensor]) -> None:
    loaded = dino_generator.model.state_dict()
    assert set(loaded) == set(dino_state)
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.attn.qkv.weight", "norm.weight"):
        assert torch.equal(loaded[key], dino_state[key])


def test_dino_masks_shape_range_and_determinism(dino_generator: DinoKMeansGenerator) -> None:
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    masks = dino_generator(images)
    assert masks.shape == (2, 64, 64) and masks.dtype == torch.uint8
    assert int(masks.max()) < 8 and len(masks[0].unique()) > 1
    assert torch.equal(masks, dino_generator(images))
    odd = dino_generator(images[:, :60, :52])  # not a multiple of the patch size
    assert odd.shape == (2, 60, 52)


def test_output_settings_from_the_config_match_the_built_generator(dino_generator: DinoKMeansGenerator) -> None:
    assert dino_generator.hashed_settings() == DinoKMeansGenerator.output_settings(dino_generator.config)
    assert len(dino_generator.weights_id) == 64  # the checkpoint file's SHA-256
    pixel = build_generator(PseudoMaskConfig(pixel_stride=3))
    assert pixel.hashed_settings() == PixelKMeansGenerator.output_settings(pixel.config)


def test_dino_token_and_key_features_match_the_vit(dino_checkpoint: Path,
                                                   dino_generator: DinoKMeansGenerator) -> None:
    images = torch.randint(0, 256, (2, 32, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    model = dino_generator.model
    pixels = images.permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    captured: dict[str, torch.Tensor] = {}
    handle = model.blocks[-1].register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    with torch.inference_mode():
        tokens = model.forward_features(pixels)
        last = model.blocks[-1]
        keys = F.linear(last.norm1(captured["x"]), last.attn.qkv.weight[384:768], last.attn.qkv.bias[384:768])
        handle.remove()
        fp32 = lambda feature: DinoKMeansGenerator(dino_generator.config.model_copy(  # noqa: E731
            update={"bf16": False, "dino_feature": feature}))
        token_features, grid = fp32("tokens").features(images)
        key_features, _ = fp32("keys").features(images)
    assert grid == (4, 5) and token_features.shape == (2, 20, 384)
    torch.testing.assert_close(token_features, F.normalize(tokens[:, 1:], dim=-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(key_features, F.normalize(keys[:, 1:], dim=-1), atol=1e-5, rtol=1e-4)


def test_dino_wrapped_and_prefixed_checkpoints_load(dino_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    wrapped = {
        "teacher": {f"backbone.{k}": v for k, v in dino_state.items()} | {"head.last_layer.weight": torch.zeros(3)},
        "student": {f"module.backbone.{k}": v for k, v in dino_state.items()},
        "epoch": 100,
    }
    path = tmp_path / "full_checkpoint.pth"
    torch.save(wrapped, path)
    state = load_dino_state_dict(path)
    assert set(state) == set(dino_state)
    assert torch.equal(state["blocks.0.attn.qkv.weight"], dino_state["blocks.0.attn.qkv.weight"])
    path2 = tmp_path / "state_dict.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in dino_state.items()}}, path2)
    assert set(load_dino_state_dict(path2)) == set(dino_state)


def test_dino_bad_checkpoints_are_checkpoint_errors(dino_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    config = lambda path: PseudoMaskConfig(generator="dino", dino_checkpoint=str(path))  # noqa: E731
    with pytest.raises(CheckpointError, match="not found: .*nowhere.pth"):
        build_generator(config(tmp_path / "nowhere.pth"))
    renamed = dict(dino_state)
    renamed["blocks.0.attn.qkv_renamed.weight"] = renamed.pop("blocks.0.attn.qkv.weight")
    wrong_key = tmp_path / "wrong_key.pth"
    torch.save(renamed, wrong_key)
    with pytest.raises(CheckpointError) as err:
        build_generator(config(wrong_key))
    message = str(err.value)
    assert "wrong_key.pth" in message and "\n" not in message
    assert "missing keys: blocks.0.attn.qkv.weight" in message
    assert "unexpected keys: blocks.0.attn.qkv_renamed.weight" in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        build_generator(config(garbage))


def test_dino_checkpoint_with_wrong_shapes_is_rejected(dino_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    bad = dict(dino_state)
    bad["norm.weight"] = torch.ones(192)
    path = tmp_path / "small.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r"'norm.weight' has shape \(192,\), expected \(384,\)"):
        build_generator(PseudoMaskConfig(generator="dino", dino_checkpoint=str(path)))


def test_dino_without_checkpoint_needs_explicit_random_init(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="dino_checkpoint is required"):
        build_generator(PseudoMaskConfig(generator="dino"))
    with caplog.at_level(logging.WARNING):
        generator = build_generator(PseudoMaskConfig(generator="dino", dino_allow_random_init=True))
    assert "RANDOMLY INITIALISED" in caplog.text
    assert generator.config_hash() != build_generator(
        PseudoMaskConfig(generator="dino", dino_allow_random_init=True, seed=1)).config_hash()


# ---------------------------------------------------------------- oracle mIoU


def test_oracle_relabel_majority_vote_ignores_255() -> None:
    segments = np.array([[0, 0, 0, 1], [0, 1, 1, 1], [2, 2, 3, 3]])
    gt = np.array([[5, 5, 7, 7], [255, 7, 7, 3], [255, 255, 1, 2]], dtype=np.uint8)
    # segment 0: {5, 5, 7} (+255 ignored) -> 5; segment 1: {7, 7, 7, 3} -> 7;
    # segment 2: only ignored pixels -> 255; segment 3: {1, 2} tie -> smaller label 1.
    expected = np.array([[5, 5, 5, 7], [5, 7, 7, 7], [255, 255, 1, 1]], dtype=np.uint8)
    relabelled = oracle_relabel(segments, gt)
    assert relabelled.dtype == np.uint8
    np.testing.assert_array_equal(relabelled, expected)


def test_oracle_miou_hand_computed() -> None:
    # Image 1: segments split class 0 / class 1 exactly -> perfect.
    seg1 = np.array([[0, 0, 1, 1]])
    gt1 = np.array([[0, 0, 1, 1]])
    # Image 2: one segment covers {0, 0, 0, 1} -> all predicted 0; one pixel ignored.
    seg2 = np.array([[4, 4, 4, 4, 4]])
    gt2 = np.array([[0, 0, 0, 1, 255]])
    oracle = OracleMIoU(num_classes=3)
    oracle.update(seg1, gt1)
    oracle.update(torch.from_numpy(seg2), torch.from_numpy(gt2))
    result = oracle.compute()
    # class 0: tp = 2 + 3 = 5, gt = 5, pred = 6 -> 5/6; class 1: tp 2, gt 3, pred 2 -> 2/3.
    assert result["per_class_iou"][0] == pytest.approx(5 / 6)
    assert result["per_class_iou"][1] == pytest.approx(2 / 3)
    assert np.isnan(result["per_class_iou"][2])  # class 2 never occurs: not in the mean
    assert result["miou"] == pytest.approx((5 / 6 + 2 / 3) / 2)


def test_oracle_rejects_mismatched_shapes() -> None:
    with pytest.raises(DataError, match="shape"):
        oracle_relabel(np.zeros((2, 3), dtype=np.int64), np.zeros((3, 2), dtype=np.int64))
