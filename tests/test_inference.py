import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sseg  # noqa: F401
from sseg.errors import ConfigError, DataError, SsegError
from sseg.inference import (SegmentConfig, Segmenter, TextClassifier, build_text_classifier, normalise_scores,
                            resized_shape, sliding_windows, threshold_background)
from sseg.models.mask_classification import classify_masks, mask_semantic_scores, semantic_inference
from sseg.segmenting import SegmentingModel
from sseg.prompts import (CLIP_TEMPLATES, ClassDefinition, dataset_class_definitions, foreground,
                          parse_class_definitions, resolve_templates)
from sseg.viz import figure_to_array, grid, legend, overlay, per_class_iou_bar_chart, voc_palette

WORDS = ["cat", "dog", "sky", "background"]


class FakeSegModel(nn.Module):
    """A mask-classification model (:class:`sseg.segmenting.SegmentingModel`) with known outputs.

    Query q (q = 0, 1, 2) has the mask logit ``20 · (channel_q − 0.5)`` at every pixel (of the
    normalised image) and the mask feature of word q; words are one-hot text embeddings.
    ``ramp`` adds a position-dependent term (x / width within the input), ``stride`` averages
    masks over stride × stride cells like a real model's H/4 output.
    """

    def __init__(self, ramp: bool = False, stride: int = 1) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.eye(len(WORDS), 6) * 3.0)  # unnormalised on purpose
        self.query_features = nn.Parameter(torch.eye(3, 6) * 0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        self.context_length = 4
        self.ramp, self.stride = ramp, stride
        self.calls: list[tuple[int, ...]] = []

    @staticmethod
    def tokenize(texts, context_length):
        return torch.tensor([[WORDS.index(t)] + [0] * (context_length - 1) for t in texts])

    def encode_text(self, tokens):
        return self.table[tokens[:, 0]]

    closed_vocabulary = False

    def segment_scores(self, images, classifier):
        out = self.encode_image(images)
        return mask_semantic_scores(out["pred_masks"], out["mask_features"], classifier, self.logit_scale.exp(),
                                    tuple(images.shape[-2:]))

    def encode_image(self, images):
        self.calls.append(tuple(images.shape))
        logits = 20.0 * (images - 0.5)
        if self.ramp:
            logits = logits + torch.linspace(-2, 2, images.shape[-1]).view(1, 1, 1, -1)
        if self.stride > 1:
            logits = F.avg_pool2d(logits, self.stride)
        features = self.query_features.unsqueeze(0).expand(images.shape[0], -1, -1)
        return {"pred_masks": logits, "mask_features": features}


PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), short_side=None, templates="name")


def classifier_for(names, model=None) -> TextClassifier:
    model = model or FakeSegModel()
    return build_text_classifier(model, names, "name", FakeSegModel.tokenize)


# ------------------------------------------------------------------ prompts


def test_parse_class_definitions_forms(tmp_path):
    assert [d.name for d in parse_class_definitions("cat, dog,grass")] == ["cat", "dog", "grass"]
    person = parse_class_definitions("person;people;man,dog")[0]
    assert person == ClassDefinition("person", ("person", "people", "man"))
    assert parse_class_definitions(["a;b", "c"])[1].concepts == ("c",)
    (tmp_path / "classes.yaml").write_text("chair: [chair, armchair]\ntable: null\nsky: sky;clouds\n")
    from_yaml = parse_class_definitions(str(tmp_path / "classes.yaml"))
    assert from_yaml == [ClassDefinition("chair", ("chair", "armchair")),
                         ClassDefinition("table", ("table",)), ClassDefinition("sky", ("sky", "clouds"))]
    (tmp_path / "classes.json").write_text(json.dumps(["x;y", "z"]))
    assert [d.concepts for d in parse_class_definitions(tmp_path / "classes.json")] == [("x", "y"), ("z",)]


