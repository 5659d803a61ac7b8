"""Open-vocabulary semantic segmentation of any image with any list of class names.

Pipeline for one image::

    class definitions × prompt templates → text embeddings (TextClassifier)
    image → resize (short side 448) → [sliding 448/224 windows, zero-padded to size_divisor]
        → model.segment_scores(windows, classifier) → per-pixel class scores
    → average overlapping windows → resize back → background rule → label map

The model is anything that implements :class:`sseg.segmenting.SegmentingModel` (``segment_scores``,
``closed_vocabulary``; ``context_length`` and ``encode_text`` when it reads text); S-Seg's mask
classification lives in the model (``SSegModel.segment_scores``, :mod:`sseg.models.mask_classification`).

Background (``bg_mode``):

* ``"threshold"`` (GroupViT protocol): per-pixel class scores are normalised to sum to 1; where
  the largest is below the threshold the pixel is background. The threshold is ``bg_thresh``
  clamped to the image's largest foreground probability (``bg_clamp``, GroupViT's
  ``bg_thresh = min(bg_thresh, max probability)``), so an image whose best score is below
  ``bg_thresh`` keeps its most confident pixels instead of turning all background. GroupViT
  applies the rule to each 448 sliding window before averaging them; here it is applied once, to
  the window-averaged scores of the whole image. The background gets its own label slot
  (``background_index``, default 0) that the text classifier does not contain. GroupViT's
  thresholds per dataset (VOC, COCO-Object 0.95, Pascal Context 0.35) are in
  ``sseg.data.datasets.GROUPVIT_BG_THRESHOLDS``; ``jobs/evaluate.py`` uses them by default.
  A closed-vocabulary model (S-Seg+) is not thresholded: it was trained with its own background (or
  with the classes that play it), so the slot gets the summed probability of its trained classes that
  were not asked for and the label is the argmax (:func:`with_model_background`).
* ``"class"``: "background" is an ordinary text class (e.g. with SemiVL's background concepts).
* ``"none"``: background is never predicted; a slot may still be reserved so label ids match a
  dataset with a background class (the "without background" protocol: evaluate with
  ``ConfusionMatrix.compute(exclude=[background_index])``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from sseg.config import StrictModel
from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sseg.errors import ConfigError, DataError, SsegError
from sseg.prompts import ClassDefinition, parse_class_definitions, resolve_templates

Tokenizer = Callable[[Sequence[str], int], Tensor]
BgMode = Literal["threshold", "class", "none"]


class SegmentConfig(StrictModel):
    """Inference settings (defaults: the GroupViT / S-Seg protocol)."""

    templates: str | list[str] = "clip"
    bg_mode: BgMode = "threshold"
    bg_thresh: float = Field(0.95, ge=0.0, le=1.0)
    bg_clamp: bool = True  # threshold <= the image's best foreground probability (GroupViT)
    short_side: int | None = Field(448, gt=0)  # None: keep the input size
    max_long_side: int = Field(2048, gt=0)  # mmseg Resize img_scale=(2048, 448), keep_ratio
    sliding: bool = True
    window: int = Field(448, gt=0)
    stride: int = Field(224, gt=0)
    size_divisor: int = Field(32, gt=0)  # windows are zero-padded (in normalised space) to this
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    batch_size: int = Field(8, gt=0)  # windows per forward pass
    # Test-time augmentation (off by default, as the GroupViT / S-Seg protocol): the scores of every
    # scale (relative to short_side) and, with flip, of the mirrored image, averaged at the input size.
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @model_validator(mode="after")
    def _check(self) -> "SegmentConfig":
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} > window {self.window} leaves pixels uncovered")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of positive factors, got {list(self.scales)}")
        return self


# ----------------------------------------------------------------------------- text side


@dataclass
class TextClassifier:
    """Normalised text embeddings of every concept and the concept → class index."""

    class_names: list[str]
    concepts: list[str]
    embeddings: Tensor  # [K, D], unit rows (mean over templates, renormalised)
    concept_to_class: Tensor  # long [K]
    templates: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> "TextClassifier":
        return replace(self, embeddings=self.embeddings.to(device),
                       concept_to_class=self.concept_to_class.to(device))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode and restore each submodule's training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_context_length(model: nn.Module) -> int:
    """The text context length of an open-vocabulary model (:class:`sseg.segmenting.SegmentingModel`)."""
    try:
        return int(model.context_length)
    except AttributeError:
        raise SsegError(f"{type(model).__name__} has no context_length (needed to tokenize prompts)") from None


def default_tokenizer() -> Tokenizer:
    try:
        from sseg.models.text import tokenize
    except ImportError as exc:
        raise SsegError(f"no tokenizer given and sseg.models.text.tokenize is unavailable: {exc}") from None
    return tokenize


@torch.no_grad()
def encode_texts(model: nn.Module, texts: Sequence[str], tokenizer: Tokenizer,
                 device: torch.device, batch_size: int = 256) -> Tensor:
    """Unit-normalised text features ``[len(texts), D]``."""
    context_length = model_context_length(model)
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start:start + batch_size]), context_length)
        features = model.encode_text(torch.as_tensor(tokens).to(device))
        chunks.append(F.normalize(features.float(), dim=-1))
    return torch.cat(chunks)


def check_prompts_fit(prompts: Sequence[str], class_names: Sequence[str], tokenizer: Tokenizer,
                      context_length: int) -> None:
    """A class name the text tower cannot read whole (its prompt longer than the context) is a one-line
    ConfigError naming the class, not a silently truncated query."""
    long_context = max(256, 4 * context_length)
    tokens = torch.as_tensor(tokenizer(list(prompts), long_context))
    lengths = (tokens != 0).sum(dim=1).tolist()
    for prompt, name, length in zip(prompts, class_names, lengths):
        if length > context_length:
            raise ConfigError(f"class name {name!r} cannot be encoded: its prompt {prompt!r} has {length} tokens, "
                              f"more than the model's context length {context_length}")


def check_class_names_encodable(classes: Any, templates: str | Sequence[str], context_length: int) -> None:
    """Before any work starts: every class name, in every template, fits the text tower's context."""
    definitions = parse_class_definitions(classes)
    template_list = resolve_templates(templates)
    prompts, names = [], []
    for d in definitions:
        for concept in d.concepts:
            for template in template_list:
                prompts.append(template.format(concept))
                names.append(d.name)
    check_prompts_fit(prompts, names, default_tokenizer(), context_length)


