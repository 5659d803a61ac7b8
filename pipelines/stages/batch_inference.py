"""Open-vocabulary evaluation as Ray Data batch inference: confusion matrices from many actors, summed.

Each actor loads the checkpoint and the dataset reader once; rows are sample indices. Per batch it returns
the open-vocabulary confusion matrix and the predicted-mask oracle matrix (each predicted mask takes its
majority true label: the quality of the masks regardless of naming), and with background by threshold how
many images had their threshold clamped to their best foreground probability.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import ray
import torch

from sseg.errors import first_line
from sseg.metrics import ConfusionMatrix

log = logging.getLogger(__name__)


def predicted_mask_ids(model, image: np.ndarray, size: int) -> np.ndarray:
    """Hard assignment of each pixel to its most confident predicted mask, at the image's size."""
    import torch.nn.functional as F

    from sseg.data.transforms import resize_image, to_normalized_tensor

    x = to_normalized_tensor(resize_image(image, (size, size))[None])
    with torch.no_grad():
        masks = model.encode_image(x)["pred_masks"][0]
    masks = F.interpolate(masks[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    return masks.argmax(0).numpy().astype(np.int32)


class EvaluateBatch:
    def __init__(self, checkpoint: str, dataset: dict, segment: dict, class_names: list[str],
                 background_index: int | None = None, threads: int = 1, mask_quality: bool = True,
                 keep_predictions: int = 0):
        import sseg  # noqa: F401

        from sseg.data.datasets import build_dataset
        from sseg.inference import SegmentConfig, Segmenter, build_text_classifier
        from sseg.models.text import tokenize
        from sseg.checkpoints import model_from_checkpoint

        torch.set_num_threads(threads)
        self.model, _ = model_from_checkpoint(checkpoint)
        self.dataset = build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val"))
        self.label_map = np.asarray(dataset["label_map"], np.uint8) if dataset.get("label_map") else None
        cfg = SegmentConfig.model_validate(segment)
        classifier = build_text_classifier(self.model, class_names, cfg.templates, tokenize)
        self.segmenter = Segmenter(self.model, classifier, cfg, background_index=background_index)
        self.num_classes = len(self.segmenter.class_names)
        self.num_gt_classes = len(self.dataset.class_names)
        self.mask_quality = mask_quality
        self.keep = keep_predictions
        self.size = self.model.cfg.image_size

    def __call__(self, batch: dict) -> dict:
        from sseg.pseudo_masks.oracle import OracleMIoU

        confusion = ConfusionMatrix(self.num_classes)
        masks = OracleMIoU(self.num_gt_classes)
        kept_keys, kept_images, kept_preds, kept_gts = [], [], [], []
        started = time.perf_counter()
        images, skipped, clamped = 0, 0, 0
        for index in batch["index"]:
            try:
                key, image, label = self.dataset[int(index)]
            except Exception as exc:  # noqa: BLE001 - a bad image is skipped and counted
                log.warning("skipping eval sample %s: %s", index, first_line(exc))
                skipped += 1
                continue
            if self.mask_quality:
                masks.update(predicted_mask_ids(self.model, image, self.size), label)
            eval_label = self.label_map[label] if self.label_map is not None else label
            prediction = self.segmenter.predict(image, return_scores=False)
            confusion.update(prediction.labels, eval_label)
            images += 1
            if prediction.bg_thresh is not None and prediction.bg_thresh < self.segmenter.cfg.bg_thresh:
                clamped += 1
            if len(kept_keys) < self.keep:
                kept_keys.append(key)
                kept_images.append(image)
                kept_preds.append(prediction.labels)
                kept_gts.append(eval_label)
        return {
            "confusion": [confusion.matrix.reshape(-1)],
            "mask_confusion": [masks.confusion.matrix.reshape(-1)],
            "images": [images], "skipped": [skipped], "bg_clamped": [clamped],
            "seconds": [time.perf_counter() - started],
            "examples": [{"keys": kept_keys, "images": kept_images, "preds": kept_preds, "gts": kept_gts}],
        }


def run_evaluation(checkpoint: str | Path, dataset: dict, segment: dict, class_names: list[str], *,
                   background_index: int | None = None, max_images: int | None = None,
                   num_actors: int = 1, gpus_per_actor: float = 0.0, batch_size: int = 16,
                   keep_predictions: int = 0, mask_quality: bool = True) -> dict:
    """Sum the confusion matrices of all actors; returns matrices, counts (``bg_clamped``: images whose
    background threshold was clamped), images/s, kept examples."""
    from sseg.data.datasets import build_dataset

    dataset = {**dataset, "root": str(Path(dataset["root"]).resolve())}  # workers run elsewhere
    checkpoint = Path(checkpoint).resolve()
    size = len(build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val")))
    count = min(size, max_images) if max_images else size
    started = time.perf_counter()
    ds = ray.data.range(count, override_num_blocks=max(1, min(count, num_actors * 4)))
    ds = ds.map(lambda row: {"index": row["id"]})
    ds = ds.map_batches(
        EvaluateBatch,
        fn_constructor_kwargs=dict(checkpoint=str(checkpoint), dataset=dataset, segment=segment,
                                   class_names=class_names, background_index=background_index,
                                   keep_predictions=keep_predictions, mask_quality=mask_quality),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors),
        num_gpus=gpus_per_actor, batch_size=batch_size, batch_format="numpy")
    confusion = mask_confusion = None
    images = skipped = bg_clamped = 0
    examples: list[tuple] = []
    for row in ds.iter_rows():
        c = np.asarray(row["confusion"], np.int64)
        m = np.asarray(row["mask_confusion"], np.int64)
        confusion = c if confusion is None else confusion + c
        mask_confusion = m if mask_confusion is None else mask_confusion + m
        images += int(row["images"])
        skipped += int(row["skipped"])
        bg_clamped += int(row["bg_clamped"])
        ex = row["examples"]
        for i in range(len(ex["keys"])):
            if len(examples) < keep_predictions:
                examples.append((ex["keys"][i], ex["images"][i], ex["preds"][i], ex["gts"][i]))
    elapsed = time.perf_counter() - started
    n = int(round(np.sqrt(confusion.size)))
    k = int(round(np.sqrt(mask_confusion.size)))
    return {
        "confusion": ConfusionMatrix.from_matrix(confusion.reshape(n, n)),
        "mask_confusion": ConfusionMatrix.from_matrix(mask_confusion.reshape(k, k)),
        "images": images, "skipped": skipped, "bg_clamped": bg_clamped, "seconds": elapsed,
        "images_per_s": images / elapsed if elapsed else 0.0, "examples": examples,
    }


def constant_class_miou(confusion: ConfusionMatrix) -> tuple[float, int]:
    """Best mIoU of predicting one class everywhere, from the ground-truth pixel counts alone."""
    gt = confusion.matrix.sum(axis=1).astype(np.float64)
    present = int((gt > 0).sum())
    if present == 0:
        return 0.0, -1
    best = int(np.argmax(gt))
    # predicting c everywhere: IoU_c = n_c / N, every other present class has IoU 0
    return float(gt[best] / gt.sum() / present), best


@torch.no_grad()
def caption_retrieval(checkpoint: str | Path, images: list[np.ndarray], captions: list[str]) -> dict:
    """Top-1 image→text and text→image accuracy among ``len(images)`` held-out pairs (chance 1/n)."""
    import torch.nn.functional as F

    from sseg.data.transforms import resize_image, to_normalized_tensor
    from sseg.models.text import tokenize
    from sseg.checkpoints import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint)
    size = model.cfg.image_size
    feats, texts = [], []
    for start in range(0, len(images), 64):
        chunk = np.stack([resize_image(im, (size, size)) for im in images[start:start + 64]])
        out = model.encode_image(to_normalized_tensor(chunk))
        feats.append(F.normalize(out["mask_features"].mean(1), dim=-1))
        tokens = tokenize(captions[start:start + 64], model.cfg.context_length)
        texts.append(F.normalize(model.encode_text(tokens), dim=-1))
    sim = torch.cat(feats) @ torch.cat(texts).T
    target = torch.arange(sim.shape[0])
    return {"retrieval_i2t_top1": float((sim.argmax(1) == target).float().mean()),
            "retrieval_t2i_top1": float((sim.argmax(0) == target).float().mean()),
            "retrieval_chance": 1.0 / sim.shape[0]}