@pytest.mark.parametrize("spec, message", [
    ("", "class list is empty"),
    ([], "class list is empty"),
    (" , ,", "class list is empty"),
    ("cat,dog,Cat", "'Cat' is listed twice"),
    ("cat;kitty,dog;kitty", "concept 'kitty' belongs to both"),
    ("missing.yaml", "class definition file not found"),
])
def test_parse_class_definitions_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_class_definitions(spec)


def test_templates():
    assert resolve_templates("single") == ("a photo of a {}.",)
    assert 7 <= len(resolve_templates("clip")) <= 15 and resolve_templates("clip") == CLIP_TEMPLATES
    assert resolve_templates("a {} here") == ("a {} here",)
    with pytest.raises(ConfigError, match="unknown template set"):
        resolve_templates("imagenet80")
    with pytest.raises(ConfigError, match="exactly once"):
        resolve_templates(["{} and {}"])


def test_dataset_class_definitions():
    voc = dataset_class_definitions("voc", use_concepts=True)
    assert len(voc) == 21 and voc[9].concepts == ("chair", "armchair", "deckchair")
    assert "stool" in voc[0].concepts  # a stool is background in VOC's guidelines
    assert len(foreground(voc)) == 20
    assert dataset_class_definitions("ade20k")[0] == ClassDefinition("wall", ("wall",))
    parse_class_definitions(dataset_class_definitions("cityscapes", use_concepts=True))


# ------------------------------------------------------------------ text classifier


def test_text_classifier_is_renormalised_template_mean():
    vectors = {"a cat.": [2.0, 0.0, 0.0], "the cat.": [0.0, 3.0, 0.0],
               "a kitty.": [0.0, 0.0, 5.0], "the kitty.": [0.0, 0.0, 1.0],
               "a dog.": [1.0, 1.0, 0.0], "the dog.": [-1.0, 1.0, 0.0]}
    texts = list(vectors)
    seen = {}

    class TextOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.tensor([vectors[t] for t in texts]))
            self.context_length = 7
            self.closed_vocabulary = False

        def encode_text(self, tokens):
            seen["training"] = self.training
            return self.table[tokens[:, 0]]

    def tokenizer(batch, context_length):
        seen["context_length"] = context_length
        return torch.tensor([[texts.index(t)] * context_length for t in batch])

    model = TextOnly()
    model.train()
    clf = build_text_classifier(model, "cat;kitty,dog", ["a {}.", "the {}."], tokenizer, batch_size=4)
    assert seen == {"context_length": 7, "training": False} and model.training
    assert clf.class_names == ["cat", "dog"] and clf.concepts == ["cat", "kitty", "dog"]
    assert clf.concept_to_class.tolist() == [0, 0, 1]
    r = 1 / math.sqrt(2)
    expected = [[r, r, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    torch.testing.assert_close(clf.embeddings, torch.tensor(expected))


def test_classify_masks_takes_max_over_concepts():
    clf = TextClassifier(class_names=["a", "b"], concepts=["a1", "a2", "b1"],
                         embeddings=F.normalize(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), dim=-1),
                         concept_to_class=torch.tensor([0, 0, 1]), templates=("{}",))
    features = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 4.0], [1.0, 1.0, 1.0]]])
    probs = classify_masks(features, clf, torch.tensor(3.0))
    assert probs.shape == (1, 3, 2)
    for q in range(3):  # brute force
        cos = F.normalize(features[0, q], dim=0) @ clf.embeddings.T
        concept = torch.softmax(3.0 * cos, dim=0)
        torch.testing.assert_close(probs[0, q], torch.stack([concept[:2].max(), concept[2]]))



def test_segmenting_models_implement_the_contract():
    from sseg.models import SSegModel, tiny_model_config
    from sseg.models.registry import create_model

    assert isinstance(FakeSegModel(), SegmentingModel)
    assert isinstance(SSegModel(tiny_model_config()), SegmentingModel)
    plus = create_model("upernet_vit", {"class_names": ["sky", "ball"], "image_size": 32, "patch_size": 8,
                                        "embed_dim": 16, "depth": 4, "num_heads": 2, "channels": 8})
    assert isinstance(plus, SegmentingModel) and plus.closed_vocabulary
    assert not isinstance(nn.Linear(2, 2), SegmentingModel)


