"""Open-vocabulary evaluation as Ray Data batch inference: confusion matrices from many actors, summed."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import ray

from sseg.metrics import ConfusionMatrix

log = logging.getLogger(__name__)


class EvaluateBatch:
    """Actor: loads the checkpoint and the dataset reader once; per batch of indices returns one confusion
    matrix (and the predicted-mask oracle matrix: each predicted mask takes its majority true label)."""

    def __init__(self, checkpoint: str, dataset: dict, segment: dict, class_names: list[str],
                 threads: int = 1, mask_quality: bool = True, keep_predictions: int = 0):
        import sseg  # noqa: F401
        import torch

        from sseg.data.datasets import build_dataset
        from sseg.inference import SegmentConfig, Segmenter, build_text_classifier
        from sseg.models.text import tokenize
        from sseg.prompts import parse_class_definitions
        from sseg.training import model_from_checkpoint

        torch.set_num_threads(threads)
        self.model, _ = model_from_checkpoint(checkpoint)
        self.dataset = build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val"))
        cfg = SegmentConfig.model_validate(segment)
        classes = parse_class_definitions(class_names)
        classifier = build_text_classifier(self.model, classes, cfg.templates, tokenize,
                                           torch.device("cpu"))
        self.segmenter = Segmenter(self.model, classifier, cfg)
        self.num_classes = len(class_names) + (1 if cfg.bg_mode == "threshold" else 0)
        self.bg_offset = 1 if cfg.bg_mode == "threshold" else 0
        self.mask_quality = mask_quality
        self.keep = keep_predictions

    def __call__(self, batch: dict) -> dict:
        from sseg.pseudo_masks.oracle import OracleMIoU

        confusion = ConfusionMatrix(self.num_classes)
        masks = OracleMIoU(len(self.dataset.class_names))
        kept = []
        started = time.perf_counter()
        pixels = 0
        skipped = 0
        for index in batch["index"]:
            try:
                key, image, label = self.dataset[int(index)]
            except Exception as exc:  # noqa: BLE001 - a bad image is skipped and counted
                log.warning("skipping eval sample %s: %s", index, exc)
                skipped += 1
                continue
            prediction = self.segmenter.predict(image)
            labels = prediction.labels
            confusion.update(labels, label)
            pixels += label.size
            if self.mask_quality and prediction.mask_ids is not None:
                masks.update(prediction.mask_ids, label)
            if len(kept) < self.keep:
                kept.append((key, image, labels, label))
        return {
            "confusion": [confusion.matrix.reshape(-1)],
            "mask_confusion": [masks.confusion.matrix.reshape(-1) if hasattr(masks, "confusion")
                               else np.zeros(0, np.int64)],
            "images": [len(batch["index"]) - skipped], "skipped": [skipped],
            "seconds": [time.perf_counter() - started],
        }
