"""TagCLIP targets and loss: the trusty target (void and padding pixels), seen labels, the loss against a
hand computation, and that unseen classes give no gradient and no text."""

import math

import numpy as np
import pytest
import torch

from sseg.tagclip.config import TagCLIPModelConfig
from sseg.tagclip.losses import LossWeights, count_masks, dice, sigmoid_focal, tagclip_loss
from sseg.tagclip.model import TagCLIPModel
from sseg.tagclip.targets import seen_labels, seen_lookup, trusty_target

from test_tagclip_model import TINY_SSEG

V = 255  # void / padding


def test_trusty_target_is_one_on_unseen_pixels_only_void_and_padding_included():
    # dataset classes 0..4, unseen {3, 4}; the right column and bottom row are padding (255)
    label = np.array([[0, 3, 4, V],
                      [1, 3, V, V],
                      [V, V, V, V]], dtype=np.uint8)
    expected = np.array([[0, 1, 1, 0],
                         [0, 1, 0, 0],
                         [0, 0, 0, 0]], dtype=np.float32)
    target = trusty_target(label, [3, 4])
    assert target.dtype == np.float32 and np.array_equal(target, expected)
    assert torch.equal(trusty_target(torch.from_numpy(label), [3, 4]), torch.from_numpy(expected))


def test_seen_labels_mask_unseen_and_ignored_classes_but_keep_the_image():
    # VOC-like: 0 = background (ignored), seen {1, 2}, unseen {3}
    table = seen_lookup(4, [1, 2])
    label = np.array([[0, 1, 2, 3, V]], dtype=np.uint8)
    assert seen_labels(label, table).tolist() == [[V, 0, 1, V, V]]
    assert seen_labels(torch.from_numpy(label), table).tolist() == [[V, 0, 1, V, V]]


def test_focal_and_dice_match_a_hand_computation():
    logits = torch.tensor([[0.0, 2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    p = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1))]
    focal = [-0.25 * (1 - p[0]) ** 2 * math.log(p[0]), -0.75 * p[1] ** 2 * math.log(1 - p[1]),
             -0.25 * (1 - p[2]) ** 2 * math.log(p[2])]
    assert sigmoid_focal(logits, targets).item() == pytest.approx(sum(focal) / 3, rel=1e-5)
    assert dice(logits, targets).item() == pytest.approx(1 - (2 * (p[0] + p[2]) + 1) / (sum(p) + 2 + 1), rel=1e-5)


def test_loss_matches_the_public_convention():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 2, 2)
    trusty_logits = torch.randn(2, 1, 2, 2)
    labels = torch.tensor([[[0, 0], [V, 2]],  # classes 0 and 2 present
                           [[V, V], [V, V]]])  # nothing seen (an all-unseen image): no dice term
    trusty = torch.tensor([[[0, 0], [1, 0]], [[1, 1], [0, 0]]], dtype=torch.float32)
    loss, parts = tagclip_loss(logits, trusty_logits, labels, trusty)
    assert parts["masks"] == 2
    targets = torch.zeros(2, 3, 4)
    targets[0, 0, :2] = 1
    targets[0, 2, 3] = 1
    focal = sigmoid_focal(logits.flatten(2).reshape(6, 4), targets.reshape(6, 4)).sum() / 2
    dices = dice(logits[0, [0, 2]].flatten(1), targets[0, [0, 2]]).sum() / 2
    t = sigmoid_focal(trusty_logits.reshape(2, 4), trusty.reshape(2, 4)).sum() / 2
    assert loss.item() == pytest.approx((20 * focal + dices + 10 * t).item(), rel=1e-5)
    assert parts["loss_trusty"] == pytest.approx(t.item(), rel=1e-5)
    dice_loss, _ = tagclip_loss(logits, trusty_logits, labels, trusty, LossWeights(trusty_loss="dice"))
    t_dice = dice(trusty_logits.reshape(2, 4), trusty.reshape(2, 4)).sum() / 2
    assert dice_loss.item() == pytest.approx((20 * focal + dices + 10 * t_dice).item(), rel=1e-5)
    no_token, parts = tagclip_loss(logits, None, labels, None)
    assert "loss_trusty" not in parts and no_token.item() == pytest.approx((20 * focal + dices).item(), rel=1e-5)


def test_count_masks_and_predictions_upsampled_to_the_label():
    labels = torch.tensor([[[0, 1], [1, V]], [[2, 2], [2, 2]]])
    assert count_masks(labels, 3).tolist() == [[True, True, False], [False, False, True]]
    loss, parts = tagclip_loss(torch.zeros(2, 3, 1, 1), None, labels, None)
    assert parts["masks"] == 3 and torch.isfinite(loss)