def test_a_model_without_context_length_is_one_line_error():
    model = FakeSegModel()
    del model.context_length
    with pytest.raises(SsegError, match="FakeSegModel has no context_length"):
        build_text_classifier(model, "cat", "name")


def test_sseg_model_scores_use_its_capped_temperature():
    """SSegModel.segment_scores = mask classification at current_logit_scale() (capped at its own
    max_logit_scale, not CLIP's 100), masks upsampled to the input size."""
    from sseg.models import SSegModel, tiny_model_config

    torch.manual_seed(0)
    model = SSegModel(tiny_model_config(max_logit_scale=math.log(200.0))).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(150.0))
    assert model.current_logit_scale().item() == pytest.approx(150.0, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1e4))
    assert model.current_logit_scale().item() == pytest.approx(200.0, rel=1e-5)
    clf = TextClassifier(class_names=["a", "b"], concepts=["a", "b"],
                         embeddings=F.normalize(torch.randn(2, model.cfg.embed_dim), dim=-1),
                         concept_to_class=torch.tensor([0, 1]), templates=("{}",))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        scores = model.segment_scores(images, clf)
        out = model.encode_image(images)
        probs = classify_masks(out["mask_features"], clf, torch.tensor(200.0))
        masks = F.interpolate(out["pred_masks"], size=(64, 64), mode="bilinear", align_corners=False)
    assert scores.shape == (2, 2, 64, 64)
    torch.testing.assert_close(scores, semantic_inference(masks, probs))


def test_semantic_inference_by_hand():
    masks = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)  # sigmoid: 0.5, 0.75
    probs = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]])
    out = semantic_inference(masks, probs)
    torch.testing.assert_close(out.view(-1), torch.tensor([0.2 * 0.5 + 0.6 * 0.75, 0.8 * 0.5 + 0.4 * 0.75]))
    rng = torch.Generator().manual_seed(0)
    masks, probs = torch.randn(2, 5, 3, 4, generator=rng), torch.rand(2, 5, 6, generator=rng)
    loop = torch.zeros(2, 6, 3, 4)
    for b in range(2):
        for q in range(5):
            for c in range(6):
                loop[b, c] += probs[b, q, c] * masks[b, q].sigmoid()
    torch.testing.assert_close(semantic_inference(masks, probs), loop)


# ------------------------------------------------------------------ geometry


def test_sliding_windows_cover_and_match_mmseg_grid():
    boxes = sliding_windows(500, 900, 448, 224)
    # mmseg: h_grids = (500 - 448 + 223) // 224 + 1 = 2, w_grids = (900 - 448 + 223) // 224 + 1 = 4
    assert len(boxes) == 2 * 4
    assert {(y0, y1) for y0, y1, _, _ in boxes} == {(0, 448), (52, 500)}
    assert {(x0, x1) for _, _, x0, x1 in boxes} == {(0, 448), (224, 672), (448, 896), (452, 900)}
    cover = np.zeros((500, 900), dtype=int)
    for y0, y1, x0, x1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    assert sliding_windows(100, 300, 448, 224) == [(0, 100, 0, 300)]


def test_resized_shape_follows_mmseg_keep_ratio():
    assert resized_shape(375, 500, 448, 2048) == (448, 597)
    assert resized_shape(1024, 2048, 448, 2048) == (448, 896)
    assert resized_shape(100, 5000, 448, 2048) == (41, 2048)  # long side caps the scale
    assert resized_shape(7, 9, None, 2048) == (7, 9)


# ------------------------------------------------------------------ segmenter

RED, GREEN, BLUE, GREY, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128), (255, 255, 0)