def build_text_classifier(model: nn.Module, classes: Any, templates: str | Sequence[str] = "clip",
                          tokenizer: Tokenizer | None = None, device: torch.device | str | None = None,
                          batch_size: int = 256) -> TextClassifier:
    """Encode every (concept, template) prompt; a concept's embedding is the renormalised mean
    of its unit-normalised template embeddings (CLIP's zero-shot prompt ensemble). A closed-vocabulary
    model (``model.closed_vocabulary``, e.g. S-Seg+) gets :func:`closed_vocabulary_classifier` instead."""
    if model.closed_vocabulary:
        return closed_vocabulary_classifier(model, classes, device)
    definitions: list[ClassDefinition] = parse_class_definitions(classes)
    template_list = resolve_templates(templates)
    device = torch.device(device) if device is not None else model_device(model)
    bpe = tokenizer is None  # prompt lengths are checked with the CLIP BPE tokenizer the towers use
    tokenizer = tokenizer or default_tokenizer()
    concepts = [c for d in definitions for c in d.concepts]
    concept_to_class = [i for i, d in enumerate(definitions) for _ in d.concepts]
    prompts = [t.format(c) for c in concepts for t in template_list]
    if bpe:
        check_prompts_fit(prompts, [definitions[i].name for i in concept_to_class for _ in template_list],
                          tokenizer, model_context_length(model))
    with eval_mode(model):
        features = encode_texts(model, prompts, tokenizer, device, batch_size)
    per_concept = features.view(len(concepts), len(template_list), -1).mean(dim=1)
    return TextClassifier(
        class_names=[d.name for d in definitions],
        concepts=concepts,
        embeddings=F.normalize(per_concept, dim=-1),
        concept_to_class=torch.tensor(concept_to_class, dtype=torch.long, device=device),
        templates=template_list,
    )


