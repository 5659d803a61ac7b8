"""Soft pseudo-labels ``Y [N masks, C]`` for every kind of supervision (TUSS Sec. 4.2), and label noise.

* **full**: each mask's ground-truth class proportions (ignored pixels count for no class);
* **semi**: those proportions for masks of labelled images, class scores for the rest, the unlabelled
  rows scaled so that labelled and unlabelled hold the same total mass (1:1);
* **weak**: class scores restricted to the image's labels, each class max-normalised over the image's masks
  (the image's best mask for a class gets 1);
* **open vocabulary**: the zero-shot argmax; nothing is trained;
* **noisy** (the label-noise study): corrupted mask labels taken as pseudo-labels — the bootstrap starts from
  them and, like every pseudo-label, replaces them by what the previous step found (its scores, rows
  normalised). Clean full supervision is never replaced (the paper resets it to the ground truth).

The *scores* start as CLIP's zero-shot softmax (cosine × 100); GLCC's bootstrap fills the same
supervision in again with the probe's or the propagation's scores (:meth:`Supervision.fill`). Full
supervision ignores the scores, so its labels never change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sseg.errors import DataError

SupervisionKind = Literal["full", "semi", "weak", "open_vocabulary", "noisy"]


def zero_shot_scores(embeddings: np.ndarray | torch.Tensor, text_embeddings: np.ndarray | torch.Tensor,
                     concept_to_class: Sequence[int] | None = None, scale: float = 100.0) -> np.ndarray:
    """``softmax(scale · cos(mask, concept))`` over concepts, each class the maximum over its concepts → ``[N, C]``."""
    x = F.normalize(torch.tensor(np.asarray(embeddings), dtype=torch.float32), dim=-1)
    t = F.normalize(torch.tensor(np.asarray(text_embeddings), dtype=torch.float32), dim=-1)
    if x.shape[-1] != t.shape[-1]:
        raise DataError(f"mask embeddings have {x.shape[-1]} dims, the text embeddings {t.shape[-1]}")
    probs = (scale * x @ t.T).softmax(dim=-1)
    if concept_to_class is None:
        return probs.numpy()
    index = torch.as_tensor(list(concept_to_class), dtype=torch.long)
    out = probs.new_zeros(probs.shape[0], int(index.max()) + 1)
    return out.scatter_reduce(1, index.expand_as(probs), probs, reduce="amax", include_self=True).numpy()


def semi_labels(proportions: np.ndarray, scores: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Labelled masks keep their proportions; the others get ``scores`` scaled to the labelled rows' total mass."""
    labelled = np.asarray(labelled, dtype=bool)
    y = np.where(labelled[:, None], proportions, scores).astype(np.float32)
    mass_l, mass_u = float(y[labelled].sum()), float(y[~labelled].sum())
    if mass_l > 0 and mass_u > 0:
        y[~labelled] *= mass_l / mass_u
    return y


def weak_labels(scores: np.ndarray, image_index: np.ndarray, image_labels: np.ndarray) -> np.ndarray:
    """``scores ⊙ labels(image)``, then each class divided by its maximum over the image's masks."""
    image_index = np.asarray(image_index)
    y = (scores * image_labels[image_index]).astype(np.float32)
    n_images, c = image_labels.shape
    peak = np.zeros((n_images, c), dtype=np.float32)
    np.maximum.at(peak, image_index, y)
    denom = peak[image_index]
    return np.divide(y, denom, out=np.zeros_like(y), where=denom > 0)