def swatch_image() -> np.ndarray:
    return np.array([[RED, GREEN, BLUE], [GREY, YELLOW, RED]], dtype=np.uint8)


def test_background_threshold_known_answer():
    model = FakeSegModel()
    segmenter = Segmenter(model, classifier_for("cat,dog,sky", model),
                          SegmentConfig(bg_mode="threshold", bg_thresh=0.95, sliding=False, **PLAIN))
    assert segmenter.class_names == ["background", "cat", "dog", "sky"]
    prediction = segmenter.predict(swatch_image())
    # grey: three equal scores (1/3 each) and yellow: cat = dog = 1/2 -> below 0.95 -> background
    np.testing.assert_array_equal(prediction.labels, [[1, 2, 3], [0, 0, 1]])
    assert prediction.labels.dtype == np.uint8
    scores = prediction.scores
    assert scores.shape == (4, 2, 3)
    torch.testing.assert_close(scores[1:].sum(0), torch.ones(2, 3))
    torch.testing.assert_close(scores[1:, 1, 1], torch.tensor([0.5, 0.5, 0.0]), atol=1e-3, rtol=0)
    assert torch.all(scores[0] == 0.95)
    # a lower threshold keeps the two-way tie as foreground
    low = Segmenter(model, segmenter.classifier, SegmentConfig(bg_thresh=0.4, sliding=False, **PLAIN))
    assert low.predict(swatch_image()).labels[1, 1] in (1, 2) and low.predict(swatch_image()).labels[1, 0] == 0


def test_threshold_background_hand_computed():
    # one row of pixels, scores on any scale: probabilities .96/.04, .90/.10, .50/.50, 0/0
    scores = torch.tensor([[[9.6, 1.8, 2.0, 0.0]], [[0.4, 0.2, 2.0, 0.0]]])
    mask, used = threshold_background(scores, 0.95)
    assert used == 0.95  # the best pixel (.96) is above 0.95: no clamp
    assert mask.tolist() == [[False, True, True, True]]  # .96 >= .95 foreground; .90, .50 below; 0/0
    # Pascal Context's 0.35 over three classes: .40 is foreground, .34 background
    context = torch.tensor([[[0.40, 0.34]], [[0.30, 0.33]], [[0.30, 0.33]]])
    mask, used = threshold_background(context, 0.35)
    assert used == 0.35 and mask.tolist() == [[False, True]]


def test_threshold_background_clamps_to_the_images_best_probability():
    # best probabilities .80 and .60: below 0.95 everywhere, so the threshold drops to .80
    scores = torch.tensor([[[0.8, 0.6]], [[0.2, 0.4]]])
    mask, used = threshold_background(scores, 0.95)
    assert used == pytest.approx(0.8) and mask.tolist() == [[False, True]]
    mask, used = threshold_background(scores, 0.95, clamp=False)  # without: all background
    assert used == 0.95 and mask.tolist() == [[True, True]]
    mask, used = threshold_background(scores, 0.7)  # a threshold below the best is kept as it is
    assert used == 0.7 and mask.tolist() == [[False, True]]
    mask, used = threshold_background(torch.zeros(2, 1, 2), 0.95)  # no evidence at all: background
    assert mask.tolist() == [[True, True]]