def closed_vocabulary_classifier(model: nn.Module, classes: Any,
                                 device: torch.device | str | None = None) -> TextClassifier:
    """The requested classes mapped onto the classes a closed-vocabulary model was trained on
    (``model.class_names``; S-Seg+, ``sseg/models/upernet.py``): each concept (or the class's own name)
    that equals a trained class name, case-insensitively, is a one-hot row of ``embeddings`` over the
    trained classes. No text is encoded; templates do not apply. A requested class none of whose
    names the model was trained on is a one-line ConfigError naming it and the trained classes."""
    definitions: list[ClassDefinition] = parse_class_definitions(classes)
    trained = [str(n) for n in model.class_names]
    index = {n.lower(): i for i, n in enumerate(trained)}
    concepts, concept_to_class = [], []
    for class_id, definition in enumerate(definitions):
        names = [c for c in dict.fromkeys([definition.name, *definition.concepts]) if c.lower() in index]
        if not names:
            raise ConfigError(f"class {definition.name!r} is not one this closed-vocabulary model was trained on "
                              f"(it segments only: {', '.join(trained)})")
        for name in dict.fromkeys(trained[index[n.lower()]] for n in names):
            concepts.append(name)
            concept_to_class.append(class_id)
    device = torch.device(device) if device is not None else model_device(model)
    embeddings = torch.zeros(len(concepts), len(trained), device=device)
    for row, name in enumerate(concepts):
        embeddings[row, index[name.lower()]] = 1.0
    return TextClassifier(class_names=[d.name for d in definitions], concepts=concepts, embeddings=embeddings,
                          concept_to_class=torch.tensor(concept_to_class, dtype=torch.long, device=device),
                          templates=())


def with_model_background(classifier: TextClassifier) -> TextClassifier:
    """A closed-vocabulary ``classifier`` (:func:`closed_vocabulary_classifier`) plus a last class
    "background" whose score is the summed probability of every trained class that no requested class
    maps to: the model's own background class (VOC's "background") and whatever else it knows but was not
    asked for. The with-background label space {background, requested classes} then gets probabilities
    that sum to 1, and the model decides background itself instead of GroupViT's threshold."""
    unasked = (classifier.embeddings.sum(dim=0) <= 0).to(classifier.embeddings.dtype)
    index = classifier.concept_to_class.new_tensor([classifier.num_classes])
    return replace(classifier, class_names=[*classifier.class_names, "background"],
                   concepts=[*classifier.concepts, "background"],
                   embeddings=torch.cat([classifier.embeddings, unasked[None]]),
                   concept_to_class=torch.cat([classifier.concept_to_class, index]))


