"""The SemiVL run: checks (pipelines/inputs/semivl.py) → split → Ray Data rows (labelled + unlabelled) →
the trainer with the SemiVL step → sliding-window evaluation, in one MLflow run whose lineage tag is the
S-Seg run the VLM comes from. ``run_ablation``: the rows of SemiVL's Table 6 + supervised-only, one MLflow
run each under one parent run, and the comparison table."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.evaluation.report import log_report, save_table
from pipelines.inputs.semivl import Prepared, prepare
from pipelines.io.runtime import init_ray
from pipelines.stages.batch_inference import run_evaluation
from pipelines.tracking import tracked_run
from pipelines.training import trainer
from pipelines.training.semivl_step import build_semivl_step
from schemas.configs import SemiVLConfig
from sseg.config import flatten

STAGE = "semivl"


def run_semivl(cfg: SemiVLConfig, resume: str | None = None, *, extra_tags: dict | None = None,
               prepared: Prepared | None = None, callbacks=()) -> dict:
    from pipelines.stages.semivl_data import semivl_dataset
    from sseg.semivl.splits import write_split

    run = trainer.run_identity(STAGE, cfg, resume)
    prep = prepared or prepare(cfg)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    trainer.check_gpus(cfg.train)
    cpus_per_worker = trainer.plan_cpus(cfg.train)
    with trainer.open_run(run, cfg, parent_run_id=cfg.tracking.parent_run_id or prep.parent_run_id,
                          tags={**prep.tags, **(extra_tags or {})}) as tracker:
        split_dir = write_split(prep.split, run.dir / "splits" / cfg.data.dataset / str(len(prep.split.labeled)))
        tracker.log_artifact(split_dir / "labeled.txt", "splits")
        tracker.log_artifact(split_dir / "unlabeled.txt", "splits")
        tracker.log_dict(prep.classes, "class_definitions.json")
        if prep.guide_classes not in (None, prep.classes):
            tracker.log_dict(prep.guide_classes, "guidance_class_definitions.json")
        tracker.log_params({"derived.num_labeled": len(prep.split.labeled),
                            "derived.num_unlabeled": len(prep.split.unlabeled),
                            "derived.vlm_checkpoint": str(prep.vlm_checkpoint)})
        seed = trainer.data_seed(cfg.train)
        dataset = semivl_dataset(prep.labeled_paths, prep.unlabeled_paths, crop=cfg.data.crop_size,
                                 scale=cfg.data.scale, num_classes=len(prep.class_names), seed=cfg.train.seed,
                                 deterministic=seed is not None, label_transform=prep.label_transform,
                                 img_scale=cfg.data.img_scale)
        print(f"[sseg] SemiVL run {run.name}: {cfg.train.steps} steps of {cfg.train.batch_size} labelled + "
              f"{cfg.train.batch_size} unlabelled images ({len(prep.split.labeled)} labelled, "
              f"{len(prep.split.unlabeled)} unlabelled); MLflow run {tracker.run_id}", flush=True)
        resolved = {"model_config": prep.model_config, "vlm_kind": cfg.vlm.kind,
                    "vlm_checkpoint": prep.vlm_checkpoint, "classes": prep.classes,
                    "guide_classes": prep.guide_classes}
        summary = trainer.train(build_semivl_step, {"job": cfg.model_dump(mode="json"), "resolved": resolved},
                                dataset, runtime=cfg.train, run=run, tracker=tracker, storage_path=cfg.storage_path,
                                total_steps=cfg.train.steps, warmup_steps=cfg.train.warmup_steps,
                                global_batch_size=cfg.train.batch_size * cfg.train.num_workers,
                                cpus_per_worker=cpus_per_worker, seed=seed, callbacks=callbacks)
        summary.pop("final_metrics")
        if summary.get("train_images_per_s") is not None:  # the trainer counts the labelled images of a step
            views = 1 if cfg.train.supervised_only else 2
            summary["train_labelled_and_unlabelled_per_s"] = summary["train_images_per_s"] * views
        summary.update(evaluate_semivl(cfg, prep, Path(summary["checkpoint"]), tracker))
        tracker.log_metrics({k: v for k, v in summary.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=summary["steps"])
    summary["mlflow_run_id"] = tracker.run_id
    return summary


def segment_settings(cfg: SemiVLConfig, class_names: list[str]) -> dict:
    background = "background" in [c.lower() for c in class_names]
    return {"templates": cfg.data.templates, "bg_mode": "class" if background else "none",
            "short_side": cfg.eval.short_side, "sliding": True, "window": cfg.eval.window,
            "stride": cfg.eval.stride}


def evaluate_semivl(cfg: SemiVLConfig, prep: Prepared, checkpoint_dir: Path, tracker) -> dict:
    dataset = {"name": cfg.data.dataset, "root": cfg.data.root, "split": cfg.data.val_split}
    result = run_evaluation(checkpoint_dir, dataset, segment_settings(cfg, prep.class_names), prep.classes,
                            max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors,
                            batch_size=cfg.eval.batch_size, keep_predictions=8, mask_quality=False)
    report = log_report(tracker, result, prep.class_names, world=cfg.data.dataset == "world", json_name="val")
    out = {k: report[k] for k in ("miou", "pixel_accuracy", "miou_things", "miou_stuff", "things_iou_ge_0.1")
           if k in report}
    out.update(eval_images=result["images"], eval_images_per_s=result["images_per_s"])
    tracker.log_metrics({"eval.eval_images": out["eval_images"], "eval.eval_images_per_s": out["eval_images_per_s"]})
    return out


# ----------------------------------------------------------------------------- ablation (paper Table 6)

ABLATION_ROWS: list[tuple[str, dict, bool]] = [
    # (row, components, supervised_only)
    ("UniMatch baseline", dict(vl_init=False, spatial_ft=False, language_decoder=False, guidance=False,
                               class_definitions=False), False),
    ("+ VL init", dict(vl_init=True, spatial_ft=False, language_decoder=False, guidance=False,
                       class_definitions=False), False),
    ("+ spatial FT", dict(vl_init=True, spatial_ft=True, language_decoder=False, guidance=False,
                          class_definitions=False), False),
    ("+ language decoder", dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=False,
                                class_definitions=False), False),
    ("+ guidance", dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=True,
                        class_definitions=False), False),
    ("+ class definitions (SemiVL)", dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=True,
                                          class_definitions=True), False),
    ("supervised only (SemiVL model, labelled images alone)",
     dict(vl_init=True, spatial_ft=True, language_decoder=True, guidance=False, class_definitions=True), True),
]


def ablation_table(rows: list[dict]) -> str:
    lines = ["| row | mIoU | thing mIoU | stuff mIoU | train s | MLflow run |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def pct(key):
            v = r.get(key)
            return "" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"
        lines.append(f"| {r['row']} | {pct('miou')} | {pct('miou_things')} | {pct('miou_stuff')} | "
                     f"{r.get('train_seconds', 0):.0f} | `{r['mlflow_run_id'][:8]}…` |")
    return "\n".join(lines)


def run_ablation(cfg: SemiVLConfig) -> dict:
    """Every row of ABLATION_ROWS as its own MLflow run (``mlflow.parentRunId`` = one parent run), the
    zero-shot mIoU of the VLM the rows start from, and the comparison table (printed, logged)."""
    configs = []
    for name, components, supervised in ABLATION_ROWS:
        row_cfg = cfg.model_copy(deep=True)
        # the rows with class definitions use them as the config does (world default and paper: "guidance")
        use = (cfg.components.class_definitions or "guidance") if components["class_definitions"] else False
        row_cfg.components = row_cfg.components.model_validate({**components, "class_definitions": use})
        row_cfg.train.supervised_only = supervised
        configs.append((name, row_cfg, prepare(row_cfg)))  # every row's input checked before the first runs
    base = configs[-2][2]
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with tracked_run(cfg.tracking.experiment, stage="semivl-ablation", run_name=f"semivl-ablation-{stamp}",
                     parent_run_id=base.parent_run_id, tags=base.tags, params=flatten(cfg),
                     config=cfg.model_dump(mode="json")) as parent:
        rows = []
        if cfg.vlm.kind == "sseg" and base.vlm_checkpoint:
            zero = zero_shot_miou(cfg, base)
            parent.log_metrics({"zero_shot_miou": zero})
            rows.append({"row": "zero-shot S-Seg (the VLM the rows start from, its own inference)",
                         "miou": zero, "mlflow_run_id": base.parent_run_id or "-" * 8})
        for i, (name, row_cfg, prep) in enumerate(configs):
            row_cfg.tracking.run_name = f"semivl-ablation-{stamp}-{i}"
            result = run_semivl(row_cfg, prepared=prep,
                                extra_tags={"mlflow.parentRunId": parent.run_id, "sseg.ablation_row": name})
            rows.append({"row": name, **{k: result.get(k) for k in ("miou", "miou_things", "miou_stuff",
                                                                     "train_seconds", "mlflow_run_id")}})
            parent.log_metrics({f"row{i}.miou": result["miou"]})
            print(f"[sseg] ablation row {i}: {name}: mIoU {100 * result['miou']:.1f}", flush=True)
        path = save_table(parent, Path(cfg.storage_path).resolve() / f"semivl-ablation-{stamp}", "ablation",
                          ablation_table(rows), rows)
    return {"rows": rows, "mlflow_run_id": parent.run_id, "table": str(path)}


def zero_shot_miou(cfg: SemiVLConfig, prep: Prepared) -> float:
    """Open-vocabulary mIoU of the S-Seg checkpoint itself (mask-classification inference) on the same
    val split, class names and templates as the SemiVL rows."""
    dataset = {"name": cfg.data.dataset, "root": cfg.data.root, "split": cfg.data.val_split}
    names = {n: [n] for n in prep.class_names}
    result = run_evaluation(prep.vlm_checkpoint, dataset, segment_settings(cfg, prep.class_names), names,
                            max_images=cfg.eval.max_images, num_actors=cfg.eval.num_actors,
                            batch_size=cfg.eval.batch_size, mask_quality=False)
    return float(result["confusion"].compute()["miou"])
