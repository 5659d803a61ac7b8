"""S-Seg model: shapes and contracts, known-answer checks of its parts, checkpoints, a training sanity run."""

from __future__ import annotations

import math

import pytest
import torch

import sseg  # noqa: F401  (before timm / open_clip)
from sseg.config import load_config
from sseg.errors import CheckpointError, ConfigError, DataError
from sseg.losses import SSegCriterion, pseudo_masks_to_targets
from sseg.models import ModelConfig, SSegModel, mask_pooled_features, query_collapse, tiny_model_config, tokenize
from sseg.models.backbones import TimmBackbone, TinyConvNet, build_backbone

EOT = 49407


@pytest.fixture(scope="module")
def tiny_model() -> SSegModel:
    torch.manual_seed(0)
    return SSegModel(tiny_model_config()).eval()


def test_tiny_forward_contract(tiny_model: SSegModel) -> None:
    cfg = tiny_model.cfg
    images = torch.randn(2, 3, 64, 64)
    tokens = tokenize(["a red ball", "two dogs on grass"], cfg.context_length)
    with torch.no_grad():
        out = tiny_model(images, tokens)
    assert out["pred_masks"].shape == (2, cfg.num_queries, 16, 16)
    assert out["mask_features"].shape == (2, cfg.num_queries, cfg.embed_dim)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_masks"].shape == out["pred_masks"].shape
        assert aux["mask_features"].shape == out["mask_features"].shape
    torch.testing.assert_close(out["image_features"], out["mask_features"].mean(1))
    assert out["text_features"].shape == (2, cfg.embed_dim)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    # projected but not normalised
    assert not torch.allclose(out["text_features"].norm(dim=-1), torch.ones(2))


def test_masks_are_mask_embeddings_dot_per_pixel_features(tiny_model: SSegModel) -> None:
    mf = tiny_model.maskformer
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = tiny_model.encode_image(images)
        pixels = mf.pixel_decoder(mf.backbone(images))
        queries = mf.decoder(mf.input_proj(pixels.decoder_memory))
        embed = mf.mask_embed(queries[-1])  # [1,N,C]
        manual = (embed[0] @ pixels.mask_features[0].flatten(1)).view(-1, 16, 16)
        projected = tiny_model.image_projection(queries[-1])
    assert pixels.mask_features.shape[-2:] == (16, 16)  # stride 4
    torch.testing.assert_close(out["pred_masks"][0], manual, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["mask_features"], projected)
    assert queries.shape[0] == tiny_model.cfg.dec_layers


def test_tokenizer_keeps_end_of_text_and_pads() -> None:
    tokens = tokenize(["a cat", "word " * 50], context_length=8)
    assert tokens.dtype == torch.int64 and tokens.shape == (2, 8)
    assert tokens[0, 0].item() == 49406 and tokens[0].max().item() == EOT
    assert tokens[0, -1].item() == 0  # padding
    assert tokens[1, -1].item() == EOT  # truncated, end-of-text kept
    with pytest.raises(DataError, match="list of strings"):
        tokenize("a cat")  # type: ignore[arg-type]


def test_text_features_pool_at_end_of_text(tiny_model: SSegModel) -> None:
    cfg = tiny_model.cfg
    tokens = tokenize(["a cat on a mat"], cfg.context_length)
    eot_pos = int(tokens.argmax())
    with torch.no_grad():
        base = tiny_model.encode_text(tokens)
        after = tokens.clone()
        after[0, eot_pos + 1:] = 1234  # after <end>: invisible under the causal mask + eot pooling
        before = tokens.clone()
        before[0, eot_pos - 1] = 1234
        short = tokens[:, : eot_pos + 1]  # padded back to context_length inside
        manual_tokens = tiny_model.text_encoder.transformer
        x, mask = manual_tokens._embeds(tokens)
        hidden = manual_tokens.ln_final(manual_tokens.transformer(x, attn_mask=mask))
        manual = tiny_model.text_encoder.projection(hidden[0, eot_pos])
        torch.testing.assert_close(tiny_model.encode_text(after), base)
        torch.testing.assert_close(tiny_model.encode_text(short), base)
        assert not torch.allclose(tiny_model.encode_text(before), base)
    torch.testing.assert_close(base[0], manual, rtol=1e-4, atol=1e-5)


