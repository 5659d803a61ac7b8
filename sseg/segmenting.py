"""The contract of a model that segments with class names (``jobs/segment.py``, ``jobs/evaluate.py``,
pseudo-labelling): :class:`SegmentingModel`. :class:`sseg.inference.Segmenter` relies on nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from sseg.inference import TextClassifier


@runtime_checkable
class SegmentingModel(Protocol):
    """Per-pixel class scores for any list of classes.

    ``segment_scores(images, classifier)``
        ``images``: float ``[B, 3, H, W]``, normalised with the ImageNet mean and std (zero-padded to a
        multiple of ``SegmentConfig.size_divisor``); ``classifier``: a :class:`sseg.inference.TextClassifier`
        (``embeddings`` ``[K, D]``, unit rows, one per concept; ``concept_to_class`` long ``[K]``;
        ``num_classes`` = C). Returns float ``[B, C, H, W]`` at the input size: non-negative scores whose
        per-pixel argmax is the prediction. They need not sum to 1: the segmenter normalises them over C
        where it needs probabilities (the background threshold) and crops the padding off. A class with
        several concepts scores the maximum over them. Called under ``torch.no_grad`` in eval mode.

    ``closed_vocabulary``
        False: the model reads text. It has ``context_length`` (tokens per prompt) and
        ``encode_text(tokens long [N, L]) -> [N, D]`` (any scale; the classifier normalises), and its
        classifier's embeddings are the encoded prompts (:func:`sseg.inference.build_text_classifier`).
        True: it segments only the classes it was trained on, ``class_names``; its classifier's rows are
        one-hot over them (:func:`sseg.inference.closed_vocabulary_classifier`), no text is encoded and
        ``context_length`` is not read.

    Implemented by ``SSegModel`` (mask classification: MaskFormer masks × per-mask class probabilities),
    ``SemiVLModel`` (per-pixel decoder), ``UperNetViT`` (S-Seg+, closed vocabulary). A new model registers
    itself (:func:`sseg.models.registry.register_model`) and implements this.
    """

    closed_vocabulary: bool

    def segment_scores(self, images: Tensor, classifier: "TextClassifier") -> Tensor: ...