def test_segmenter_clamps_the_threshold_per_image():
    model = FakeSegModel()
    classifier = classifier_for("cat,dog,sky", model)
    image = np.array([[GREY, YELLOW]], dtype=np.uint8)  # best probabilities 1/3 and 1/2
    clamped = Segmenter(model, classifier, SegmentConfig(bg_thresh=0.95, sliding=False, **PLAIN))
    prediction = clamped.predict(image)
    # the threshold drops to yellow's 1/2: yellow stays cat or dog, grey (1/3) is background
    assert prediction.bg_thresh == pytest.approx(0.5, abs=1e-3)
    assert prediction.labels[0, 0] == 0 and prediction.labels[0, 1] in (1, 2)
    assert torch.all(prediction.scores[0] == prediction.bg_thresh)
    plain = Segmenter(model, classifier, SegmentConfig(bg_thresh=0.95, bg_clamp=False, sliding=False, **PLAIN))
    unclamped = plain.predict(image)
    assert unclamped.bg_thresh == 0.95 and unclamped.labels.tolist() == [[0, 0]]
    # the swatch image has confident pixels (~1.0): no clamp, 0.95 as configured
    assert clamped.predict(swatch_image()).bg_thresh == 0.95
    none = Segmenter(model, classifier, SegmentConfig(bg_mode="none", sliding=False, **PLAIN))
    assert none.predict(image).bg_thresh is None


def test_background_slot_follows_dataset_position_and_modes():
    model = FakeSegModel()
    names = ["cat", "background", "dog", "sky"]
    threshold = Segmenter.for_classes(model, names, SegmentConfig(sliding=False, **PLAIN),
                                      tokenizer=FakeSegModel.tokenize)
    assert threshold.class_names == names and threshold.background_index == 1
    np.testing.assert_array_equal(threshold.predict(swatch_image()).labels, [[0, 2, 3], [1, 1, 0]])
    none = Segmenter.for_classes(model, names, SegmentConfig(bg_mode="none", sliding=False, **PLAIN),
                                 tokenizer=FakeSegModel.tokenize)
    labels = none.predict(swatch_image()).labels
    assert 1 not in labels and labels[0].tolist() == [0, 2, 3]
    no_bg = Segmenter.for_classes(model, "cat,dog,sky", SegmentConfig(bg_mode="none", sliding=False, **PLAIN),
                                  tokenizer=FakeSegModel.tokenize)
    assert no_bg.class_names == ["cat", "dog", "sky"] and no_bg.background_index is None
    cls = Segmenter.for_classes(model, "background,cat,dog",
                                SegmentConfig(bg_mode="class", sliding=False, **PLAIN),
                                tokenizer=FakeSegModel.tokenize)
    assert cls.class_names == ["background", "cat", "dog"] and cls.background_index == 0
    with pytest.raises(ConfigError, match="needs a class named 'background'"):
        Segmenter(model, classifier_for("cat,dog", model), SegmentConfig(bg_mode="class"))
    with pytest.raises(ConfigError, match="remove the 'background' class"):
        Segmenter(model, classifier_for("background,cat", model), SegmentConfig(bg_mode="threshold"))


def test_sliding_equals_whole_when_window_covers_image():
    model = FakeSegModel(ramp=True)  # output depends on the position inside the input
    clf = classifier_for("cat,dog,sky", model)
    image = np.random.default_rng(0).integers(0, 256, size=(30, 41, 3), dtype=np.uint8)
    whole = Segmenter(model, clf, SegmentConfig(sliding=False, size_divisor=1, **PLAIN)).predict(image)
    slide = Segmenter(model, clf, SegmentConfig(sliding=True, window=64, stride=32, size_divisor=1,
                                                **PLAIN)).predict(image)
    np.testing.assert_array_equal(slide.labels, whole.labels)
    torch.testing.assert_close(slide.scores, whole.scores)


