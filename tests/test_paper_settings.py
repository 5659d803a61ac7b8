"""The paper configs' settings (issue 24, defects 5 and 7): SemiVL's schedule (80 epochs of the unlabelled
loader), training rescale (short side 512 × [0.5, 2]) and evaluation (short side 512, window 512 / 426),
class definitions for the guidance only (the decoder on class names) with ours as a named option, and the
``sseg.deviation`` tag of every stage naming each setting that differs from the paper (none for the paper
configs). No Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.inputs.semivl import semivl_deviations
from pipelines.runs.pretrain import pretrain_deviations
from pipelines.inputs.self_train import self_train_deviations
from pipelines.tracking import deviation_tags
from schemas.configs import PretrainConfig, SelfTrainConfig, SemiVLConfig
from sseg.config import load_config
from sseg.data.readers.class_names import VOC_CLASSES
from sseg.semivl.augment import rescaled_shape, weak_view
from sseg.semivl.concepts import decoder_and_guide_classes

ROOT = Path(__file__).resolve().parents[1]
VOC92_UNLABELED = 10_582 - 92  # UniMatch's pascal/92 unlabeled.txt


def semivl_voc(*overrides: str) -> SemiVLConfig:
    return load_config(SemiVLConfig, ROOT / "configs" / "semivl_voc.yaml", ["vlm.checkpoint=/w/ViT-B-16.pt", *overrides])


def test_semivl_voc_trains_80_epochs_of_the_unlabelled_loader_and_evaluates_like_the_public_code():
    cfg = semivl_voc()
    assert cfg.train.steps == 80 * (VOC92_UNLABELED // 8) == 104_880
    assert cfg.train.batch_size * cfg.train.num_workers == 8
    assert tuple(cfg.data.img_scale) == (2048, 512) and tuple(cfg.data.scale) == (0.5, 2.0)
    assert cfg.data.crop_size == 512
    assert (cfg.eval.short_side, cfg.eval.window, cfg.eval.stride) == (512, 512, 426)
    assert cfg.components.class_definitions == "guidance"
    assert semivl_deviations(cfg, VOC92_UNLABELED) == []
    assert deviation_tags([]) == {}


def test_training_rescale_is_relative_to_short_side_512():
    assert rescaled_shape(375, 500, 1.0, (2048, 512)) == (512, 683)  # a VOC image: short side → 512
    assert rescaled_shape(375, 500, 0.5, (2048, 512)) == (256, 341)
    assert rescaled_shape(500, 4000, 1.0, (2048, 512)) == (256, 2048)  # the long side bound
    assert rescaled_shape(375, 500, 1.0, None) == (375, 500)  # the world default: the image's own size
    image = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    _, ignore = weak_view(image, None, 512, np.random.default_rng(0), (1.0, 1.0), img_scale=(2048, 512))
    assert ignore.shape == (512, 512) and not ignore.any()  # no padding: the image was 512 high
    _, ignore = weak_view(image, None, 512, np.random.default_rng(0), (1.0, 1.0))
    assert (ignore == 255).any()  # native size: 375 rows padded to 512


def test_class_definitions_feed_the_guidance_and_the_decoder_sees_names():
    names = list(VOC_CLASSES)
    decoder, guide = decoder_and_guide_classes(names, "voc", "guidance")
    assert decoder == {n: [n] for n in names}
    assert len(guide["person"]) > 1 and guide["person"] != ["person"]
    decoder_ours, guide_ours = decoder_and_guide_classes(names, "voc", "decoder")
    assert decoder_ours == guide_ours == guide
    assert decoder_and_guide_classes(names, "voc", False) == (decoder, decoder)
    assert decoder_and_guide_classes(names, None, "guidance") == (decoder, decoder)


def test_the_step_guides_with_the_concepts_and_decodes_with_the_names():
    from sseg.semivl.step import SemiVLStep, SemiVLStepSettings
    from tests.test_semivl import sseg_model

    torch.set_num_threads(1)
    names = list(VOC_CLASSES)
    decoder, guide = decoder_and_guide_classes(names, "voc", "guidance")
    model = sseg_model()
    step = SemiVLStep.create(model, {}, decoder, "single",
                             device=torch.device("cpu"), spatial_ft=True, guidance=True, lr=1e-4, head_lr_mult=10,
                             backbone_lr_mult=0.01, weight_decay=0.01, total_steps=2, warmup_steps=0, poly_power=0.9,
                             settings=SemiVLStepSettings(total_steps=2, guidance=True), guide_classes=guide)
    assert step.text.embeddings.shape[0] == 21  # one text per class name
    assert step.guide_text.embeddings.shape[0] == sum(len(v) for v in guide.values()) > 21
    assert step.guide_text.num_classes == 21


def test_world_default_uses_the_papers_class_definitions_and_names_its_budget():
    cfg = SemiVLConfig()
    assert cfg.components.class_definitions == "guidance"
    deviations = semivl_deviations(cfg, 1500)
    assert not any(d.startswith("class definitions through the decoder") for d in deviations)
    decoder = semivl_deviations(SemiVLConfig.model_validate({"components": {"class_definitions": "decoder"}}), 1500)
    assert any(d.startswith("class definitions through the decoder") for d in decoder)
    assert "16 labelled + unlabelled images per step (the paper: 8 + 8)" in deviations
    assert any(d.startswith("lr 0.001, backbone x1, head x10") for d in deviations)
    assert any(d.startswith("VLM sseg") for d in deviations)
    assert any(d.startswith("evaluation at short side native") for d in deviations)
    with pytest.raises(Exception, match="class_definitions"):
        SemiVLConfig.model_validate({"components": {"class_definitions": "both"}})
    paper = semivl_voc("components.class_definitions=false", "train.steps=40000", "eval.short_side=null")
    found = semivl_deviations(paper, VOC92_UNLABELED)
    assert found[0] == "components off: class_definitions"
    assert any("40000 steps = 30.5 epochs" in d and "104880 steps here" in d for d in found)
    assert any(d.startswith("evaluation at short side native") for d in found)


def test_pretraining_and_sseg_plus_name_their_deviations_and_the_paper_configs_have_none():
    cc12m = load_config(PretrainConfig, ROOT / "configs" / "sseg_cc12m.yaml")
    assert pretrain_deviations(cc12m) == []
    pixel = load_config(PretrainConfig, ROOT / "configs" / "sseg_cc12m.yaml", ["pseudo_masks.generator=pixel"])
    assert pretrain_deviations(pixel)[0].startswith("pseudo masks from the pixel generator")
    demo = pretrain_deviations(PretrainConfig())
    assert any(d.startswith("backbone tiny_convnet") for d in demo)
    segment = {"flip": False, "scales": [1.0]}
    voc = load_config(SelfTrainConfig, ROOT / "configs" / "self_train_voc.yaml", ["model.backbone_checkpoint=/w/mae.pth"])
    assert self_train_deviations(voc, segment) == []
    narrow = load_config(SelfTrainConfig, ROOT / "configs" / "self_train_voc.yaml",
                         ["model.backbone_checkpoint=/w/mae.pth", "model.channels=512", "model.sync_bn=false"])
    assert self_train_deviations(narrow, segment) == [
        "UperNet head width 512 (BEiT/MAE's UperNet: 768)",
        "batch norm not synchronised over the GPUs (model.sync_bn; the paper: SyncBN)"]
    assert any(d.startswith("ViT ") for d in self_train_deviations(SelfTrainConfig(), segment))


def test_tagclip_and_tuss_name_their_deviations_and_the_paper_configs_have_none():
    from pipelines.inputs.tagclip import tagclip_deviations
    from pipelines.inputs.tuss import tuss_deviations
    from schemas.configs import TagCLIPConfig, TussConfig

    tagclip = load_config(TagCLIPConfig, ROOT / "configs" / "tagclip_voc.yaml", ["vlm.checkpoint=/w/ViT-B-16.pt"])
    assert tagclip_deviations(tagclip) == []
    changed = load_config(TagCLIPConfig, ROOT / "configs" / "tagclip_voc.yaml",
                          ["vlm.checkpoint=/w/ViT-B-16.pt", "train.steps=2", "train.lr=1e-4", "model.trusty_token=false",
                           "train.all_classes=true"])
    assert tagclip_deviations(changed) == [
        "model trusty_token False (the paper: True)",
        "trained on every class, unseen included (the fully supervised upper bound)",
        "2 iterations (the paper on voc: 20000)", "train lr 0.0001 (the paper: 2e-05)"]
    world = tagclip_deviations(TagCLIPConfig())
    assert world[0] == "VLM sseg (the paper: CLIP ViT-B/16)"
    assert not any("prompt_tokens" in d for d in world)  # visual prompts are CLIP's: no deviation for S-Seg
    assert any(d.startswith("crop 64") for d in world) and any(d.startswith("train lr") for d in world)
    assert any("zero_shot_ensemble 0.8 (the paper: 0.0)" in d for d in world)

    tuss = load_config(TussConfig, ROOT / "configs" / "tuss_voc.yaml",
                       ["vlm.checkpoint=/w/ViT-B-16.pt", "masks.files_dir=/m"])
    assert tuss_deviations(tuss) == []
    assert tuss_deviations(load_config(TussConfig, ROOT / "configs" / "tuss_voc.yaml", [
        "vlm.checkpoint=/w/ViT-B-16.pt", "masks.files_dir=/m", "embed.method=maskclip", "embed.window=448",
        "classifier.glcc.probe.epochs=2", 'classifier.glcc.order=["probe"]'])) == [
        "embedding window 448 (the paper: 224)", "probe epochs 2 (the paper: 90)",
        "GLCC order probe (the paper: two rounds of probe → propagation)"]  # maskclip is the paper's baseline row
    world = tuss_deviations(TussConfig())
    assert world[:2] == ["VLM sseg (the paper: CLIP ViT-B/16)", "masks from generator (the paper: SAM masks, given as files)"]
    pooled_dba = tuss_deviations(TussConfig.model_validate({"embed": {"method": "pooled_dba"}}))
    assert pooled_dba[1].startswith("pooled_dba: affinity-restricted DBA analogue")
