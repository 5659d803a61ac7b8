"""Evaluation of several variants in one pass: each variant's matrices are those of the variant scored
alone (same images, same checkpoint, same settings), whether in one actor call or through Ray Data."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.stages.batch_inference import EvalVariant, EvaluateBatch, run_evaluations

SEGMENT = {"templates": "single", "bg_mode": "none", "short_side": 64, "sliding": False, "window": 64,
           "stride": 64}


def _checkpoint(directory, seed: int):
    import torch

    from schemas.configs import PretrainConfig
    from sseg.checkpoints import save_checkpoint
    from sseg.config import load_config
    from sseg.models import SSegModel

    model_cfg = load_config(PretrainConfig, None, [
        "model.num_queries=4", "model.dec_layers=1", "model.hidden_dim=16", "model.mask_dim=16", "model.nheads=2",
        "model.dim_feedforward=32", "model.text_layers=1", "model.text_width=16", "model.text_heads=2",
        "model.embed_dim=16", "model.context_length=16", "model.tiny_convnet_widths=[8,8,16,16]",
        "model.image_size=64"]).model
    torch.manual_seed(seed)
    save_checkpoint(directory, model=SSegModel(model_cfg), model_config=model_cfg.model_dump(mode="json"))
    return directory


@pytest.fixture()
def variants(tiny_world, tmp_path):
    from sseg.data.datasets import build_dataset

    names = list(build_dataset("world", tiny_world / "voc", "val").class_names)
    first, second = _checkpoint(tmp_path / "a", 0), _checkpoint(tmp_path / "b", 1)
    # class 0 merged into class 1 and the last class ignored: a protocol's label map
    label_map = [1] + list(range(1, len(names) - 1)) + [255] + [255] * (256 - len(names))
    return [EvalVariant(str(first), SEGMENT, names, keep_predictions=2),
            EvalVariant(str(second), SEGMENT, names),
            EvalVariant(str(first), SEGMENT, names[::-1], mask_quality=False),
            EvalVariant(str(first), SEGMENT, names[:-1], label_map=label_map, mask_quality=False)]


def _alone(dataset: dict, variant: EvalVariant, indices: list[int]) -> dict:
    from dataclasses import asdict

    return EvaluateBatch(dataset, [asdict(variant)])({"index": np.asarray(indices)})


def test_variants_together_equal_each_variant_alone(tiny_world, variants):
    dataset = {"name": "world", "root": str(tiny_world / "voc"), "split": "val"}
    indices = [0, 1, 2, 3, 4]
    from dataclasses import asdict

    together = EvaluateBatch(dataset, [asdict(v) for v in variants])({"index": np.asarray(indices)})
    assert together["skipped"] == [0]
    for i, variant in enumerate(variants):
        alone = _alone(dataset, variant, indices)
        for name in ("confusion", "mask_confusion", "images", "bg_clamped"):
            assert np.array_equal(np.asarray(together[f"{name}_{i}"]), np.asarray(alone[f"{name}_0"])), (i, name)
        assert len(together[f"examples_{i}"][0]["keys"]) == min(variant.keep_predictions, len(indices))
    confusion = np.asarray(together["confusion_3"][0])
    assert confusion.size == (len(variants[3].class_names)) ** 2  # the protocol's classes, not the dataset's
    from sseg.data.datasets import build_dataset

    reader = build_dataset("world", tiny_world / "voc", "val")
    labelled = sum(int((reader[i][2] != 255).sum()) for i in indices)
    assert int(np.asarray(together["confusion_0"][0]).sum()) == labelled  # every labelled pixel, once


def test_one_ray_pass_sums_the_batches_of_every_variant(ray_session, tiny_world, variants):
    dataset = {"name": "world", "root": str(tiny_world / "voc"), "split": "val"}
    outs = run_evaluations(dataset, variants, max_images=6, batch_size=4)
    for variant, out in zip(variants, outs):
        alone = _alone(dataset, variant, list(range(6)))
        n = len(variant.class_names)
        assert np.array_equal(out["confusion"].matrix, np.asarray(alone["confusion_0"][0]).reshape(n, n))
        assert out["images"] == 6 and out["skipped"] == 0 and out["images_per_s"] > 0
        assert len(out["examples"]) == variant.keep_predictions
