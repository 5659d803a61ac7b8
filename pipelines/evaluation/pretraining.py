"""What pretraining reports beyond the evaluation report: the untrained model's mIoU and mask quality,
the best constant-class prediction, the world's classes queried by their synonyms and caption↔image
retrieval."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.evaluation.report import log_report
from pipelines.stages.batch_inference import EvalVariant, caption_retrieval, constant_class_miou, run_evaluations
from pipelines.tracking import Tracker


def _untrained_checkpoint(cfg, directory: Path) -> Path:
    """The step-0 model: same seed and config as the run, never trained."""
    from sseg.checkpoints import save_checkpoint
    from sseg.models import SSegModel

    torch.manual_seed(cfg.train.seed)
    model = SSegModel(cfg.model)
    save_checkpoint(directory, model=model, model_config=cfg.model.model_dump(mode="json"))
    return directory


def synonym_class_names(class_names: list[str]) -> list[str]:
    """Each world class renamed to the first synonym the captions use that is not its name
    ("car" → "automobile", "house" → "cottage", "cup" → "mug", …); other names are kept."""
    from sseg.world import CLASS_SYNONYMS

    return [next((s for s in CLASS_SYNONYMS.get(c, ()) if s != c), c) for c in class_names]


def evaluate_pretraining(cfg, checkpoint_dir: Path, tracker: Tracker) -> dict:
    """The paper's headline protocol for the split: every class a text query on a dataset without a
    background class (the world), the with-background protocol with GroupViT's threshold on one that has
    it (VOC, Context, COCO-Object: the names of the foreground classes are the queries)."""
    from pipelines.evaluation.report import protocol_of
    from pipelines.stages.evaluate_protocols import background_threshold
    from sseg.data.datasets import build_dataset
    from sseg.inference import check_class_names_encodable

    dataset = {"name": cfg.eval.dataset, "root": cfg.eval.labeled_split, "split": "val"}
    reader = build_dataset(dataset["name"], dataset["root"], "val")
    protocol_name = "all_classes" if reader.background_index is None else "with_background"
    protocol = protocol_of(protocol_name, list(reader.class_names), reader.background_index, None)
    class_names = protocol.report_names
    size = cfg.eval.image_size or cfg.model.image_size
    segment = {"templates": cfg.eval.templates, "bg_mode": protocol.bg_mode, "short_side": size,
               "sliding": False, "window": size, "stride": size}
    if protocol.bg_mode == "threshold":
        segment["bg_thresh"], bg_source = background_threshold(cfg.eval.dataset, segment)
        tracker.log_params({"eval.protocol": protocol_name, "eval.bg_thresh": segment["bg_thresh"],
                            "eval.bg_thresh_source": bg_source})
    common = dict(max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors)
    check_class_names_encodable(protocol.text_classes, cfg.eval.templates, cfg.model.context_length)
    print(f"[sseg] evaluating open-vocabulary mIoU on {cfg.eval.labeled_split} "
          f"({min(len(reader), cfg.eval.max_images)} images, {len(protocol.text_classes)} class names, "
          f"protocol {protocol_name})", flush=True)
    untrained_dir = _untrained_checkpoint(cfg, checkpoint_dir.parent / "untrained")
    scored = dict(background_index=protocol.background_index, label_map=protocol.label_map)
    variants = [EvalVariant(checkpoint_dir, segment, protocol.text_classes, **scored,
                            keep_predictions=cfg.eval.pictures),
                EvalVariant(untrained_dir, segment, protocol.text_classes, **scored)]
    # open vocabulary: the same images queried with words the captions use instead of the names
    synonyms = synonym_class_names(class_names) if cfg.world is not None else class_names
    if synonyms != class_names:
        variants.append(EvalVariant(checkpoint_dir, segment, synonyms, mask_quality=False))
    trained, untrained, *renamed = run_evaluations(dataset, variants, **common)
    report = log_report(tracker, trained, class_names, world=cfg.world is not None, json_name="world_val")
    constant, constant_class = constant_class_miou(trained["confusion"])
    result = {
        "miou": report["miou"],
        "pixel_accuracy": report["pixel_accuracy"],
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

        result.update({k: report[k] for k in ("miou_things", "miou_stuff", "things_iou_ge_0.1")})
        if renamed:
            result["miou_synonyms"] = renamed[0]["confusion"].compute()["miou"]
            result["synonym_class_names"] = synonyms

        pairs = [render_sample(cfg.world.seed, i, cfg.world, split="val")
                 for i in range(min(cfg.eval.retrieval_pairs, cfg.world.num_val))]
        if len(pairs) > 1:
            result.update(caption_retrieval(checkpoint_dir, [p.image for p in pairs],
                                            [p.caption for p in pairs]))
    logged = {"miou", "pixel_accuracy", "miou_things", "miou_stuff", "things_iou_ge_0.1"}  # by log_report
    tracker.log_metrics({f"eval.{k}": v for k, v in result.items()
                         if isinstance(v, (int, float)) and k not in logged})
    return result