def normalise_scores(scores: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-pixel scores ``[..., C, H, W]`` scaled to sum to 1 over C."""
    return scores / scores.sum(dim=-3, keepdim=True).clamp_min(eps)


def threshold_background(scores: Tensor, bg_thresh: float, clamp: bool = True,
                         eps: float = 1e-12) -> tuple[Tensor, float]:
    """GroupViT's background rule on one image's class scores ``[C, H, W]`` (>= 0, any scale).

    A pixel is background where its largest class probability (scores normalised to sum to 1 over
    C) is below the threshold. With ``clamp`` the threshold is first lowered to the largest such
    probability in the image, ``min(bg_thresh, max over pixels)``: the image's most confident
    pixels are then never background. A pixel whose scores are all 0 is always background.
    Returns the ``[H, W]`` bool mask and the threshold applied.
    """
    total = scores.sum(dim=0)
    probability = scores.max(dim=0).values / total.clamp_min(eps)
    threshold = float(bg_thresh)
    if clamp and probability.numel():
        threshold = min(threshold, float(probability.max()))
    return (probability < threshold) | (total <= 0), threshold


# ----------------------------------------------------------------------------- geometry


def sliding_windows(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` crops covering the image (mmseg's slide_inference grid).

    All windows have the size ``min(window, height) × min(window, width)``; the last row and
    column are shifted back to end at the image border.
    """
    def starts(size: int) -> list[int]:
        crop = min(window, size)
        count = max(size - crop + stride - 1, 0) // stride + 1
        return sorted({min(i * stride, size - crop) for i in range(count)})

    win_h, win_w = min(window, height), min(window, width)
    return [(y, y + win_h, x, x + win_w) for y in starts(height) for x in starts(width)]


def resized_shape(height: int, width: int, short_side: int | None, max_long_side: int) -> tuple[int, int]:
    """mmseg ``Resize(img_scale=(max_long_side, short_side), keep_ratio=True)``."""
    if short_side is None:
        return height, width
    scale = min(short_side / min(height, width), max_long_side / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_maps(maps: Tensor, size: tuple[int, int], antialias: bool = False) -> Tensor:
    """Bilinear resize of ``[B, C, h, w]``; ``antialias`` applies only when shrinking.

    Images are shrunk with antialiasing; score maps are resized plainly like mmseg's
    ``resize(seg_logit)`` (antialiasing 150 ADE20K channels costs ~0.4 s per image on a core).
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    shrinking = size[0] < maps.shape[-2] or size[1] < maps.shape[-1]
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False,
                         antialias=antialias and shrinking)


# ----------------------------------------------------------------------------- segmenter


@dataclass
class Prediction:
    labels: np.ndarray  # [H, W] uint8 (int16 beyond 255 classes), ids into Segmenter.class_names
    scores: Tensor | None  # [C_out, H, W] float32: normalised class probabilities; the
    # background slot holds the threshold applied ("threshold"), 0 ("none") or, for a closed-vocabulary
    # model in "threshold" mode, the model's own background probability (Segmenter._own_background)
    bg_thresh: float | None = None  # "threshold" mode: the threshold applied, <= cfg.bg_thresh (None when
    # a closed-vocabulary model decides background itself)


class Segmenter:
    """Label maps for images of any size from a model and a text classifier."""

    def __init__(self, model: nn.Module, classifier: TextClassifier, cfg: SegmentConfig | None = None,
                 background_index: int | None = None) -> None:
        self.model = model
        self.cfg = cfg or SegmentConfig()
        self.device = model_device(model)
        self.classifier = classifier.to(self.device)
        names = list(classifier.class_names)
        lowered = [n.lower() for n in names]
        mode = self.cfg.bg_mode
        if mode == "class":
            if "background" not in lowered:
                raise ConfigError("bg_mode 'class' needs a class named 'background'")
            position = lowered.index("background")
            if background_index not in (None, position):
                raise ConfigError(f"background_index {background_index} != position {position} "
                                  "of the 'background' class")
            self.background_index: int | None = position
            self._slot: int | None = None
        else:
            if "background" in lowered:
                raise ConfigError(f"bg_mode '{mode}' adds the background itself; remove the "
                                  "'background' class from the text classes")
            slot = background_index if background_index is not None else (0 if mode == "threshold" else None)
            if slot is not None and not 0 <= slot <= len(names):
                raise ConfigError(f"background_index {slot} is outside [0, {len(names)}]")
            self.background_index = slot
            self._slot = slot
            if slot is not None:
                names.insert(slot, "background")
        # a closed-vocabulary model (S-Seg+) decides background itself: its trained classes that were not
        # asked for (its own background class among them) score the background slot, no threshold
        self._own_background = mode == "threshold" and self._slot is not None and model.closed_vocabulary
        self._scoring = with_model_background(self.classifier) if self._own_background else self.classifier
        self.class_names = names
        self.mean = torch.tensor(self.cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.cfg.std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def for_classes(cls, model: nn.Module, classes: Any, cfg: SegmentConfig | None = None,
                    tokenizer: Tokenizer | None = None) -> "Segmenter":
        """Build the classifier for a label space given as ``classes`` (e.g. a dataset's names).

        With bg_mode "threshold" or "none", a class named "background" is taken out of the text
        classes and its position becomes the background slot, so predicted label ids equal the
        dataset's ids.
        """
        cfg = cfg or SegmentConfig()
        definitions = parse_class_definitions(classes)
        lowered = [d.name.lower() for d in definitions]
        background_index = None
        if cfg.bg_mode != "class" and "background" in lowered:
            background_index = lowered.index("background")
            definitions = [d for d in definitions if d.name.lower() != "background"]
        classifier = build_text_classifier(model, definitions, cfg.templates, tokenizer,
                                           model_device(model))
        return cls(model, classifier, cfg, background_index)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- model calls

    def _window_scores(self, windows: Tensor) -> Tensor:
        """Raw semantic scores ``[B, C_text, h, w]`` of normalised windows ``[B, 3, h, w]``."""
        h, w = windows.shape[-2:]
        divisor = self.cfg.size_divisor
        pad_h, pad_w = (-h) % divisor, (-w) % divisor
        padded = F.pad(windows, (0, pad_w, 0, pad_h)) if pad_h or pad_w else windows
        return self.model.segment_scores(padded, self._scoring)[..., :h, :w].float()

    def _scores(self, image: Tensor) -> Tensor:
        """Raw scores ``[C_text, h, w]`` of one normalised image ``[1, 3, h, w]``."""
        height, width = image.shape[-2:]
        if not self.cfg.sliding:
            return self._window_scores(image)[0]
        boxes = sliding_windows(height, width, self.cfg.window, self.cfg.stride)
        total = image.new_zeros(self._scoring.num_classes, height, width)
        count = image.new_zeros(1, height, width)
        for start in range(0, len(boxes), self.cfg.batch_size):
            batch = boxes[start:start + self.cfg.batch_size]
            crops = torch.cat([image[..., y0:y1, x0:x1] for y0, y1, x0, x1 in batch])
            for (y0, y1, x0, x1), scores in zip(batch, self._window_scores(crops)):
                total[:, y0:y1, x0:x1] += scores
                count[:, y0:y1, x0:x1] += 1
        return total / count

    # -- public API

    def preprocess(self, image: np.ndarray, scale: float = 1.0) -> Tensor:
        """uint8 ``[H, W, 3]`` → normalised, resized float ``[1, 3, h, w]`` on the model's device
        (``scale`` multiplies the configured short side, or the input size when it has none)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise DataError(f"image must be a uint8 [H, W, 3] array (got shape {shape})")
        if image.dtype != np.uint8:
            raise DataError(f"image must be uint8 (got {image.dtype})")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise DataError(f"image is empty ({image.shape[1]}x{image.shape[0]})")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        tensor = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        if scale == 1.0:
            size = resized_shape(image.shape[0], image.shape[1], self.cfg.short_side, self.cfg.max_long_side)
        elif self.cfg.short_side is not None:
            size = resized_shape(image.shape[0], image.shape[1], max(1, round(self.cfg.short_side * scale)),
                                 round(self.cfg.max_long_side * scale))
        else:
            size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
        tensor = resize_maps(tensor, size, antialias=True)
        return (tensor - self.mean) / self.std

    @torch.no_grad()
    def score_map(self, image: np.ndarray, normalise: bool = True) -> Tensor:
        """Per-pixel text-class scores ``[C_text, H, W]`` at the input size: probabilities
        (summing to 1 per pixel), or with ``normalise=False`` the window-averaged MaskFormer
        scores Σ_q p_q(c)·σ(m_q)."""
        scores = self._raw_scores(image)[:self.classifier.num_classes]
        return normalise_scores(scores.clamp_min(0)) if normalise else scores

    def _raw_scores(self, image: np.ndarray) -> Tensor:
        """The scoring classifier's raw scores at the input size, averaged over the test-time views: the
        text classes, then (closed vocabulary with background) the model's own background."""
        total, views = None, 0
        with eval_mode(self.model):
            for scale in self.cfg.scales:
                tensor = self.preprocess(image, scale)
                for flipped in ((False, True) if self.cfg.flip else (False,)):
                    scores = self._scores(tensor.flip(-1) if flipped else tensor)
                    scores = resize_maps((scores.flip(-1) if flipped else scores).unsqueeze(0), image.shape[:2])[0]
                    total = scores if total is None else total + scores
                    views += 1
        return total / views if views > 1 else total

    @torch.no_grad()
    def predict(self, image: np.ndarray, return_scores: bool = True) -> Prediction:
        raw = self._raw_scores(image).clamp_min_(0)
        threshold = None
        if self._own_background:  # the model's background probability goes to its slot; plain argmax
            raw = torch.cat([raw[:self._slot], raw[-1:], raw[self._slot:-1]])
        label = raw.max(dim=0).indices
        if self._slot is not None and not self._own_background:
            label = label + (label >= self._slot).to(label.dtype)
            if self.cfg.bg_mode == "threshold":
                is_background, threshold = threshold_background(raw, self.cfg.bg_thresh,
                                                                 self.cfg.bg_clamp)
                label[is_background] = self._slot
        dtype = np.uint8 if self.num_classes <= 255 else np.int16
        labels = label.cpu().numpy().astype(dtype)
        scores = None
        if return_scores:
            probs = normalise_scores(raw)
            scores = probs
            if self._slot is not None and not self._own_background:
                fill = threshold if threshold is not None else 0.0
                background = probs.new_full((1, *probs.shape[1:]), fill)
                scores = torch.cat([probs[:self._slot], background, probs[self._slot:]])
            scores = scores.cpu()
        return Prediction(labels=labels, scores=scores, bg_thresh=threshold)
