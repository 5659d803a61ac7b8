"""Open-vocabulary evaluation as Ray Data batch inference: confusion matrices from many actors, summed.

One pass scores several variants (checkpoint, inference settings, text queries, protocol) on the same
images: each actor loads each checkpoint and the dataset reader once and reads each image once. Rows are
sample indices. Per batch and variant it returns the open-vocabulary confusion matrix, the predicted-mask
oracle matrix (each predicted mask takes its majority true label: the quality of the masks regardless of
naming), and with background by threshold how many images had their threshold clamped to their best
foreground probability."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class EvalVariant:
    """One way of scoring the evaluation images: a checkpoint, its inference settings and its text queries.
    ``label_map`` maps the dataset's labels to this variant's (a protocol's); ``keep_predictions``: how
    many (image, prediction, truth) examples to return for pictures."""

    checkpoint: str | Path
    segment: dict
    class_names: list[str]
    background_index: int | None = None
    label_map: list[int] | None = None
    mask_quality: bool = True
    keep_predictions: int = 0


class EvaluateBatch:
    """Every variant on every image of a batch: each image is read once, each checkpoint loaded once."""

    def __init__(self, dataset: dict, variants: list[dict], threads: int = 1):
        import sseg  # noqa: F401

        from sseg.checkpoints import model_from_checkpoint
        from sseg.data.datasets import build_dataset
        from sseg.inference import SegmentConfig, Segmenter, build_text_classifier
        from sseg.models.text import tokenize

        torch.set_num_threads(threads)
        self.dataset = build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val"))
        self.num_gt_classes = len(self.dataset.class_names)
        models: dict[str, torch.nn.Module] = {}
        self.variants = []
        for v in variants:
            if v["checkpoint"] not in models:
                models[v["checkpoint"]] = model_from_checkpoint(v["checkpoint"])[0]
            model = models[v["checkpoint"]]
            cfg = SegmentConfig.model_validate(v["segment"])
            classifier = build_text_classifier(model, v["class_names"], cfg.templates, tokenize)
            segmenter = Segmenter(model, classifier, cfg, background_index=v["background_index"])
            label_map = np.asarray(v["label_map"], np.uint8) if v["label_map"] else None
            self.variants.append((model, segmenter, label_map, v["mask_quality"], v["keep_predictions"]))

    def __call__(self, batch: dict) -> dict:
        from sseg.pseudo_masks.oracle import OracleMIoU

        samples, skipped = [], 0
        for index in batch["index"]:
            try:
                samples.append(self.dataset[int(index)])
            except Exception as exc:  # noqa: BLE001 - a bad image is skipped and counted
                log.warning("skipping eval sample %s: %s", index, first_line(exc))
                skipped += 1
        out: dict = {"skipped": [skipped]}
        for i, (model, segmenter, label_map, mask_quality, keep) in enumerate(self.variants):
            confusion = ConfusionMatrix(len(segmenter.class_names))
            masks = OracleMIoU(self.num_gt_classes)
            kept: dict[str, list] = {"keys": [], "images": [], "preds": [], "gts": []}
            started, clamped = time.perf_counter(), 0
            for key, image, label in samples:
                if mask_quality:
                    masks.update(predicted_mask_ids(model, image, model.cfg.image_size), label)
                eval_label = label_map[label] if label_map is not None else label
                prediction = segmenter.predict(image, return_scores=False)
                confusion.update(prediction.labels, eval_label)
                if prediction.bg_thresh is not None and prediction.bg_thresh < segmenter.cfg.bg_thresh:
                    clamped += 1
                if len(kept["keys"]) < keep:
                    for name, value in zip(("keys", "images", "preds", "gts"),
                                           (key, image, prediction.labels, eval_label)):
                        kept[name].append(value)
            out.update({f"confusion_{i}": [confusion.matrix.reshape(-1)],
                        f"mask_confusion_{i}": [masks.confusion.matrix.reshape(-1)],
                        f"images_{i}": [len(samples)], f"bg_clamped_{i}": [clamped],
                        f"seconds_{i}": [time.perf_counter() - started], f"examples_{i}": [kept]})
        return out


def run_evaluations(dataset: dict, variants: list[EvalVariant], *, max_images: int | None = None,
                    num_actors: int = 1, gpus_per_actor: float = 0.0, batch_size: int = 16) -> list[dict]:
    """Score every variant on the same images in one Ray Data pass (one actor pool, each image read once);
    per variant: summed confusion matrices, counts (``bg_clamped``: images whose background threshold was
    clamped to their best foreground probability), kept examples, and ``images_per_s``: the pass's
    wall-clock throughput, its time shared among the variants by their compute time."""
    from sseg.data.datasets import build_dataset

    dataset = {**dataset, "root": str(Path(dataset["root"]).resolve())}  # workers run elsewhere
    specs = [{**asdict(v), "checkpoint": str(Path(v.checkpoint).resolve()),
              "label_map": list(v.label_map) if v.label_map is not None else None} for v in variants]
    size = len(build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val")))
    count = min(size, max_images) if max_images else size
    started = time.perf_counter()
    ds = ray.data.range(count, override_num_blocks=max(1, min(count, num_actors * 4)))
    ds = ds.map(lambda row: {"index": row["id"]})
    ds = ds.map_batches(
        EvaluateBatch, fn_constructor_kwargs=dict(dataset=dataset, variants=specs),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors),
        num_gpus=gpus_per_actor, batch_size=batch_size, batch_format="numpy")
    totals = [{"confusion": None, "mask_confusion": None, "images": 0, "bg_clamped": 0, "seconds": 0.0,
               "examples": []} for _ in variants]
    skipped = 0
    for row in ds.iter_rows():
        skipped += int(row["skipped"])
        for i, total in enumerate(totals):
            for name in ("confusion", "mask_confusion"):
                matrix = np.asarray(row[f"{name}_{i}"], np.int64)
                total[name] = matrix if total[name] is None else total[name] + matrix
            for name in ("images", "bg_clamped"):
                total[name] += int(row[f"{name}_{i}"])
            total["seconds"] += float(row[f"seconds_{i}"])
            ex = row[f"examples_{i}"]
            for j in range(len(ex["keys"])):
                if len(total["examples"]) < variants[i].keep_predictions:
                    total["examples"].append((ex["keys"][j], ex["images"][j], ex["preds"][j], ex["gts"][j]))
    elapsed = time.perf_counter() - started
    compute = sum(t["seconds"] for t in totals)
    results = []
    for total in totals:
        n = int(round(np.sqrt(total["confusion"].size)))
        k = int(round(np.sqrt(total["mask_confusion"].size)))
        share = elapsed * (total["seconds"] / compute if compute else 1.0 / len(totals))
        results.append({
            "confusion": ConfusionMatrix.from_matrix(total["confusion"].reshape(n, n)),
            "mask_confusion": ConfusionMatrix.from_matrix(total["mask_confusion"].reshape(k, k)),
            "images": total["images"], "skipped": skipped, "bg_clamped": total["bg_clamped"],
            "seconds": share, "images_per_s": total["images"] / share if share else 0.0,
            "examples": total["examples"],
        })
    return results


def run_evaluation(checkpoint: str | Path, dataset: dict, segment: dict, class_names: list[str], *,
                   background_index: int | None = None, max_images: int | None = None,
                   num_actors: int = 1, gpus_per_actor: float = 0.0, batch_size: int = 16,
                   keep_predictions: int = 0, mask_quality: bool = True) -> dict:
    """One checkpoint scored alone (:func:`run_evaluations` with one variant); ``dataset`` may carry the
    ``label_map`` of a protocol."""
    variant = EvalVariant(checkpoint, segment, class_names, background_index, dataset.get("label_map"),
                          mask_quality, keep_predictions)
    plain = {k: v for k, v in dataset.items() if k != "label_map"}
    return run_evaluations(plain, [variant], max_images=max_images, num_actors=num_actors,
                           gpus_per_actor=gpus_per_actor, batch_size=batch_size)[0]


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