def test_unseen_classes_give_no_gradient_and_do_not_change_the_loss():
    """Text embeddings of all five classes in one table; training reads only the seen rows, so unseen rows get
    exactly zero gradient, and which unseen class a pixel had does not matter (only that it is unseen)."""
    torch.manual_seed(0)
    model = TagCLIPModel(TagCLIPModelConfig(sseg=TINY_SSEG, seen_classes=("a", "b", "c"), heads=2)).train()
    seen_ids, unseen_ids = [0, 1, 2], [3, 4]
    table = torch.randn(5, 16, requires_grad=True)
    images = torch.randn(2, 3, 64, 64)
    raw = torch.randint(0, 5, (2, 64, 64), dtype=torch.uint8)
    raw[:, :4] = V

    def loss_for(label):
        torch.manual_seed(1)  # same dropout masks
        out = model(images, table[seen_ids])
        target = seen_labels(label, seen_lookup(5, seen_ids))
        return tagclip_loss(out["class_logits"], out["trusty_logits"], target, trusty_target(label, unseen_ids))[0]

    loss = loss_for(raw)
    loss.backward()
    assert table.grad[seen_ids].abs().sum() > 0
    assert torch.equal(table.grad[unseen_ids], torch.zeros(2, 16))
    swapped = raw.clone()
    swapped[raw == 3], swapped[raw == 4] = 4, 3
    assert torch.equal(loss_for(swapped), loss.detach())
    assert model(images, table[seen_ids].detach())["class_logits"].shape[1] == 3  # seen maps only


def test_step_encodes_only_seen_names_and_trains_only_the_decoder():
    from sseg.models.text import tokenize
    from sseg.tagclip.splits import resolve_split
    from sseg.tagclip.step import TagCLIPStep

    torch.manual_seed(0)
    names = ["ball", "box", "car", "sky", "water"]
    split = resolve_split({"unseen": ["car", "water"]}, names)
    config = {"sseg": TINY_SSEG, "seen_classes": list(split.seen_names), "heads": 2}
    model = TagCLIPModel(TagCLIPModelConfig.model_validate(config))
    encoded = []

    def spy(texts, context_length):
        encoded.extend(texts)
        return tokenize(texts, context_length)

    step = TagCLIPStep.create(model, config, split, ["a photo of a {}.", "{}"], device=torch.device("cpu"),
                              lr=1e-3, weight_decay=0.01, head_mult=10, prompt_mult=10, total_steps=4,
                              warmup_steps=0, poly_power=0.9, tokenizer=spy)
    assert encoded and not any(u in t for t in encoded for u in ("car", "water"))
    assert step.text.shape == (3, 16)
    vlm_before = {k: v.clone() for k, v in model.vlm.state_dict().items()}
    token_before = model.decoder.trusty_token.detach().clone()
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
             "label": rng.integers(0, 5, (2, 64, 64)).astype(np.uint8)}
    batch["label"][:, -8:] = V  # padding
    metrics = [step.run(batch) for _ in range(2)]
    assert all(math.isfinite(m["loss"]) and m["loss_trusty"] > 0 for m in metrics)
    assert metrics[0]["unseen_pixels"] == pytest.approx(float(np.isin(batch["label"], [2, 4]).mean()))
    assert not torch.equal(model.decoder.trusty_token, token_before)
    assert all(torch.equal(v, model.vlm.state_dict()[k]) for k, v in vlm_before.items())
    assert {g["group"] for g in step.optimizer.param_groups} == {"head"}
    assert step.optimizer.param_groups[0]["initial_lr"] == pytest.approx(1e-2)


def test_vision_mult_trains_the_vision_tower_at_its_lr_and_keeps_the_text_tower_frozen():
    from sseg.tagclip.splits import resolve_split
    from sseg.tagclip.step import TagCLIPStep

    torch.manual_seed(0)
    names = ["ball", "box", "car", "sky"]
    split = resolve_split({"unseen": ["car"]}, names)
    config = {"sseg": TINY_SSEG, "seen_classes": list(split.seen_names), "heads": 2}
    model = TagCLIPModel(TagCLIPModelConfig.model_validate(config))
    step = TagCLIPStep.create(model, config, split, ["{}"], device=torch.device("cpu"), lr=1e-3,
                              weight_decay=0.01, head_mult=10, prompt_mult=10, total_steps=4, warmup_steps=0,
                              poly_power=0.9, vision_mult=0.5)
    lrs = {g["group"]: g["lr"] for g in step.optimizer.param_groups}
    assert lrs == {"head": pytest.approx(1e-2), "vision": pytest.approx(5e-4)}
    vision = dict(model.vlm.vision_parameters())
    text = dict(model.vlm.text_parameters())
    vision_before = {k: v.detach().clone() for k, v in vision.items()}
    text_before = {k: v.detach().clone() for k, v in text.items()}
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8),
             "label": rng.integers(0, 4, (2, 64, 64)).astype(np.uint8)}
    step.run(batch)
    assert any(not torch.equal(v, vision[k]) for k, v in vision_before.items())
    assert all(torch.equal(v, text[k]) for k, v in text_before.items())
    model.eval()  # inference needs no graph through the tower
    patches, _ = model.embed_image(torch.randn(1, 3, 64, 64))
    assert not patches.requires_grad