@dataclass
class Supervision:
    """One kind of supervision over the training masks: what it knows, and how it fills in from scores."""

    kind: SupervisionKind
    num_classes: int
    proportions: np.ndarray | None = None  # [N, C] ground truth (full, semi)
    labelled: np.ndarray | None = None  # bool [N] (semi): the mask's image is labelled
    image_index: np.ndarray | None = None  # [N] (weak)
    image_labels: np.ndarray | None = None  # bool [images, C] (weak)
    # noisy: share of the given labels kept when filling in (soft bootstrapping, Reed et al. 2015);
    # 0 replaces them by the scores entirely
    keep: float = 0.0
    # noisy: keep a given label only where the scores' argmax agrees with it (the rest: no label)
    filter: bool = False
    # noisy: a class-conditional noise model (Dawid and Skene's EM): the transition matrix T[true, given] is
    # estimated from the scores and the given labels, and each mask's label becomes its posterior
    # scores(true) * T[true, given], rows normalised
    transition: bool = False
    # noisy: per given class, keep the labels whose score for that class ranks in its top ``rank_keep`` share
    # (a class-wise small-loss selection: a flooded class keeps its best-scored masks even where the argmax
    # sides with the flooding class); 0 = off
    rank_keep: float = 0.0

    def __post_init__(self) -> None:
        need = {"full": ("proportions",), "noisy": ("proportions",), "semi": ("proportions", "labelled"),
                "weak": ("image_index", "image_labels"), "open_vocabulary": ()}[self.kind]
        for field in need:
            if getattr(self, field) is None:
                raise DataError(f"{self.kind} supervision needs {field}")
        for field in ("proportions", "image_labels"):
            value = getattr(self, field)
            if value is not None and value.shape[-1] != self.num_classes:
                raise DataError(f"{field} has {value.shape[-1]} classes, the class list {self.num_classes}")

    def initial(self, zero_shot: np.ndarray) -> np.ndarray:
        """The soft labels the bootstrap starts from: the supervision filled in by the zero-shot scores (the
        noisy labels themselves for ``noisy``)."""
        return self.proportions.astype(np.float32) if self.kind == "noisy" else self.fill(zero_shot)

    def fill(self, scores: np.ndarray) -> np.ndarray:
        """The soft labels ``Y [N, C]`` with the supervision's gaps filled in by ``scores`` (rows: class scores)."""
        if scores.shape[-1] != self.num_classes:
            raise DataError(f"scores have {scores.shape[-1]} classes, the class list {self.num_classes}")
        if self.kind == "full":
            return self.proportions.astype(np.float32)
        if self.kind == "noisy" and self.rank_keep > 0:
            return (self.proportions * ranked_within_class(scores, self.proportions, self.rank_keep)[:, None]
                    ).astype(np.float32)
        if self.kind == "noisy" and self.transition:
            return noise_posterior(scores, self.proportions)
        if self.kind == "noisy" and self.filter:
            given = self.proportions.sum(axis=1) > 0
            agree = given & (scores.argmax(axis=1) == self.proportions.argmax(axis=1))
            return (self.proportions * agree[:, None]).astype(np.float32)
        if self.kind == "noisy":
            filled = normalise_rows(scores.astype(np.float32))
            return (self.keep * self.proportions + (1.0 - self.keep) * filled).astype(np.float32)
        if self.kind == "semi":
            return semi_labels(self.proportions, scores, self.labelled)
        if self.kind == "weak":
            return weak_labels(scores, self.image_index, self.image_labels)
        raise DataError("open-vocabulary supervision trains nothing: classify by the zero-shot argmax")


def ranked_within_class(scores: np.ndarray, given: np.ndarray, share: float) -> np.ndarray:
    """bool ``[N]``: masks whose normalised score for their given class is among the top ``share`` of the masks
    given that class (ties kept); masks without a label: False."""
    has = given.sum(axis=1) > 0
    labels = given.argmax(axis=1)
    own = normalise_rows(scores)[np.arange(len(given)), labels]
    keep = np.zeros(len(given), dtype=bool)
    for c in np.unique(labels[has]):
        rows = np.flatnonzero(has & (labels == c))
        threshold = np.quantile(own[rows], 1.0 - share)
        keep[rows[own[rows] >= threshold]] = True
    return keep


def noise_transition(scores: np.ndarray, given: np.ndarray) -> np.ndarray:
    """``T [C, C]``: row k = how the masks the scores put in class k are labelled (the M-step of Dawid and
    Skene with the scores as the posterior of the true class); masks without a given label do not count."""
    has = given.sum(axis=1) > 0
    labels = np.zeros_like(given, dtype=np.float64)
    labels[has, given[has].argmax(axis=1)] = 1.0
    s = normalise_rows(scores)[has]
    counts = s.T @ labels[has]  # [true, given]
    total = counts.sum(axis=1, keepdims=True)
    c = given.shape[1]
    return np.where(total > 0, counts / np.maximum(total, 1e-12), np.eye(c))


