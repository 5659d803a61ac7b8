"""TagCLIP model: output channels per variant, the VL interface's global embedding, visual prompts,
segment_scores with seen names from the config."""

import pytest
import torch

from sseg.errors import ConfigError
from sseg.inference import TextClassifier
from sseg.tagclip.config import TagCLIPModelConfig
from sseg.tagclip.model import TagCLIPModel

TINY_SSEG = {
    "backbone": "tiny_convnet", "tiny_convnet_widths": [8, 16, 16, 16], "image_size": 64, "hidden_dim": 16,
    "num_queries": 4, "dec_layers": 1, "nheads": 2, "dim_feedforward": 32, "mask_dim": 16, "text_layers": 1,
    "text_width": 16, "text_heads": 2, "context_length": 16, "embed_dim": 16, "mask_feature_source": "pooled",
}
TINY_CLIP = {  # an open_clip CLIP ViT of the paper's shape, shrunk (patch 16, 3 blocks)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
VARIANTS = {  # (trusty_token, trusty_learner) -> variant name
    (False, False): "baseline", (True, False): "token_no_learner",
    (False, True): "query_self_attention", (True, True): "tagclip",
}


def sseg_tagclip(token=True, learner=True, seen=("a", "b"), heads=2, **kw) -> TagCLIPModel:
    torch.manual_seed(0)
    return TagCLIPModel(TagCLIPModelConfig(sseg=TINY_SSEG, seen_classes=seen, heads=heads, trusty_token=token,
                                           trusty_learner=learner, **kw))


@pytest.mark.parametrize("token,learner", list(VARIANTS))
def test_output_channels_with_and_without_the_token(token, learner):
    model = sseg_tagclip(token, learner).eval()
    assert model.cfg.variant == VARIANTS[(token, learner)]
    out = model(torch.randn(2, 3, 64, 64), torch.randn(5, 16))
    assert out["class_logits"].shape == (2, 5, 16, 16)  # one map per text embedding, stride 4
    if token:
        assert out["trusty_logits"].shape == (2, 1, 16, 16)
        assert model.decoder.trusty_token.shape == (1, 16)
    else:
        assert out["trusty_logits"] is None and model.decoder.trusty_token is None
    assert (model.decoder.learner is not None) == learner


def test_variants_share_the_initialisation_of_the_shared_modules():
    """Under one seed every variant starts from the same VLM, query projection and layers (weights and
    biases), so a paired ablation row differs from the baseline by its change only."""
    states = {v: sseg_tagclip(token, learner).state_dict() for (token, learner), v in VARIANTS.items()}
    base = states["baseline"]
    assert any(k.startswith("decoder.layers.") for k in base)
    for variant, state in states.items():
        for key, value in base.items():
            assert torch.equal(state[key], value), (variant, key)
    assert not torch.equal(states["token_no_learner"]["decoder.trusty_token"],
                           states["tagclip"]["decoder.layers.0.cross.q.weight"][:1])


def test_text_identity_query_init_passes_the_text_through_and_keeps_the_pairing():
    """``query_init=text_identity``: at the start a query is its normalised text embedding, whatever the image
    (and the token itself); everything but the query projection starts as under ``xavier`` with the same seed."""
    plain, identity = sseg_tagclip(query_init="xavier"), sseg_tagclip(query_init="text_identity")
    text, image = torch.randn(3, 16), torch.randn(2, 16)
    no_learner = sseg_tagclip(learner=False, query_init="text_identity").decoder
    queries = no_learner.queries(text, image)
    expected = torch.cat([torch.nn.functional.normalize(text, dim=-1), no_learner.trusty_token])
    assert torch.allclose(queries, expected.expand(2, -1, -1), atol=1e-6)
    a, b = plain.state_dict(), identity.state_dict()
    assert not torch.equal(a["decoder.query_proj.weight"], b["decoder.query_proj.weight"])
    for key in a:
        if not key.startswith("decoder.query_proj."):
            assert torch.equal(a[key], b[key]), key
    with pytest.raises(Exception, match="query_init"):
        TagCLIPModelConfig(sseg=TINY_SSEG, seen_classes=("a",), query_init="orthogonal")


def test_trusty_token_joins_the_queries_only_through_the_learner():
    """Without the learner, class maps do not depend on the token; with it they do."""
    x, text = torch.randn(1, 3, 64, 64), torch.randn(3, 16)
    for learner, depends in ((False, False), (True, True)):
        model = sseg_tagclip(True, learner).eval()
        before = model(x, text)["class_logits"]
        with torch.no_grad():
            model.decoder.trusty_token.add_(1.0)
        after = model(x, text)["class_logits"]
        assert (not torch.allclose(before, after)) == depends


def test_vlm_is_frozen_and_decoder_trains():
    model = sseg_tagclip()
    assert not any(p.requires_grad for p in model.vlm.parameters())
    groups = model.trainable_parameters()
    assert set(groups) == {"head"} and all(p.requires_grad for p in groups["head"])
    model.train()
    assert not model.vlm.training and model.decoder.training


def test_sseg_global_embedding_is_the_contrastive_image_feature():
    model = sseg_tagclip().eval()
    x = torch.randn(2, 3, 64, 64)
    patches, image = model.vlm.embed_image(x)
    with torch.no_grad():
        expected = model.vlm.model(x, torch.zeros(2, 16, dtype=torch.long))["image_features"]
        dense, _ = model.vlm.dense(x)
    assert torch.allclose(image, expected, atol=1e-6)
    assert torch.allclose(patches, dense, atol=1e-6)


def test_clip_global_embedding_is_the_cls_token_through_ln_post_and_projection():
    torch.manual_seed(0)
    model = TagCLIPModel(TagCLIPModelConfig(vlm="clip", clip_model_cfg=TINY_CLIP, seen_classes=("a",))).eval()
    x = torch.randn(2, 3, 64, 64)
    patches, image = model.vlm.embed_image(x)
    with torch.no_grad():
        expected = model.vlm.clip.encode_image(x)
    assert patches.shape == (2, 32, 4, 4)
    assert torch.allclose(image, expected, atol=1e-5)


def test_deep_visual_prompts_change_the_embeddings_and_get_gradients():
    torch.manual_seed(0)
    cfg = TagCLIPModelConfig(vlm="clip", clip_model_cfg=TINY_CLIP, seen_classes=("a",), prompt_tokens=3)
    model = TagCLIPModel(cfg).eval()
    assert model.prompts.embeddings.shape == (3, 3, 64)  # a prompt set before each of the 3 blocks
    x = torch.randn(1, 3, 64, 64)
    prompted_patches, prompted = model.embed_image(x)
    plain_patches, plain = model.vlm.embed_image(x)
    assert prompted_patches.shape == plain_patches.shape
    assert not torch.allclose(prompted, plain)
    model.train()
    out = model(x, torch.randn(2, 32))
    out["class_logits"].sum().backward()
    assert model.prompts.embeddings.grad is not None and model.prompts.embeddings.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vlm.parameters())
    # prompts on the first block only: later blocks run without them
    partial = TagCLIPModel(cfg.model_copy(update={"prompt_layers": 1})).eval()
    assert partial.embed_image(x)[0].shape == (1, 32, 4, 4)


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ValueError, match="seen_classes is empty"):
        TagCLIPModelConfig(sseg=TINY_SSEG, seen_classes=())
    with pytest.raises(ValueError, match="needs vlm=clip"):
        TagCLIPModelConfig(sseg=TINY_SSEG, seen_classes=("a",), prompt_tokens=2)
    with pytest.raises(ConfigError, match="not divisible by 3 decoder heads"):
        sseg_tagclip(heads=3)
    model = sseg_tagclip().eval()
    with pytest.raises(ConfigError, match="text embedding size 8 does not fit the decoder width 16"):
        model(torch.randn(1, 3, 64, 64), torch.randn(2, 8))


