"""What pretraining reports: open-vocabulary mIoU of the trained and the untrained model, the best
constant-class prediction, predicted-mask quality and caption↔image retrieval, with pictures in MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipelines.stages.batch_inference import caption_retrieval, constant_class_miou, run_evaluation
from pipelines.tracking import Tracker

log = logging.getLogger(__name__)


def _untrained_checkpoint(cfg, directory: Path) -> Path:
    """The step-0 model: same seed and config as the run, never trained."""
    from sseg.models import SSegModel
    from sseg.checkpoints import save_checkpoint

    torch.manual_seed(cfg.train.seed)
    model = SSegModel(cfg.model)
    save_checkpoint(directory, model=model, model_config=cfg.model.model_dump(mode="json"))
    return directory


def log_pictures(tracker: Tracker, examples: list, class_names: list[str], per_class_iou, prefix: str):
    from sseg import viz

    if examples:
        rows = [(image, pred, gt) for _, image, pred, gt in examples]
        # at least 4x and at least ~256 px per cell: a person can read a 64-px world image then
        upscale = max(4, -(-256 // max(1, max(r[0].shape[0] for r in rows))))
        tracker.log_image(viz.grid(rows, upscale=upscale), f"{prefix}/input_prediction_truth.png")
        tracker.log_image(viz.legend(class_names), f"{prefix}/legend.png")
    figure = viz.per_class_iou_bar_chart(class_names, per_class_iou, title=f"{prefix}: per-class IoU")
    tracker.log_figure(figure, f"{prefix}/per_class_iou.png")
    import matplotlib.pyplot as plt

    plt.close(figure)


def thing_stuff_summary(class_names: list[str], per_class_iou) -> dict:
    """Mean IoU over the world's thing and stuff classes and how many things reach 0.10 IoU."""
    from sseg.world import STUFF_CLASSES, THING_CLASSES

    iou = dict(zip(class_names, (float(v) for v in per_class_iou)))
    things = [iou[c] for c in THING_CLASSES if c in iou and np.isfinite(iou[c])]
    stuff = [iou[c] for c in STUFF_CLASSES if c in iou and np.isfinite(iou[c])]
    return {"miou_things": float(np.mean(things)) if things else float("nan"),
            "miou_stuff": float(np.mean(stuff)) if stuff else float("nan"),
            "things_iou_ge_0.1": int(sum(v >= 0.1 for v in things))}


def synonym_class_names(class_names: list[str]) -> list[str]:
    """Each world class renamed to the first synonym the captions use that is not its name
    ("car" → "automobile", "house" → "cottage", "cup" → "mug", …); other names are kept."""
    from sseg.world import CLASS_SYNONYMS

    return [next((s for s in CLASS_SYNONYMS.get(c, ()) if s != c), c) for c in class_names]


def evaluate_pretraining(cfg, checkpoint_dir: Path, tracker: Tracker) -> dict:
    from sseg.data.datasets import build_dataset

    dataset = {"name": cfg.eval.dataset, "root": cfg.eval.labeled_split, "split": "val"}
    reader = build_dataset(dataset["name"], dataset["root"], "val")
    class_names = list(reader.class_names)
    size = cfg.eval.image_size or cfg.model.image_size
    segment = {"templates": cfg.eval.templates, "bg_mode": "none", "short_side": size,
               "sliding": False, "window": size, "stride": size}
    common = dict(max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors)
    from sseg.inference import check_class_names_encodable

    check_class_names_encodable(class_names, cfg.eval.templates, cfg.model.context_length)
    print(f"[sseg] evaluating open-vocabulary mIoU on {cfg.eval.labeled_split} "
          f"({min(len(reader), cfg.eval.max_images)} images, {len(class_names)} class names)", flush=True)
    trained = run_evaluation(checkpoint_dir, dataset, segment, class_names,
                             keep_predictions=cfg.eval.pictures, **common)
    untrained_dir = _untrained_checkpoint(cfg, checkpoint_dir.parent / "untrained")
    untrained = run_evaluation(untrained_dir, dataset, segment, class_names, **common)
    metrics = trained["confusion"].compute()
    constant, constant_class = constant_class_miou(trained["confusion"])
    result = {
        "miou": metrics["miou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "untrained_miou": untrained["confusion"].compute()["miou"],
        "constant_class_miou": constant,
        "constant_class": class_names[constant_class] if constant_class >= 0 else None,
        "mask_quality_miou": trained["mask_confusion"].compute()["miou"],
        "untrained_mask_quality_miou": untrained["mask_confusion"].compute()["miou"],
        "eval_images": trained["images"], "eval_skipped": trained["skipped"],
        "eval_images_per_s": trained["images_per_s"],
    }
    result["miou_vs_untrained"] = result["miou"] / max(result["untrained_miou"], 1e-9)
    if cfg.world is not None:
        from sseg.world import render_sample

        result.update(thing_stuff_summary(class_names, metrics["per_class_iou"]))
        synonyms = synonym_class_names(class_names)
        if synonyms != class_names:
            # open vocabulary: the same images queried with words the captions use instead of the names
            renamed = run_evaluation(checkpoint_dir, dataset, segment, synonyms, mask_quality=False, **common)
            result["miou_synonyms"] = renamed["confusion"].compute()["miou"]
            result["synonym_class_names"] = synonyms

        pairs = [render_sample(cfg.world.seed, i, cfg.world, split="val")
                 for i in range(min(cfg.eval.retrieval_pairs, cfg.world.num_val))]
        if len(pairs) > 1:
            result.update(caption_retrieval(checkpoint_dir, [p.image for p in pairs],
                                            [p.caption for p in pairs]))
    tracker.log_metrics({f"eval.{k}": v for k, v in result.items() if isinstance(v, (int, float))})
    tracker.log_metrics({f"eval.iou.{name}": float(iou) for name, iou in
                         zip(class_names, metrics["per_class_iou"]) if np.isfinite(iou)})
    tracker.log_dict({"class_names": class_names, "per_class_iou": metrics["per_class_iou"],
                      "confusion": trained["confusion"].matrix.tolist()}, "eval/world_val.json")
    log_pictures(tracker, trained["examples"], class_names, metrics["per_class_iou"], "eval")
    return result
