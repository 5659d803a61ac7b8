"""The S-Seg+ self-training run (S-Seg paper, sec. 3.3.4): S-Seg checkpoint → pseudo-labels of the target's
train images (resumable cache) → UperNet-ViT trained on them by the trainer → both models evaluated on the
target's labelled split with the same protocol, all in one MLflow run whose lineage tag
``sseg.parent_run_id`` is the pretraining run."""

from __future__ import annotations

import json
import os
import time

from pipelines.evaluation.report import background_classes_of, evaluate_protocols, segment_settings
from pipelines.io.pseudo_label_cache import PseudoLabelCache, pseudo_label_identity
from pipelines.io.runtime import init_ray, require_gpus
from pipelines.lineage import resolve_parent
from pipelines.inputs.self_train import self_train_deviations
from pipelines.tracking import deviation_tags
from pipelines.training import trainer
from pipelines.training.self_train_step import build_self_train_step
from schemas.configs import SelfTrainConfig
from sseg.checkpoints import PRETRAIN_KIND
from sseg.errors import CheckpointError, ConfigError, DataError

STAGE = "self-train"


def check_class_list(requested: list[str] | None, dataset_names: list[str]) -> list[str]:
    """The class list of the S-Seg+ model: the dataset's; a given list must equal it (the pseudo-label ids
    are dataset ids), else a one-line error naming the first difference."""
    names = list(dataset_names)
    if requested is None:
        return names
    if list(requested) != names:
        missing = [n for n in names if n not in requested]
        extra = [n for n in requested if n not in names]
        detail = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and extra else "") + \
                 (f"not in the dataset: {', '.join(extra)}" if extra else "")
        raise ConfigError(f"target.classes does not match the dataset's class list "
                          f"({detail or 'same names in another order'}; the dataset has: {', '.join(names)})")
    return names


def _pseudo_label_segment(cfg: SelfTrainConfig, background_index: int | None) -> dict:
    """Inference settings of the pseudo-labels: the evaluation's; with background by GroupViT's rule when
    the dataset has a background class (the labels then use the dataset's ids)."""
    from pipelines.stages.evaluate_protocols import background_threshold
    from sseg.inference import SegmentConfig

    segment = segment_settings(cfg.target.dataset, cfg.pseudo_labels.segment)
    segment["bg_mode"] = "none" if background_index is None else "threshold"
    if background_index is not None:
        segment["bg_thresh"] = background_threshold(cfg.target.dataset, segment)[0]
    try:
        return SegmentConfig.model_validate(segment).model_dump(mode="json")
    except ValueError as exc:
        raise ConfigError(f"pseudo_labels.segment: {str(exc).splitlines()[0]}") from None