def classifier(names, dim=16, concepts=None) -> TextClassifier:
    concepts = concepts or [[n] for n in names]
    flat = [c for cs in concepts for c in cs]
    owner = [i for i, cs in enumerate(concepts) for _ in cs]
    return TextClassifier(class_names=list(names), concepts=flat,
                          embeddings=torch.nn.functional.normalize(torch.randn(len(flat), dim), dim=-1),
                          concept_to_class=torch.tensor(owner), templates=("{}",))


def test_segment_scores_treat_names_outside_the_checkpoint_as_unseen():
    model = sseg_tagclip(seen=("Ball", "box")).eval()
    torch.manual_seed(1)
    clf = classifier(["ball", "car", "box"])
    x = torch.randn(2, 3, 64, 64)
    scores = model.segment_scores(x, clf)
    assert scores.shape == (2, 3, 64, 64) and scores.min() >= 0
    out = model(x, clf.embeddings)
    p = torch.nn.functional.interpolate(out["class_logits"], size=(64, 64), mode="bilinear").sigmoid()
    w = torch.nn.functional.interpolate(out["trusty_logits"], size=(64, 64), mode="bilinear").sigmoid()
    expected = torch.stack([(p[:, 0] - 0.1) * (1 - w[:, 0]), p[:, 1] * w[:, 0], (p[:, 2] - 0.1) * (1 - w[:, 0])], 1)
    assert torch.allclose(scores, expected + 0.1, atol=1e-5)


def test_segment_scores_take_the_max_over_a_class_concepts():
    model = sseg_tagclip(learner=False, seen=("ball",)).eval()  # queries independent of each other
    torch.manual_seed(2)
    clf = classifier(["ball", "car"], concepts=[["ball", "sphere"], ["car", "auto"]])
    x = torch.randn(1, 3, 64, 64)
    scores = model.segment_scores(x, clf)
    single = [classifier(["ball", "car"]) for _ in range(2)]
    for k, c in enumerate(single):  # one concept per class at a time
        c.embeddings = clf.embeddings[[k, 2 + k]]
    expected = torch.maximum(model.segment_scores(x, single[0]), model.segment_scores(x, single[1]))
    assert torch.allclose(scores, expected, atol=1e-5)


def test_zero_shot_ensemble_at_weight_one_names_unseen_classes_like_the_vlm():
    """``zero_shot_ensemble=1``: an unseen class's score is the VLM's dense zero-shot probability (softmax over
    the queried names of cos(patch, text) × its logit scale) times the trusty weight; seen ones keep the decoder."""
    plain = sseg_tagclip(seen=("ball",)).eval()
    mixed = sseg_tagclip(seen=("ball",), zero_shot_ensemble=1.0).eval()
    clf = classifier(["ball", "car", "box"])
    x = torch.randn(1, 3, 64, 64)
    patches, _ = plain.embed_image(x)
    cos = torch.einsum("bdhw,kd->bkhw", torch.nn.functional.normalize(patches, dim=1),
                       torch.nn.functional.normalize(clf.embeddings, dim=-1))
    q = torch.nn.functional.interpolate((cos * plain.vlm.logit_scale()).softmax(1), size=(64, 64), mode="bilinear")
    w = plain.trusty_map(x, clf.embeddings)[:, 0]
    a, b = plain.segment_scores(x, clf), mixed.segment_scores(x, clf)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6)  # the seen class: the decoder alone in both
    assert torch.allclose(b[:, 1:] - 0.1, q[:, 1:] * w[:, None], atol=1e-5)
    assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-3)