def noise_posterior(scores: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Each given label replaced by the posterior of the true class, ``scores(k) · T[k, given]`` rows normalised
    (:func:`noise_transition`); masks without a label keep their normalised scores."""
    s = normalise_rows(scores)
    has = given.sum(axis=1) > 0
    t = noise_transition(scores, given)
    out = s.copy()
    likelihood = t[:, given[has].argmax(axis=1)].T  # [n, true]: P(given label | true class)
    out[has] = normalise_rows(s[has] * likelihood)
    return out.astype(np.float32)


def normalise_rows(y: np.ndarray) -> np.ndarray:
    """Rows divided by their sums (all-zero rows stay zero)."""
    total = y.sum(axis=1, keepdims=True)
    return np.divide(y, total, out=np.zeros_like(y), where=total > 0)


# ----------------------------------------------------------------------------- image-level labels


def image_labels_from_names(names: Sequence[Sequence[str]], class_names: Sequence[str]) -> np.ndarray:
    """bool ``[images, C]`` from each image's class names (e.g. the classes its caption mentions);
    a name outside the class list is a DataError naming it."""
    index = {n: i for i, n in enumerate(class_names)}
    out = np.zeros((len(names), len(class_names)), dtype=bool)
    for row, image_names in enumerate(names):
        for name in image_names:
            if name not in index:
                raise DataError(f"image label {name!r} is not one of the classes ({', '.join(class_names)})")
            out[row, index[name]] = True
    return out


def image_labels_from_label_map(label: np.ndarray, num_classes: int, ignore_index: int = 255,
                                min_pixels: int = 1) -> np.ndarray:
    """bool ``[C]``: the classes covering at least ``min_pixels`` pixels of a label map (clean image labels)."""
    values = np.asarray(label).ravel()
    values = values[values != ignore_index].astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise DataError(f"label {int(values.max())} is outside the {num_classes} classes and is not the ignore index")
    return np.bincount(values, minlength=num_classes) >= min_pixels


# ----------------------------------------------------------------------------- label noise


def confusion_counts(true: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows = true class, columns = predicted (e.g. the zero-shot classifier's)."""
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    return np.bincount(true * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def corrupt_labels(labels: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator,
                   confusion: np.ndarray | None = None) -> np.ndarray:
    """Exactly ``round(rate · N)`` labels, chosen at random, changed to another class: uniformly, or (with
    ``confusion``) drawn from the off-diagonal of the true class's row — the mistakes a classifier makes
    (a row without any off-diagonal count falls back to uniform)."""
    if not 0.0 <= rate <= 1.0:
        raise DataError(f"noise rate must be in [0, 1] (got {rate})")
    if num_classes < 2:
        raise DataError("label noise needs at least 2 classes")
    labels = np.asarray(labels, dtype=np.int64)
    out = labels.copy()
    chosen = rng.choice(labels.size, size=int(round(rate * labels.size)), replace=False)
    for i in chosen:
        c = labels[i]
        weights = np.ones(num_classes) if confusion is None else np.asarray(confusion[c], dtype=np.float64).copy()
        weights[c] = 0.0
        if weights.sum() <= 0:
            weights = np.ones(num_classes)
            weights[c] = 0.0
        out[i] = rng.choice(num_classes, p=weights / weights.sum())
    return out


def noisy_full_labels(proportions: np.ndarray, rate: float, rng: np.random.Generator,
                      confusion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Full supervision with label noise: masks with labelled pixels take their majority class, a fraction
    ``rate`` of them is corrupted (:func:`corrupt_labels`) and those become one-hot rows of the wrong class.
    Returns the soft labels and the bool [N] of corrupted masks."""
    y = proportions.astype(np.float32).copy()
    has = y.sum(1) > 0
    rows = np.flatnonzero(has)
    true = y[rows].argmax(1)
    noisy = corrupt_labels(true, rate, y.shape[1], rng, confusion)
    changed = np.zeros(len(y), dtype=bool)
    flip = rows[noisy != true]
    changed[flip] = True
    y[flip] = np.eye(y.shape[1], dtype=np.float32)[noisy[noisy != true]]
    return y, changed