def run_self_train(cfg: SelfTrainConfig, resume: str | None = None, callbacks=()) -> dict:
    started = time.perf_counter()
    parent = resolve_parent(cfg.checkpoint, experiment=cfg.pretrain_experiment, kinds=[PRETRAIN_KIND],
                            field="checkpoint", make_with="python jobs/pretrain.py")
    run = trainer.run_identity(STAGE, cfg, resume, extra={"parent": str(parent.run_id or parent.checkpoint)})
    if cfg.model.backbone_checkpoint and not os.path.isfile(cfg.model.backbone_checkpoint):
        raise CheckpointError(f"model.backbone_checkpoint not found: {cfg.model.backbone_checkpoint}")
    if cfg.train.global_batch_size % cfg.train.num_workers:
        raise ConfigError("train.global_batch_size must be a multiple of train.num_workers")
    if cfg.train.global_batch_size // cfg.train.num_workers < 2:
        raise ConfigError("each training worker needs at least 2 images per batch (the head's batch norm)")
    if cfg.world is not None:
        from sseg.world import ensure_world

        ensure_world(cfg.world_dir, cfg.world, workers=min(4, os.cpu_count() or 1))
    from sseg.data.datasets import build_dataset
    from sseg.inference import check_class_names_encodable

    train_reader = build_dataset(cfg.target.dataset, cfg.target.root, cfg.target.train_split)
    val_reader = build_dataset(cfg.target.dataset, cfg.target.root, cfg.target.val_split)
    keys = train_reader.keys[:cfg.target.max_train_images] if cfg.target.max_train_images else train_reader.keys
    if not keys:
        raise DataError(f"the target's train split '{cfg.target.train_split}' under {cfg.target.root} has no images")
    class_names = check_class_list(cfg.target.classes, list(train_reader.class_names))
    segment = _pseudo_label_segment(cfg, train_reader.background_index)
    check_class_names_encodable([n for n in class_names if n.lower() != "background"], segment["templates"],
                                int(parent.state["model_config"]["context_length"]))
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"class_names": class_names})})

    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.pseudo_labels.gpus_per_actor, "pseudo_labels.gpus_per_actor")
    trainer.check_gpus(cfg.train)
    require_gpus(cfg.eval.gpus_per_actor, "eval.gpus_per_actor")
    cpus_per_worker = trainer.plan_cpus(cfg.train)
    identity = pseudo_label_identity(checkpoint_file=parent.checkpoint, class_names=class_names, segment=segment,
                                     dataset=cfg.target.dataset, split=cfg.target.train_split, keys=list(keys),
                                     chunk_size=cfg.pseudo_labels.chunk_size)
    cache_root = cfg.pseudo_labels.cache_dir or PseudoLabelCache.default_root(cfg.storage_path, identity)
    cache = PseudoLabelCache(cache_root, identity).open()  # a foreign cache: refused here, naming the difference

    tags = {"sseg.dataset": cfg.target.dataset, "sseg.pseudo_label_cache": cache.key,
            "sseg.note": "S-Seg+: UperNet-ViT trained on S-Seg pseudo-labels (S-Seg paper, sec. 3.3.4)"}
    tags.update(deviation_tags(self_train_deviations(cfg, segment)))
    with trainer.open_run(run, cfg, parent_run_id=parent.run_id, tags=tags) as tracker:
        from pipelines.evaluation.pseudo_labels import log_pseudo_label_stats
        from pipelines.stages.pseudo_labels import build_pseudo_label_cache, pseudo_label_statistics
        from pipelines.stages.self_train_data import count_rows, self_train_dataset

        dataset = {"name": cfg.target.dataset, "root": cfg.target.root, "split": cfg.target.train_split}
        labelled = build_pseudo_label_cache(cache, str(parent.checkpoint), dataset, class_names, segment,
                                            num_actors=cfg.pseudo_labels.num_actors,
                                            gpus_per_actor=cfg.pseudo_labels.gpus_per_actor,
                                            threads=cfg.pseudo_labels.threads_per_actor)
        files = cache.files()
        stats = pseudo_label_statistics(files, class_names, cfg.pseudo_labels.confidence_threshold, dataset)
        log_pseudo_label_stats(tracker, labelled, stats, class_names)
        num_samples = count_rows(files)
        if num_samples < cfg.train.global_batch_size:
            raise DataError(f"only {num_samples} pseudo-labelled images: fewer than train.global_batch_size="
                            f"{cfg.train.global_batch_size}")
        if cfg.train.class_balance != "none":
            from sseg.self_training import balanced_class_weights

            weights = balanced_class_weights([stats["class_histogram_kept"][name] for name in class_names])
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"class_weights": weights})})
            tracker.log_params({"derived.class_weights": json.dumps([round(w, 3) for w in weights])})
            print("[sseg] class weights (" + cfg.train.class_balance + "): "
                  + ", ".join(f"{n} {w:.2f}" for n, w in zip(class_names, weights)), flush=True)
        seed = trainer.data_seed(cfg.train)
        data = self_train_dataset(files, cfg.train.crop_size or cfg.model.image_size, cfg.train.crop_scale,
                                  cfg.pseudo_labels.confidence_threshold, cfg.train.hflip, seed=seed,
                                  augment=cfg.train.augment, resize_scale=cfg.train.resize_scale,
                                  ratio_range=cfg.train.ratio_range, cat_max_ratio=cfg.train.cat_max_ratio)
        tracker.log_params({"derived.num_samples": num_samples})
        print(f"[sseg] self-training {run.name}: {cfg.train.steps} steps of {cfg.train.global_batch_size} images "
              f"on {num_samples} pseudo-labelled images; MLflow run {tracker.run_id}", flush=True)
        summary = trainer.train(build_self_train_step, cfg.model_dump(mode="json"), data, runtime=cfg.train,
                                run=run, tracker=tracker, storage_path=cfg.storage_path,
                                total_steps=cfg.train.steps, warmup_steps=min(cfg.train.warmup_steps, cfg.train.steps),
                                global_batch_size=cfg.train.global_batch_size, cpus_per_worker=cpus_per_worker,
                                seed=seed, callbacks=callbacks)
        result = {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
                  "train_images_per_s": summary["train_images_per_s"], "final_loss": summary["final_loss"],
                  "checkpoint": summary["checkpoint"], "pseudo_label_miou": stats.get("miou"),
                  "pseudo_label_miou_kept": stats.get("miou_kept"),
                  "pseudo_label_mean_confidence": stats["mean_confidence"],
                  "pseudo_label_kept_fraction": stats["kept_fraction"], "pseudo_label_images": stats["images"],
                  "pseudo_label_images_per_s": labelled["images_per_s"], "pseudo_label_cache": labelled["cache_dir"],
                  "pseudo_label_chunks_labelled": labelled["chunks_labelled"],
                  **evaluate_pair(cfg, tracker, summary["checkpoint"], str(parent.checkpoint), val_reader)}
        tracker.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float))
                             and not isinstance(v, bool) and v is not None}, step=summary["steps"])
        result.update(parent_run_id=parent.run_id, parent_checkpoint=str(parent.checkpoint), run_name=run.name,
                      seconds=time.perf_counter() - started)
        tracker.log_metrics({"seconds": result["seconds"]})
    result["mlflow_run_id"] = tracker.run_id
    return result