def test_text_input_errors(tiny_model: SSegModel) -> None:
    cfg = tiny_model.cfg
    with pytest.raises(DataError, match="context_length"):
        tiny_model.encode_text(torch.zeros(1, cfg.context_length + 1, dtype=torch.long))
    with pytest.raises(DataError, match="token ids"):
        tiny_model.encode_text(torch.full((1, 4), cfg.vocab_size, dtype=torch.long))
    with pytest.raises(DataError, match="integer tensor"):
        tiny_model.encode_text(torch.zeros(1, 4))


def test_image_size_must_be_multiple_of_32(tiny_model: SSegModel) -> None:
    with pytest.raises(DataError, match="multiples of 32"):
        tiny_model.encode_image(torch.randn(1, 3, 48, 64))


def test_mask_pooled_features_hand_case() -> None:
    pixel = torch.tensor([[[[1.0, 3.0]], [[10.0, 20.0]]]])  # [1, C=2, 1, 2]
    logits = torch.tensor([[[[0.0, 0.0]], [[100.0, -100.0]]]])  # mask 0: uniform; mask 1: left pixel
    pooled = mask_pooled_features(pixel, logits)
    torch.testing.assert_close(pooled, torch.tensor([[[2.0, 15.0], [1.0, 10.0]]]), rtol=1e-4, atol=1e-4)


def test_assignment_pooling_hand_case() -> None:
    # Two pixels; mask 0 is uniform (logit 0 → sigmoid .5), mask 1 claims the left pixel strongly.
    pixel = torch.tensor([[[[1.0, 3.0]], [[10.0, 20.0]]]])
    logits = torch.tensor([[[[0.0, 0.0]], [[100.0, -100.0]]]])
    pooled = mask_pooled_features(pixel, logits, pooling="assignment")
    # weights = sigmoid × softmax over masks: mask 0 → left .5·e^0/(e^0+e^100) ≈ 0, right .5·1 = .5
    # so mask 0 pools the right pixel only; mask 1 → left 1·1, right 0 → the left pixel.
    torch.testing.assert_close(pooled, torch.tensor([[[3.0, 20.0], [1.0, 10.0]]]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("source", ["query", "pooled"])
def test_mask_feature_source_gradients(source: str) -> None:
    torch.manual_seed(0)
    model = SSegModel(tiny_model_config(mask_feature_source=source, dec_layers=2))
    out = model.encode_image(torch.randn(2, 3, 64, 64))
    out["mask_features"].sum().backward()
    mask_embed_grad = model.maskformer.mask_embed.layers[0].weight.grad
    decoder_grad = model.maskformer.decoder.layers[-1].ffn.linear2.weight.grad
    if source == "pooled":
        # pooling weights are detached: the feature path trains the semantic map, not masks/queries
        assert mask_embed_grad is None and decoder_grad is None
        assert model.semantic_proj.weight.grad.abs().sum() > 0
    else:
        assert mask_embed_grad is None and decoder_grad.abs().sum() > 0
        assert not hasattr(model, "semantic_proj")


def test_logit_scale_clamp() -> None:
    model = SSegModel(tiny_model_config(text_layers=1, dec_layers=1))
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    assert model.current_logit_scale().item() == pytest.approx(100.0, rel=1e-5)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))


def test_query_collapse_known_answers() -> None:
    same = torch.ones(2, 4, 3)
    assert query_collapse(same) == pytest.approx(1.0)
    orthogonal = torch.eye(4).unsqueeze(0) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1)
    assert query_collapse(orthogonal) == pytest.approx(0.0, abs=1e-7)
    torch.manual_seed(0)
    feats = torch.randn(3, 5, 6)
    per_image = []
    for image in feats:
        pairs = [torch.cosine_similarity(image[i], image[j], dim=0).item()
                 for i in range(5) for j in range(5) if i != j]
        per_image.append(sum(pairs) / len(pairs))
    assert query_collapse(feats) == pytest.approx(sum(per_image) / 3, rel=1e-5)
    with pytest.raises(DataError):
        query_collapse(torch.randn(2, 1, 4))