def test_sliding_windows_average_to_the_whole_pass_for_a_pointwise_model():
    model = FakeSegModel()  # pointwise: each pixel's scores depend only on its own colour
    clf = classifier_for("cat,dog,sky", model)
    image = np.random.default_rng(1).integers(0, 256, size=(37, 45, 3), dtype=np.uint8)
    whole = Segmenter(model, clf, SegmentConfig(sliding=False, **PLAIN)).score_map(image, normalise=False)
    model.calls.clear()
    cfg = SegmentConfig(sliding=True, window=16, stride=10, batch_size=3, size_divisor=8, **PLAIN)
    slide = Segmenter(model, clf, cfg).score_map(image, normalise=False)
    windows = len(sliding_windows(37, 45, 16, 10))
    assert windows > 9 and sum(c[0] for c in model.calls) == windows
    assert all(c[-2:] == (16, 16) for c in model.calls) and max(c[0] for c in model.calls) <= 3
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)
    # windows that are not multiples of size_divisor are padded, then cropped back
    padded = Segmenter(model, clf, cfg.model_copy(update={"window": 13, "stride": 6})).score_map(
        image, normalise=False)
    torch.testing.assert_close(padded, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size, sliding, short_side, divisor", [
    ((37, 53), False, None, 1), ((37, 53), True, None, 32), ((23, 61), True, 40, 32), ((5, 3), False, 9, 1),
])
def test_odd_image_sizes(size, sliding, short_side, divisor):
    model = FakeSegModel(stride=4)  # masks at H/4, like the real model
    cfg = SegmentConfig(sliding=sliding, window=32, stride=16, short_side=short_side,
                        size_divisor=divisor, templates="name", mean=(0, 0, 0), std=(1, 1, 1))
    segmenter = Segmenter(model, classifier_for("cat,dog,sky", model), cfg)
    image = np.random.default_rng(2).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == size and prediction.scores.shape == (4, *size)
    assert prediction.labels.max() < 4
    assert segmenter.predict(image, return_scores=False).scores is None


def test_segmenter_restores_training_mode_and_rejects_bad_images():
    model = FakeSegModel()
    model.train()
    segmenter = Segmenter(model, classifier_for("cat,dog", model), SegmentConfig(sliding=False, **PLAIN))
    segmenter.predict(swatch_image())
    assert model.training
    with pytest.raises(DataError, match="uint8"):
        segmenter.predict(swatch_image().astype(np.float32))
    with pytest.raises(DataError, match=r"\[H, W, 3\]"):
        segmenter.predict(np.zeros((4, 4), dtype=np.uint8))


def test_segment_config_validation():
    with pytest.raises(Exception, match="stride"):
        SegmentConfig(window=100, stride=200)
    with pytest.raises(Exception):
        SegmentConfig(bg_mode="auto")
    with pytest.raises(Exception):
        SegmentConfig(bg_thresh=1.5)


def test_normalise_scores():
    scores = torch.tensor([[[1.0]], [[3.0]]])
    torch.testing.assert_close(normalise_scores(scores).view(-1), torch.tensor([0.25, 0.75]))


# ------------------------------------------------------------------ pictures


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[15].tolist() == [192, 128, 128] and palette[255].tolist() == [224, 224, 192]