def evaluate_pair(cfg: SelfTrainConfig, tracker, plus_checkpoint: str, parent_checkpoint: str, reader) -> dict:
    """S-Seg+ and its S-Seg parent on the target's labelled split, every protocol, the same settings;
    S-Seg+ logs ``eval.*``, S-Seg ``parent_eval.*`` (both in this run: the compare view shows the pair)."""
    from pipelines.stages.evaluate_protocols import background_threshold

    headline = cfg.eval.headline or ("all_classes" if reader.background_index is None else "with_background")
    protocols = list(dict.fromkeys([headline, *cfg.eval.protocols]))
    segment = segment_settings(cfg.target.dataset, cfg.eval.segment)
    bg_thresh, bg_source = background_threshold(cfg.target.dataset, segment)
    tracker.log_params({"eval.headline": headline, "eval.bg_thresh": bg_thresh, "eval.bg_thresh_source": bg_source})
    reports = evaluate_protocols(
        tracker, [("sseg_plus", plus_checkpoint, "eval"), ("sseg", parent_checkpoint, "parent_eval")],
        {"name": cfg.target.dataset, "root": cfg.target.root, "split": cfg.target.val_split}, reader, protocols,
        {**segment, "bg_thresh": bg_thresh},
        background_classes=background_classes_of(cfg.target.dataset, cfg.target.background_classes),
        max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors, gpus_per_actor=cfg.eval.gpus_per_actor,
        batch_size=cfg.eval.batch_size, pictures=cfg.eval.pictures)
    result: dict = {"eval_protocol": headline, "eval_images": reports["sseg_plus"][headline]["images"],
                    "sseg_plus_eval_images_per_s": reports["sseg_plus"][protocols[-1]]["images_per_s"]}
    for name in protocols:
        plus, sseg = reports["sseg_plus"][name]["miou"], reports["sseg"][name]["miou"]
        result.update({f"sseg_plus_miou_{name}": plus, f"sseg_miou_{name}": sseg, f"gain_{name}": plus - sseg})
        tracker.log_metrics({f"gain_{name}": plus - sseg})
        print(f"[sseg] {cfg.target.dataset} {name}: S-Seg {100 * sseg:.1f} → S-Seg+ {100 * plus:.1f} mIoU "
              f"({100 * (plus - sseg):+.1f})", flush=True)
    result.update(sseg_miou=result[f"sseg_miou_{headline}"], sseg_plus_miou=result[f"sseg_plus_miou_{headline}"],
                  gain=result[f"gain_{headline}"])
    tracker.log_metrics({"sseg_miou": result["sseg_miou"], "sseg_plus_miou": result["sseg_plus_miou"],
                         "gain": result["gain"]})
    return result