# ---------------------------------------------------------------- backbones and checkpoints


def test_tiny_convnet_strides_and_widths() -> None:
    net = TinyConvNet((8, 16, 24, 32))
    feats = net(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == [8, 16, 24, 32] == net.out_channels
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in feats] == [(4, 4), (8, 8), (16, 16), (32, 32)]


def test_timm_backbone_gives_nchw_at_four_strides() -> None:
    net = TimmBackbone("resnet18", image_size=64)
    feats = net(torch.randn(1, 3, 64, 64))
    assert net.out_channels == [64, 128, 256, 512]
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_swin_backbone_built_at_224_segments_448_windows() -> None:
    # The paper model trains at 224 and evaluates GroupViT's 448-px windows: the Swin must take both.
    net = TimmBackbone("swin_tiny_patch4_window7_224", image_size=224).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 448, 448))
    assert [tuple(f.shape[2:]) for f in feats] == [(112, 112), (56, 56), (28, 28), (14, 14)]


def test_backbone_of_fixed_input_size_is_refused(monkeypatch) -> None:
    import timm

    real = timm.create_model

    def no_dynamic_size(name, **kwargs):  # what timm 1.0.29 does for Swin
        if "dynamic_img_size" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'dynamic_img_size'")
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_dynamic_size)
    with pytest.raises(ConfigError, match="accepts only 224-px inputs"):
        TimmBackbone("swin_tiny_patch4_window7_224", image_size=224)
    assert TimmBackbone("resnet18", image_size=64).out_channels == [64, 128, 256, 512]  # CNNs: no size at all


def test_backbone_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone(tiny_model_config(backbone="no_such_net"))
    with pytest.raises(ConfigError, match="strides 4, 8, 16, 32"):
        build_backbone(tiny_model_config(backbone="vit_tiny_patch16_224"))


def test_tiny_backbone_checkpoint_round_trip_and_errors(tmp_path) -> None:
    cfg = tiny_model_config()
    source = build_backbone(cfg)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = build_backbone(cfg.model_copy(update={"backbone_checkpoint": str(path)}))
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)

    other = tmp_path / "other.pt"
    torch.save(TinyConvNet((8, 16, 24, 32)).state_dict(), other)
    with pytest.raises(CheckpointError, match="does not match"):
        build_backbone(cfg.model_copy(update={"backbone_checkpoint": str(other)}))
    with pytest.raises(CheckpointError, match="not found"):
        build_backbone(cfg.model_copy(update={"backbone_checkpoint": str(tmp_path / "missing.pt")}))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        build_backbone(cfg.model_copy(update={"backbone_checkpoint": str(junk)}))


def test_timm_backbone_checkpoint_is_loaded_strictly(tmp_path) -> None:
    import timm

    full = timm.create_model("resnet18", pretrained=False)  # with its classifier, as published
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    net = TimmBackbone("resnet18", image_size=64, checkpoint=str(path))
    torch.testing.assert_close(net.model.state_dict()["layer4.1.conv2.weight"], full.state_dict()["layer4.1.conv2.weight"])
    wrong = tmp_path / "wrong.pth"
    torch.save(TinyConvNet().state_dict(), wrong)
    with pytest.raises(CheckpointError, match="does not match"):
        TimmBackbone("resnet18", image_size=64, checkpoint=str(wrong))


# ---------------------------------------------------------------- config, variants, paper size


def test_config_validation_gives_one_line_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="divisible by nheads"):
        load_config(ModelConfig, overrides=["hidden_dim=100", "nheads=8"])
    with pytest.raises(ConfigError, match="vocab_size"):
        load_config(ModelConfig, overrides=["vocab_size=1000"])
    with pytest.raises(ConfigError, match="mask_feature_source"):
        load_config(ModelConfig, overrides=["mask_feature_source=avg"])
    assert load_config(ModelConfig).num_queries == 64


