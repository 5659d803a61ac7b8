"""TagCLIP's report beyond the evaluation report: seen / unseen mIoU, hIoU, the share of unseen pixels
labelled as a seen class (from the same confusion matrix), and the trusty map's AUROC for unseen vs seen
pixels (its own Ray Data pass: every actor accumulates a score histogram, the driver sums them)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import ray
import torch

from pipelines.evaluation.report import log_report
from pipelines.stages.batch_inference import run_evaluation


def text_classes(split) -> tuple[list[str], int | None]:
    """(the class names queried as text, the ignored background's label slot or None)."""
    names = [split.class_names[i] for i in split.evaluated]
    return names, (split.ignored[0] if split.ignored else None)


def segment_settings(cfg) -> dict:
    return {"templates": cfg.data.templates, "bg_mode": "none", "short_side": cfg.eval.short_side,
            "sliding": True, "window": cfg.eval.window, "stride": cfg.eval.stride}


class TrustyHistogram:
    """Ray Data actor: sample indices -> the trusty map's score histograms of unseen (positive) and seen
    (negative) pixels."""

    def __init__(self, checkpoint: str, dataset: dict, segment: dict, split: dict, threads: int = 1):
        import sseg  # noqa: F401

        from sseg.checkpoints import model_from_checkpoint
        from sseg.data.datasets import build_dataset
        from sseg.inference import SegmentConfig, Segmenter
        from sseg.tagclip.splits import ClassSplit

        torch.set_num_threads(threads)
        model, _ = model_from_checkpoint(checkpoint)
        self.split = ClassSplit(**split)
        self.dataset = build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val"))
        names, background = text_classes(self.split)
        self.segmenter = Segmenter.for_classes(model, names, SegmentConfig.model_validate(segment))
        self.background = background

    def __call__(self, batch: dict) -> dict:
        from sseg.metrics import ScoreHistogram
        from sseg.tagclip.evaluation import trusty_probability, update_trusty_histogram

        hist = ScoreHistogram()
        for index in batch["index"]:
            _, image, label = self.dataset[int(index)]
            update_trusty_histogram(hist, trusty_probability(self.segmenter, image), label, self.split)
        return {"positive": [hist.positive], "negative": [hist.negative]}


def trusty_auroc(checkpoint: str | Path, dataset: dict, segment: dict, split, *, max_images: int | None,
                 num_actors: int, batch_size: int) -> float:
    from dataclasses import asdict

    from sseg.data.datasets import build_dataset
    from sseg.metrics import ScoreHistogram

    dataset = {**dataset, "root": str(Path(dataset["root"]).resolve())}
    size = len(build_dataset(dataset["name"], dataset["root"], dataset.get("split", "val")))
    count = min(size, max_images) if max_images else size
    ds = ray.data.range(count, override_num_blocks=max(1, min(count, num_actors * 4)))
    ds = ds.map(lambda row: {"index": row["id"]}).map_batches(
        TrustyHistogram, fn_constructor_kwargs=dict(checkpoint=str(Path(checkpoint).resolve()), dataset=dataset,
                                                    segment=segment, split=asdict(split)),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors), batch_size=batch_size,
        batch_format="numpy")
    hist = ScoreHistogram()
    for row in ds.iter_rows():
        hist.positive += np.asarray(row["positive"], np.int64)
        hist.negative += np.asarray(row["negative"], np.int64)
    return hist.auroc()


def evaluate_tagclip(cfg, prep, checkpoint: str | Path, tracker, *, prefix: str = "eval", trusty: bool = True,
                     pictures: int | None = None) -> dict:
    """Evaluate ``checkpoint`` (any segmenting kind) on the val split with every non-ignored class as a text
    query; logs ``<prefix>.miou_seen`` / ``miou_unseen`` / ``hiou`` / ``unseen_as_seen`` (and
    ``trusty_auroc``) next to the evaluation report's figures. Returns them."""
    from sseg.tagclip.evaluation import seen_unseen_metrics

    dataset = {"name": cfg.data.dataset, "root": cfg.data.root, "split": cfg.data.val_split}
    names, background = text_classes(prep.split)
    segment = segment_settings(cfg)
    pictures = cfg.eval.pictures if pictures is None else pictures
    result = run_evaluation(checkpoint, dataset, segment, names, background_index=background,
                            max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors,
                            batch_size=cfg.eval.batch_size, keep_predictions=pictures, mask_quality=False)
    log_report(tracker, result, prep.class_names, prefix=prefix, exclude=prep.split.ignored,
               world=cfg.data.dataset == "world", json_name="val")
    metrics = seen_unseen_metrics(result["confusion"], prep.split)
    out = {k: metrics[k] for k in ("miou_seen", "miou_unseen", "hiou", "miou", "pixel_accuracy", "unseen_as_seen")}
    if trusty:
        out["trusty_auroc"] = trusty_auroc(checkpoint, dataset, segment, prep.split, max_images=cfg.eval.max_images,
                                           num_actors=cfg.eval.num_actors, batch_size=cfg.eval.batch_size)
    out["eval_images"] = result["images"]
    tracker.log_metrics({f"{prefix}.{k}": v for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    return out
