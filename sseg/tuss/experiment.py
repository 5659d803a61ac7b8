"""One TUSS setting end to end on cached mask embeddings: supervision → (tuned) classifier → scores.

A setting is a supervision kind (full / semi / weak / open vocabulary, optionally full with label noise) and
a classifier (a bootstrap order: ``("probe",)`` is the linear-probe baseline, the paper's GLCC two rounds of
probe → propagation). Hyperparameters are chosen on a held-out slice of the training images
(``sseg.tuss.tuning``), then the classifier is built on every training mask and scores the evaluation masks.
The training masks' pseudo-labels are scored before and after (their own mIoU and mask F1): GLCC's
denoising, measured directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sseg.errors import DataError
from sseg.tuss.config import GLCCConfig
from sseg.tuss.glcc import run_glcc
from sseg.tuss.noise_model import NoiseModelChoice, choose_noise_model
from sseg.tuss.supervision import Supervision, SupervisionKind, confusion_counts, noisy_full_labels
from sseg.tuss.table import MaskTable, score
from sseg.tuss.tuning import holdout_flags, tune_glcc


@dataclass
class SplitData:
    table: MaskTable
    zero_shot: np.ndarray  # [N, C] zero-shot class scores of every mask


@dataclass
class Setting:
    kind: SupervisionKind
    order: tuple[str, ...] = ("probe", "propagation", "probe", "propagation")
    labeled_images: np.ndarray | None = None  # semi: bool [training images]
    image_labels: np.ndarray | None = None  # weak: bool [training images, C]
    noise_rate: float = 0.0  # full: share of mask labels corrupted
    noise: str = "uniform"  # or "confusion" (along the zero-shot confusion matrix)
    noise_seed: int = 0
    # the corrupted labels as pseudo-labels the bootstrap replaces (Supervision "noisy"); default: kept as
    # the supervision, the paper's rule for full supervision (one round, Y reset to the labels)
    noise_refill: bool = False
    noise_keep: float = 0.0  # with noise_refill: share of the corrupted labels kept at each fill
    noise_filter: bool = False  # with noise_refill: keep only the labels the previous step's argmax agrees with
    noise_transition: bool = False  # with noise_refill: labels = the posterior under an estimated noise model
    noise_rank_keep: float = 0.0  # with noise_refill: keep the top share of each given class by its score


def supervision_factory(setting: Setting, train: SplitData, num_classes: int):
    """``rows (bool [N]) -> Supervision`` over those training masks (all rows: the run's supervision)."""
    table = train.table
    if setting.kind == "full":
        proportions = table.proportions
        if setting.noise_rate > 0:
            confusion = None
            if setting.noise == "confusion":
                known = table.true_labels >= 0
                confusion = confusion_counts(table.true_labels[known], train.zero_shot[known].argmax(1), num_classes)
            noisy, _ = noisy_full_labels(proportions, setting.noise_rate, np.random.default_rng(setting.noise_seed),
                                         confusion)
            kind = "noisy" if setting.noise_refill else "full"
            return lambda rows: Supervision(kind, num_classes, proportions=noisy[rows], keep=setting.noise_keep,
                                            filter=setting.noise_filter, transition=setting.noise_transition,
                                            rank_keep=setting.noise_rank_keep)
        return lambda rows: Supervision("full", num_classes, proportions=proportions[rows])
    if setting.kind == "semi":
        if setting.labeled_images is None:
            raise DataError("semi supervision needs the labelled images")
        labelled = np.asarray(setting.labeled_images, dtype=bool)[table.image_index]
        proportions = np.where(labelled[:, None], table.proportions, 0.0) if table.gt_counts is not None else None
        return lambda rows: Supervision("semi", num_classes, proportions=proportions[rows], labelled=labelled[rows])
    if setting.kind == "weak":
        if setting.image_labels is None:
            raise DataError("weak supervision needs image-level labels")
        return lambda rows: Supervision("weak", num_classes, image_index=table.image_index[rows],
                                        image_labels=setting.image_labels)
    raise DataError(f"{setting.kind} supervision builds no classifier")


def run_setting(setting: Setting, train: SplitData, val: SplitData, glcc: GLCCConfig, num_classes: int, *,
                tune: bool, grid: dict[str, list], holdout_fraction: float = 0.2, seed: int = 0) -> dict:
    """Metrics of the setting on ``val`` (``miou``, ``f1``), the pseudo-labels' quality before and after
    (``pseudo_before.*``, ``pseudo_after.*``), the chosen hyperparameters and the seconds per step."""
    if setting.kind == "open_vocabulary":
        metrics = score(val.table, val.zero_shot.argmax(axis=1), num_classes)
        return {"miou": metrics["miou"], "f1": metrics["f1"], "per_class_iou": metrics["per_class_iou"],
                "predicted": val.zero_shot.argmax(axis=1)}
    make = supervision_factory(setting, train, num_classes)
    cfg = glcc.model_copy(update={"order": tuple(setting.order)})
    out: dict = {}
    start = time.perf_counter()
    everything = np.ones(len(train.table), dtype=bool)
    noise = None
    if cfg.noise_model.kind != "none" and setting.kind == "full" and not setting.noise_refill:
        noise = _noise_model(train, make(everything).initial(train.zero_shot), cfg, holdout_fraction, seed)
        out.update(_noise_metrics(noise))
    out["seconds.noise_model"] = time.perf_counter() - start
    if tune and "propagation" in cfg.order:
        tuned = tune_glcc(train.table, train.zero_shot, make, cfg, grid, num_classes, holdout_fraction, seed,
                          noise=noise.fit_model if noise else None)
        cfg = tuned.best
        out["trials"] = tuned.trials
    out["seconds.search"] = time.perf_counter() - start - out["seconds.noise_model"]
    result = run_glcc(train.table.embeddings, train.table.area, make(everything), train.zero_shot,
                      val.table.embeddings, cfg, noise=noise.model if noise else None)
    predicted = result.test_scores.argmax(axis=1)
    out["seconds.classifier"] = time.perf_counter() - start - out["seconds.search"] - out["seconds.noise_model"]
    metrics = score(val.table, predicted, num_classes)
    out.update(miou=metrics["miou"], f1=metrics["f1"], per_class_iou=metrics["per_class_iou"], predicted=predicted,
               alpha=cfg.propagation.alpha, k=cfg.propagation.k, weight=cfg.propagation.weight,
               **{f"seconds.{k}": v for k, v in result.seconds.items()})
    if train.table.gt_counts is not None:
        for name, labels in (("pseudo_before", result.labels_before), ("pseudo_after", result.labels_after)):
            covered = labels.sum(axis=1) > 0
            quality = score(train.table, labels.argmax(axis=1), num_classes, rows=covered)
            out[f"{name}.miou"], out[f"{name}.f1"] = quality["miou"], quality["f1"]
            out[f"{name}.covered"] = float(covered.mean())
    return out


def _noise_model(train: SplitData, labels: np.ndarray, glcc: GLCCConfig, holdout_fraction: float,
                 seed: int) -> NoiseModelChoice:
    """The noise model chosen on the same held-out images the propagation settings are tuned on."""
    table = train.table
    held = holdout_flags(len(table.image_ids), holdout_fraction, seed)[table.image_index]
    part = lambda rows: (table.embeddings[rows], labels[rows], table.area[rows])  # noqa: E731
    return choose_noise_model(part(~held), part(held), part(np.ones(len(table), dtype=bool)), glcc.probe,
                              glcc.noise_model)


def _noise_metrics(choice: NoiseModelChoice) -> dict[str, float]:
    """The chosen λ (0: no noise model), T's mean diagonal (1: none) and each candidate's held-out NLL."""
    diagonal = float(np.diag(choice.model.transition).mean()) if choice.model else 1.0
    return {"noise_model.lambda": choice.lam or 0.0, "noise_model.transition_diagonal": diagonal,
            **{f"noise_model.heldout_nll.{name}": value for name, value in choice.heldout_nll.items()}}