def test_pixel_decoder_transformer_encoder_variant() -> None:
    model = SSegModel(tiny_model_config(pixel_decoder_encoder_layers=2, dec_layers=1))
    out = model.encode_image(torch.randn(1, 3, 64, 64))
    assert out["pred_masks"].shape == (1, 16, 16, 16)
    assert len(model.maskformer.pixel_decoder.encoder) == 2
    assert model.maskformer.input_proj.in_channels == model.cfg.mask_dim


def test_paper_size_model_builds_and_runs() -> None:
    cfg = ModelConfig()
    assert (cfg.backbone, cfg.num_queries, cfg.dec_layers, cfg.hidden_dim, cfg.text_layers,
            cfg.text_width, cfg.embed_dim) == ("swin_small_patch4_window7_224", 64, 6, 256, 12, 256, 256)
    model = SSegModel(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224), tokenize(["a photo of a dog"], 77))
    assert out["pred_masks"].shape == (1, 64, 56, 56)
    assert out["mask_features"].shape == (1, 64, 256) and out["text_features"].shape == (1, 256)
    assert len(out["aux_outputs"]) == 5


@pytest.mark.parametrize("source", ["query", "pooled"])
def test_a_few_steps_reduce_the_loss(source: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_model_config(mask_feature_source=source, dec_layers=2, text_layers=2, num_queries=8)
    model = SSegModel(cfg)
    g = torch.Generator().manual_seed(1)
    coarse = torch.randint(0, 4, (8, 4, 4), generator=g)
    segments = coarse.repeat_interleave(16, 1).repeat_interleave(16, 2)
    palette = torch.randn(4, 3, generator=g)
    images = palette[segments].permute(0, 3, 1, 2) + 0.1 * torch.randn(8, 3, 64, 64, generator=g)
    tokens = tokenize([f"caption number {i}" for i in range(8)], cfg.context_length)
    targets = pseudo_masks_to_targets(segments, 4)
    criterion = SSegCriterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    history = []
    for step in range(12):
        losses = criterion(model(images, tokens), targets)
        optimizer.zero_grad()
        losses["loss"].backward()
        if step == 0:  # DDP without find_unused_parameters needs every parameter in the graph
            unused = [n for n, p in model.named_parameters() if p.grad is None]
            assert not unused, unused
        optimizer.step()
        model.clamp_logit_scale_()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert all(math.isfinite(h["loss"]) for h in history)
    assert last["loss"] < 0.8 * first["loss"]
    assert last["loss_contrastive"] < first["loss_contrastive"]
    assert last["loss_mask"] < first["loss_mask"]


def test_model_config_check_fills_defaults_and_names_the_differing_field() -> None:
    from sseg.checkpoints import check_model_config

    current = tiny_model_config().model_dump(mode="json")
    older = {k: v for k, v in current.items() if k != "mask_feature_source"}  # written before the field
    check_model_config({"model_config": older}, dict(current, mask_feature_source="query"), "old")
    changed = dict(current, num_queries=5)
    with pytest.raises(CheckpointError, match=r"model.num_queries=5, this config has 16"):
        check_model_config({"model_config": changed}, current, "other")
    with pytest.raises(CheckpointError, match="model.mask_feature_source"):
        check_model_config({"model_config": older}, dict(current, mask_feature_source="pooled"), "old")


def test_retired_research_fields_in_old_checkpoints() -> None:
    """Checkpoints written with the retired research fields load when those held today's behaviour."""
    from sseg.checkpoints import check_model_config, upgrade_model_config

    current = tiny_model_config().model_dump(mode="json")
    legacy = dict(current, mask_pooling="assignment", semantic_head_layers=0)
    assert upgrade_model_config("sseg", legacy) == current
    check_model_config({"model_config": legacy}, current, "old")
    with pytest.raises(CheckpointError, match="research variant model.mask_pooling='sigmoid'"):
        upgrade_model_config("sseg", dict(current, mask_pooling="sigmoid"))


def test_words_mean_feature_hand_case() -> None:
    from sseg.models.sseg_model import words_mean_feature

    words = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # normalised: e1, e2, (e1+e2)/√2
    membership = torch.tensor([[True, True, False], [False, False, True], [False, False, False]])
    out = words_mean_feature(words, membership)
    r = 1 / math.sqrt(2)
    assert torch.allclose(out, torch.tensor([[0.5, 0.5], [r, r], [0.0, 0.0]]))


def test_word_mean_caption_feature_is_the_mean_of_single_word_features(tiny_model: SSegModel) -> None:
    """caption_words: the caption feature is built from the word prompts alone (tokens unread), equal to
    encoding every prompt by itself and averaging the normalised features."""
    import torch.nn.functional as F

    prompts = ["a photo of a ball.", "a photo of a sky.", "a photo of a car."]
    word_tokens = tokenize(prompts, tiny_model.cfg.context_length)
    membership = torch.tensor([[True, True, False], [False, True, True]])
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = tiny_model(images, None, word_tokens, caption_words=membership)
        single = F.normalize(tiny_model.encode_text(word_tokens), dim=-1)
    assert torch.allclose(out["text_features"][0], (single[0] + single[1]) / 2, atol=1e-5)
    assert torch.allclose(out["text_features"][1], (single[1] + single[2]) / 2, atol=1e-5)
    assert out["word_features"].shape == (3, tiny_model.cfg.embed_dim)
    with pytest.raises(DataError, match=r"\[B, W\]"):
        tiny_model(images, None, word_tokens, caption_words=membership[:, :2])


def test_word_mean_training_step_trains_every_parameter() -> None:
    """One TrainStep with caption_feature=word_mean: finite loss, gradients reach image and text towers."""
    from sseg.training import TrainStep, build_optimizer, cosine_with_warmup, prepare_batch

    torch.manual_seed(0)
    model = SSegModel(tiny_model_config(mask_feature_source="pooled", dec_layers=2, text_layers=1))
    optimizer = build_optimizer(model, 1e-3, 0.05, (0.9, 0.999))
    step = TrainStep(model, SSegCriterion(), optimizer, cosine_with_warmup(optimizer, 10, 1), 4, 1.0,
                     caption_feature="word_mean")
    images = torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8).numpy()
    segments = torch.randint(0, 4, (4, 64, 64)).numpy()
    batch = prepare_batch(images, segments, ["ball grass", "car sky", "sky", "fish water"],
                          model.cfg.context_length, torch.device("cpu"), ["a photo of a {}."])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = step(batch)
    assert math.isfinite(metrics["loss"]) and metrics["loss_contrastive"] > 0
    changed = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {"maskformer", "text_encoder", "semantic_proj", "image_projection"} <= changed
    with pytest.raises(ValueError, match="word prompts"):
        step(prepare_batch(images, segments, ["a", "b", "c", "d"], model.cfg.context_length,
                           torch.device("cpu")))


def test_named_model_configs_build_and_match_their_sources() -> None:
    """sseg_tiny is the demo's model config, sseg_swin_s the paper's defaults; both build via the registry."""
    from schemas.configs import PretrainConfig
    from sseg.models.registry import create_model, load_model_config, named_model_configs

    assert {"sseg_tiny", "sseg_swin_s"} <= set(named_model_configs())
    name, tiny = load_model_config("sseg_tiny")
    assert name == "sseg" and tiny == PretrainConfig().model.model_dump(mode="json")
    assert tiny == tiny_model_config(mask_feature_source="pooled").model_dump(mode="json")
    assert load_model_config("sseg_swin_s")[1] == ModelConfig().model_dump(mode="json")
    assert isinstance(create_model(name, tiny), SSegModel)
    with pytest.raises(ConfigError, match="unknown model config 'nope'"):
        load_model_config("nope")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        create_model("nope", {})
