"""S-Seg+ stage 1: pseudo-labels of the target's train images by Ray Data batch inference of S-Seg.

Rows are chunks of the train split (``PseudoLabelCache``); an actor pool (one GPU per actor on a cluster)
loads the checkpoint and the dataset reader once and labels a whole chunk per call with the evaluation's
inference (``sseg.inference.Segmenter``: prompt templates, background rule, sliding window). The driver
writes each chunk's Parquet file as soon as its rows are in, so an interrupted run keeps every finished
chunk and redoes only the others. :func:`pseudo_label_statistics` then reads the cache back (a Ray Data
map over its files) for the class histogram, the confidence and, where the split has ground truth, the
pseudo-labels' own mIoU.
"""

from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from pipelines.io.pseudo_label_cache import PseudoLabelCache
from sseg.errors import first_line

log = logging.getLogger(__name__)


def encode_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def label_confidence(prediction, background_index: int | None) -> torch.Tensor:
    """How sure the teacher is of each pixel's pseudo-label, ``[H, W]`` in [0, 1].

    A foreground pixel's confidence is its class probability ``p`` (the largest of the C foreground
    probabilities). Under GroupViT's rule (``prediction.bg_thresh`` = the threshold ``t`` applied) the
    background has no probability of its own and its slot holds ``t``; a background pixel (``p < t``)
    gets the same scale as the foreground side instead: ``t`` at the decision boundary rising linearly to
    1 at ``p = 1/C`` (every foreground class equally likely, the strongest background evidence the rule
    can see), just as a foreground pixel's rises from ``t`` at the boundary to 1 at ``p = 1``. A
    confidence threshold above ``t`` thus drops the same share of each side's margin, and one at or below
    ``t`` keeps every pixel. Without a threshold rule (no background, or a closed-vocabulary teacher
    with its own background probability) the confidence is the predicted class's probability."""
    scores = prediction.scores
    confidence = scores.max(dim=0).values
    threshold = prediction.bg_thresh
    if threshold is None or background_index is None:
        return confidence
    foreground = torch.cat([scores[:background_index], scores[background_index + 1:]])
    best = foreground.max(dim=0).values
    uniform = 1.0 / foreground.shape[0]
    is_background = torch.as_tensor(np.asarray(prediction.labels) == background_index)
    if threshold > uniform:
        margin = ((threshold - best) / (threshold - uniform)).clamp(0, 1)
        background = threshold + (1.0 - threshold) * margin
    else:  # no pixel can fall below the threshold: only all-zero pixels are background
        background = torch.ones_like(best)
    return torch.where(is_background, background, best)