def test_overlay_blends_between_image_and_colour():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    labels = np.array([[1, 2], [0, 255]])
    out = overlay(image, labels, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[0, 0].tolist() == [114, 50, 50]  # halfway between 100 and (128, 0, 0)
    assert out[0, 1].tolist() == [50, 114, 50]
    assert out[1, 1].tolist() == [100, 100, 100]  # ignored pixels keep the image
    colours = voc_palette()[np.minimum(labels, 255)]
    low, high = np.minimum(image, colours), np.maximum(image, colours)
    assert np.all((out >= low) & (out <= high))
    np.testing.assert_array_equal(overlay(image, labels, alpha=0.0), image)
    with pytest.raises(DataError, match="differ in size"):
        overlay(image, np.zeros((3, 3), dtype=int))


def test_legend_grid_and_chart():
    sheet = legend(["background", "cat", "dog"], present=[0, 2])
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[0] == 40
    assert sheet[2:18, 2:18].reshape(-1, 3).tolist().count([0, 0, 0]) > 100  # black swatch (class 0)
    image = np.zeros((10, 12, 3), dtype=np.uint8)
    small = np.zeros((6, 5, 3), dtype=np.uint8)
    picture = grid([(image, np.ones((10, 12), int), np.zeros((10, 12), int)),
                    (small, np.zeros((6, 5), int), None)], gap=2)
    assert picture.dtype == np.uint8 and picture.shape == (10 * 2 + 2, 12 * 3 + 2 * 2, 3)
    assert picture[0, 12 + 2].tolist() == [64, 0, 0]  # prediction overlay of class 1 on black
    figure = per_class_iou_bar_chart(["a", "b", "c"], [0.5, float("nan"), 1.0])
    rendered = figure_to_array(figure)
    assert rendered.dtype == np.uint8 and rendered.ndim == 3 and rendered.shape[2] == 3
    assert "mIoU 75.0%" in figure.axes[0].get_title()


def test_with_the_real_tiny_model():
    from sseg.models.config import tiny_model_config
    from sseg.models.sseg_model import SSegModel
    from sseg.models.text import tokenize
    torch.manual_seed(0)
    model = SSegModel(tiny_model_config())
    cfg = SegmentConfig(short_side=64, window=64, stride=32, templates="single")
    segmenter = Segmenter.for_classes(model, ["background", "ball", "sky;clouds"], cfg, tokenizer=tokenize)
    assert segmenter.classifier.embeddings.shape == (3, model.cfg.embed_dim)
    image = np.random.default_rng(3).integers(0, 256, size=(50, 97, 3), dtype=np.uint8)
    prediction = segmenter.predict(image)
    assert prediction.labels.shape == (50, 97) and prediction.scores.shape == (3, 50, 97)
    assert set(np.unique(prediction.labels)) <= {0, 1, 2}


def test_class_name_longer_than_the_context_is_a_one_line_error() -> None:
    import torch

    from sseg.errors import ConfigError
    from sseg.inference import build_text_classifier
    from sseg.models import SSegModel, tiny_model_config

    torch.manual_seed(0)
    model = SSegModel(tiny_model_config(context_length=16)).eval()
    build_text_classifier(model, ["car", "house"], "clip7")  # fits
    long_name = " ".join(["automobile"] * 12)
    with pytest.raises(ConfigError, match=r"class name 'automobile .*' cannot be encoded: .* context length 16"):
        build_text_classifier(model, ["car", long_name], "clip7")


def test_flip_and_scale_augmentation_average_the_views():
    """A pointwise model gives the same scores for the mirrored image (mirrored back) and at scale 1;
    with flip on it runs twice; a 0.5 scale runs on the half-size image and is averaged in at the input
    size. A model that is not mirror-symmetric shows that the flipped view is mirrored back."""
    model = FakeSegModel()
    clf = classifier_for("cat,dog,sky", model)
    image = np.random.default_rng(4).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    plain_cfg = SegmentConfig(**{**PLAIN, "sliding": False, "short_side": None, "size_divisor": 1})
    plain = Segmenter(model, clf, plain_cfg).score_map(image, normalise=False)
    model.calls.clear()
    flipped = Segmenter(model, clf, plain_cfg.model_copy(update={"flip": True})).score_map(image, normalise=False)
    assert len(model.calls) == 2
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)
    model.calls.clear()
    two_scales = Segmenter(model, clf, plain_cfg.model_copy(update={"scales": (1.0, 0.5)})).score_map(
        image, normalise=False)
    assert [c[-2:] for c in model.calls] == [(24, 32), (12, 16)]
    assert two_scales.shape == plain.shape and not torch.allclose(two_scales, plain)
    ramp = FakeSegModel(ramp=True)
    direct = Segmenter(ramp, clf, plain_cfg).score_map(image, normalise=False)
    mirrored = Segmenter(ramp, clf, plain_cfg).score_map(np.ascontiguousarray(image[:, ::-1]), normalise=False)
    both = Segmenter(ramp, clf, plain_cfg.model_copy(update={"flip": True})).score_map(image, normalise=False)
    torch.testing.assert_close(both, (direct + mirrored.flip(-1)) / 2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both, direct, atol=1e-3)
    with pytest.raises(ValueError, match="scales"):
        SegmentConfig(scales=())