class LabelChunk:
    """Actor: a chunk row {"chunk", "start", "stop"} → one cache row per image of the chunk."""

    def __init__(self, checkpoint: str, dataset: dict, class_names: list[str], segment: dict, cache_key: str,
                 threads: int = 1):
        import sseg  # noqa: F401 - torchvision fix in this worker

        from sseg.checkpoints import model_from_checkpoint
        from sseg.data.datasets import build_dataset
        from sseg.inference import SegmentConfig, Segmenter

        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, _ = model_from_checkpoint(checkpoint, map_location=device, segmenting=True)
        self.model.to(device)
        self.reader = build_dataset(dataset["name"], dataset["root"], dataset["split"])
        self.segmenter = Segmenter.for_classes(self.model, class_names, SegmentConfig.model_validate(segment))
        self.cache_key = cache_key

    def label(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label ids uint8, confidence uint8 = round(255 × :func:`label_confidence`))."""
        prediction = self.segmenter.predict(image, return_scores=True)
        confidence = label_confidence(prediction, self.segmenter.background_index)
        return prediction.labels.astype(np.uint8), confidence.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()

    def __call__(self, batch: dict) -> dict:
        rows: dict[str, list] = defaultdict(list)
        for chunk, start, stop in zip(batch["chunk"], batch["start"], batch["stop"]):
            for index in range(int(start), int(stop)):
                key, image, _ = self.reader[index]
                labels, confidence = self.label(image)
                rows["key"].append(key)
                rows["index"].append(index)
                rows["chunk"].append(int(chunk))
                rows["width"].append(image.shape[1])
                rows["height"].append(image.shape[0])
                rows["image"].append(encode_png(image))
                rows["label_png"].append(encode_png(labels))
                rows["confidence_png"].append(encode_png(confidence))
                rows["cache_key"].append(self.cache_key)
        return {k: np.asarray(v, dtype=object if k in ("key", "image", "label_png", "confidence_png", "cache_key")
                              else np.int64) for k, v in rows.items()}


def build_pseudo_label_cache(cache: PseudoLabelCache, checkpoint: str | Path, dataset: dict,
                             class_names: list[str], segment: dict, *, num_actors: int = 1,
                             gpus_per_actor: float = 0.0, threads: int = 1) -> dict:
    """Label every unfinished chunk; returns what was done and the images/s of this pass."""
    todo = cache.todo()
    total = cache.num_chunks()
    print(f"[sseg] pseudo-labels: {total - len(todo)} of {total} chunks already in {cache.root}, "
          f"{len(todo)} to label", flush=True)
    started = time.perf_counter()
    written = 0
    if todo:
        dataset = {**dataset, "root": str(Path(dataset["root"]).resolve())}  # actors run elsewhere
        actors = max(1, min(num_actors, len(todo)))
        items = [{"chunk": c, "start": cache.chunk_range(c)[0], "stop": cache.chunk_range(c)[1]} for c in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            LabelChunk, fn_constructor_kwargs=dict(checkpoint=str(Path(checkpoint).resolve()), dataset=dataset,
                                                   class_names=list(class_names), segment=segment,
                                                   cache_key=cache.key, threads=threads),
            # every actor from the start: the work is known, and an autoscaled pool adds its second actor
            # only once a backlog shows, too late in a short pass
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=actors),
            num_gpus=gpus_per_actor, num_cpus=0 if gpus_per_actor else threads, batch_size=1,
            batch_format="numpy")
        pending: dict[int, list[dict]] = defaultdict(list)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                pending[row["chunk"]].append(row)
            for chunk in [c for c, rows in pending.items() if len(rows) == _size(cache, c)]:
                written += cache.write_chunk(chunk, pending.pop(chunk))
                print(f"[sseg] pseudo-labels: chunk {chunk} written ({total - len(cache.todo())}/{total})",
                      flush=True)
        if pending:
            raise RuntimeError(f"pseudo-labelling returned incomplete chunks {sorted(pending)}")
    elapsed = time.perf_counter() - started
    return {"chunks_total": total, "chunks_labelled": len(todo), "images_labelled": written,
            "seconds": elapsed, "images_per_s": written / elapsed if written and elapsed else 0.0,
            "cache_dir": str(cache.root), "cache_key": cache.key, "cache_rows": cache.num_rows()}


def _size(cache: PseudoLabelCache, chunk: int) -> int:
    start, stop = cache.chunk_range(chunk)
    return stop - start


class ChunkStatistics:
    """map_batches: cache rows → partial sums (class pixel counts, confidence histogram, confusion vs truth)."""

    def __init__(self, num_classes: int, threshold: float, dataset: dict | None):
        self.num_classes = num_classes
        self.threshold_u8 = int(np.ceil(threshold * 255 - 1e-9))
        self.reader = None
        if dataset is not None:
            import sseg  # noqa: F401

            from sseg.data.datasets import build_dataset

            self.reader = build_dataset(dataset["name"], dataset["root"], dataset["split"])

    def __call__(self, batch: dict) -> dict:
        k = self.num_classes
        histogram = np.zeros(k, np.int64)
        confident_histogram = np.zeros(k, np.int64)
        confidence_counts = np.zeros(256, np.int64)
        confusion = np.zeros((k, k), np.int64)
        confusion_confident = np.zeros((k, k), np.int64)
        errors = 0
        for index, label_png, confidence_png in zip(batch["index"], batch["label_png"], batch["confidence_png"]):
            labels = decode_png(label_png).astype(np.int64)
            confidence = decode_png(confidence_png)
            confident = confidence >= self.threshold_u8
            histogram += np.bincount(labels.ravel(), minlength=k)[:k]
            confident_histogram += np.bincount(labels[confident], minlength=k)[:k]
            confidence_counts += np.bincount(confidence.ravel(), minlength=256)
            if self.reader is not None:
                try:
                    _, _, truth = self.reader[int(index)]
                except Exception as exc:  # noqa: BLE001 - a missing label counts, it does not stop the stats
                    log.warning("no ground truth for pseudo-label %s: %s", index, first_line(exc))
                    errors += 1
                    continue
                truth = truth.astype(np.int64)
                valid = truth < k
                confusion += np.bincount(truth[valid] * k + labels[valid], minlength=k * k).reshape(k, k)
                both = valid & confident
                confusion_confident += np.bincount(truth[both] * k + labels[both], minlength=k * k).reshape(k, k)
        return {"histogram": [histogram], "confident_histogram": [confident_histogram],
                "confidence_counts": [confidence_counts], "confusion": [confusion.ravel()],
                "confusion_confident": [confusion_confident.ravel()], "images": [len(batch["index"])],
                "truth_errors": [errors]}


def pseudo_label_statistics(files: list[str], class_names: list[str], threshold: float,
                            dataset: dict | None) -> dict:
    """Class histogram, mean confidence, the share of pixels kept at ``threshold`` and, with ``dataset`` (the
    train split's ground truth), the pseudo-labels' mIoU (all pixels, and the kept pixels only)."""
    from sseg.metrics import ConfusionMatrix

    k = len(class_names)
    if dataset is not None:
        dataset = {**dataset, "root": str(Path(dataset["root"]).resolve())}
    ds = ray.data.read_parquet(files).select_columns(["index", "label_png", "confidence_png"])
    ds = ds.map_batches(ChunkStatistics, fn_constructor_kwargs=dict(num_classes=k, threshold=threshold,
                                                                     dataset=dataset),
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), batch_size=256,
                        batch_format="numpy")
    totals: dict[str, np.ndarray] = {}
    for row in ds.iter_rows():
        for name, value in row.items():
            value = np.asarray(value, np.int64)
            totals[name] = totals[name] + value if name in totals else value
    counts = totals["confidence_counts"]
    pixels = int(counts.sum())
    levels = np.arange(256) / 255.0
    threshold_u8 = int(np.ceil(threshold * 255 - 1e-9))
    result = {
        "images": int(totals["images"]), "pixels": pixels,
        "mean_confidence": float((counts * levels).sum() / max(pixels, 1)),
        "kept_fraction": float(counts[threshold_u8:].sum() / max(pixels, 1)),
        "class_histogram": {n: int(v) for n, v in zip(class_names, totals["histogram"])},
        "class_histogram_kept": {n: int(v) for n, v in zip(class_names, totals["confident_histogram"])},
        "confidence_threshold": threshold,
    }
    if dataset is not None and int(totals["confusion"].sum()) > 0:
        full = ConfusionMatrix.from_matrix(totals["confusion"].reshape(k, k)).compute()
        kept = ConfusionMatrix.from_matrix(totals["confusion_confident"].reshape(k, k)).compute()
        result.update(miou=full["miou"], pixel_accuracy=full["pixel_accuracy"], miou_kept=kept["miou"],
                      pixel_accuracy_kept=kept["pixel_accuracy"], per_class_iou=list(full["per_class_iou"]),
                      truth_errors=int(totals["truth_errors"]))
    return result
