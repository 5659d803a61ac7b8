"""The TagCLIP run: checks (pipelines/inputs/tagclip.py) -> labelled views of the train split (unseen pixels
masked in the step, images kept) -> the trainer with the TagCLIP step -> seen / unseen evaluation, in one
MLflow run whose lineage tag is the S-Seg run the VLM comes from. ``run_ablation``: zero-shot S-Seg and
the decoder variants (paper Table 1 + a query self-attention control + the all-classes upper bound), one
MLflow run each under one parent run, and the comparison table."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pipelines.evaluation.tagclip import evaluate_tagclip
from pipelines.inputs.tagclip import Prepared, prepare
from pipelines.io.runtime import init_ray
from pipelines.tracking import tracked_run
from pipelines.evaluation.report import save_table
from pipelines.training import trainer
from schemas.configs import TagCLIPConfig
from sseg.config import flatten

STAGE = "tagclip"


def build_step(config: dict, *, device: torch.device, rank: int, world_size: int, total_steps: int,
               warmup_steps: int):
    """The step builder: ``config`` = {"job": TagCLIPConfig as JSON, "resolved": the run's model config, VLM
    checkpoint and splits}."""
    from sseg.tagclip.build import build_tagclip_model, vlm_model_config
    from sseg.tagclip.losses import LossWeights
    from sseg.tagclip.splits import ClassSplit
    from sseg.tagclip.step import TagCLIPStep

    cfg = TagCLIPConfig.model_validate(config["job"])
    resolved = config["resolved"]
    t = cfg.train
    torch.manual_seed(t.seed)
    model_config, loaded = vlm_model_config(resolved["model_config"], resolved["vlm_checkpoint"])
    model = build_tagclip_model(model_config, loaded)
    weights = LossWeights(t.weight_focal, t.weight_dice, t.weight_trusty, t.trusty_loss)
    bf16 = t.bf16 == "on" or (t.bf16 == "auto" and device.type == "cuda")
    return TagCLIPStep.create(model, model_config, ClassSplit(**resolved["train_split"]), cfg.data.templates,
                              device=device, lr=t.lr, weight_decay=t.weight_decay, head_mult=t.head_lr_mult,
                              prompt_mult=t.prompt_lr_mult, total_steps=total_steps, warmup_steps=warmup_steps,
                              poly_power=t.poly_power, min_lr=t.min_lr, weights=weights, grad_clip=t.grad_clip,
                              bf16=bf16, vision_mult=t.vision_lr_mult)


def run_tagclip(cfg: TagCLIPConfig, resume: str | None = None, *, extra_tags: dict | None = None,
                prepared: Prepared | None = None, callbacks=()) -> dict:
    from dataclasses import asdict

    from pipelines.stages.tagclip_data import tagclip_dataset

    prep = prepared or prepare(cfg)
    run = trainer.run_identity(STAGE, cfg, resume, extra={"parent": str(prep.parent_run_id or prep.vlm_checkpoint)})
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    trainer.check_gpus(cfg.train)
    cpus_per_worker = trainer.plan_cpus(cfg.train)
    with trainer.open_run(run, cfg, parent_run_id=cfg.tracking.parent_run_id or prep.parent_run_id,
                          tags={**prep.tags, **(extra_tags or {})}) as tracker:
        tracker.log_dict({"seen": list(prep.train_split.seen_names), "unseen": list(prep.split.unseen_names),
                          "ignored": [prep.class_names[i] for i in prep.split.ignored],
                          "training_text": prep.training_text}, "split.json")
        tracker.log_params({"derived.vlm_checkpoint": str(prep.vlm_checkpoint),
                            "derived.num_train_images": len(prep.train_paths[0])})
        seed = trainer.data_seed(cfg.train)
        dataset = tagclip_dataset(*prep.train_paths, crop=cfg.data.crop_size, scale=cfg.data.scale,
                                  num_classes=len(prep.class_names), seed=cfg.train.seed,
                                  label_transform=prep.label_transform, deterministic=seed is not None)
        print(f"[sseg] TagCLIP run {run.name}: {cfg.train.steps} steps of {cfg.train.batch_size} images, seen "
              f"{len(prep.train_split.seen)} / unseen {len(prep.train_split.unseen)} classes; MLflow run "
              f"{tracker.run_id}", flush=True)
        resolved = {"model_config": prep.model_config, "vlm_checkpoint": prep.vlm_checkpoint,
                    "train_split": asdict(prep.train_split)}
        summary = trainer.train(build_step, {"job": cfg.model_dump(mode="json"), "resolved": resolved}, dataset,
                                runtime=cfg.train, run=run, tracker=tracker, storage_path=cfg.storage_path,
                                total_steps=cfg.train.steps, warmup_steps=cfg.train.warmup_steps,
                                global_batch_size=cfg.train.batch_size, cpus_per_worker=cpus_per_worker,
                                seed=seed, callbacks=callbacks)
        summary.pop("final_metrics")
        checkpoint = Path(summary["checkpoint"])
        summary.update(evaluate_tagclip(cfg, prep, checkpoint, tracker,
                                        trusty=bool(prep.model_config["trusty_token"])))
    summary["mlflow_run_id"] = tracker.run_id
    return summary


# ----------------------------------------------------------------------------- ablation

# (row, model fields, trained on all classes); the paper's Table 1 rows (a), (b), (c), (d), the control
# "query self-attention without the token" and the upper bound. The rows without inference weighting and
# without the zero-shot ensemble are TagCLIP's trained model evaluated under those rules (one training).
NO_WEIGHTING = "TagCLIP without inference weighting"
NO_ENSEMBLE = "TagCLIP without the zero-shot ensemble (the paper's inference)"


def inference_rows(model: dict) -> list[tuple[str, str, dict]]:
    """(row, variant, model fields): TagCLIP's trained model evaluated under other inference rules."""
    rows = [(NO_WEIGHTING, "no_weighting", {"inference_weighting": False})]
    if model.get("zero_shot_ensemble", 0.0) > 0:
        rows.append((NO_ENSEMBLE, "no_ensemble", {"zero_shot_ensemble": 0.0}))
    return rows


ABLATION_ROWS: list[tuple[str, dict, bool]] = [
    ("baseline decoder (ZegCLIP)", dict(trusty_token=False, trusty_learner=False, inference_weighting=False), False),
    ("+ trusty token, no trusty learner", dict(trusty_token=True, trusty_learner=False, inference_weighting=False),
     False),
    ("query self-attention, no token (control)",
     dict(trusty_token=False, trusty_learner=True, inference_weighting=False), False),
    ("TagCLIP", dict(trusty_token=True, trusty_learner=True, inference_weighting=True), False),
    ("baseline decoder on all classes (upper bound)",
     dict(trusty_token=False, trusty_learner=False, inference_weighting=False), True),
]
COLUMNS = (("miou_seen", "mIoU(S)"), ("miou_unseen", "mIoU(U)"), ("hiou", "hIoU"), ("pixel_accuracy", "pAcc"),
           ("unseen_as_seen", "unseen→seen"), ("trusty_auroc", "trusty AUROC"))


def ablation_table(rows: list[dict]) -> str:
    lines = ["| row | " + " | ".join(c for _, c in COLUMNS) + " | train s | MLflow run |",
             "| --- |" + " --- |" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = [f"{100 * r[k]:.1f}" if isinstance(r.get(k), float) and r[k] == r[k] else "" for k, _ in COLUMNS]
        seconds = f"{r['train_seconds']:.0f}" if r.get("train_seconds") else ""
        lines.append(f"| {r['row']} | " + " | ".join(cells) + f" | {seconds} | `{str(r['mlflow_run_id'])[:8]}…` |")
    return "\n".join(lines)


def _row(name: str, result: dict) -> dict:
    return {"row": name, **{k: result.get(k) for k, _ in COLUMNS}, "train_seconds": result.get("train_seconds"),
            "mlflow_run_id": result["mlflow_run_id"]}


def run_ablation(cfg: TagCLIPConfig) -> dict:
    """Every row as its own MLflow run under one parent run (every row's input checked before the first
    trains), the zero-shot S-Seg row (the VLM's own inference on the same classes), and the table."""
    from sseg.tagclip.build import with_model_fields

    configs = []
    for name, fields, all_classes in ABLATION_ROWS:
        row_cfg = cfg.model_copy(deep=True)
        row_cfg.model = {**cfg.model, **fields}
        row_cfg.train.all_classes = all_classes
        configs.append((name, row_cfg, prepare(row_cfg)))
    base = configs[0][2]
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.storage_path).resolve() / f"tagclip-ablation-{stamp}"
    with tracked_run(cfg.tracking.experiment, stage="tagclip-ablation", run_name=out.name,
                     parent_run_id=base.parent_run_id, tags={"sseg.split": base.tags["sseg.split"]},
                     params=flatten(cfg), config=cfg.model_dump(mode="json")) as parent:
        rows = []
        if cfg.vlm.kind == "sseg" and base.vlm_checkpoint:
            zero = evaluate_tagclip(cfg, base, base.vlm_checkpoint, parent, prefix="zero_shot", trusty=False,
                                    pictures=0)
            rows.append({"row": "zero-shot S-Seg (the VLM, its own inference)", **zero,
                         "mlflow_run_id": base.parent_run_id or "-" * 8})
        for i, (name, row_cfg, prep) in enumerate(configs):
            row_cfg.tracking.run_name = f"{out.name}-{i}"
            tags = {"mlflow.parentRunId": parent.run_id, "sseg.ablation_row": name}
            result = run_tagclip(row_cfg, prepared=prep, extra_tags=tags)
            rows.append(_row(name, result))
            others = inference_rows(row_cfg.model) if row_cfg.model["inference_weighting"] else []
            for row_name, variant, fields in others:  # the same trained model under another inference rule
                other = with_model_fields(result["checkpoint"], out / variant, **fields)
                with tracked_run(cfg.tracking.experiment, stage=STAGE, run_name=f"{out.name}-{i}-{variant}",
                                 parent_run_id=prep.parent_run_id, params=flatten(row_cfg),
                                 tags={**prep.tags, **tags, "sseg.ablation_row": row_name,
                                       "sseg.variant": f"tagclip_{variant}",
                                       "sseg.trained_in": result["mlflow_run_id"]}) as tracker:
                    found = evaluate_tagclip(row_cfg, prep, other, tracker)
                rows.insert(-1, _row(row_name, {**found, "mlflow_run_id": tracker.run_id}))
            for r in rows[-1 - len(others):]:
                print(f"[sseg] ablation row: {r['row']}: mIoU(S) {100 * r['miou_seen']:.1f} mIoU(U) "
                      f"{100 * r['miou_unseen']:.1f} hIoU {100 * r['hiou']:.1f}", flush=True)
        for j, r in enumerate(rows):
            parent.log_metrics({f"row{j}.{k}": r[k] for k, _ in COLUMNS if isinstance(r.get(k), float) and r[k] == r[k]})
        path = save_table(parent, out, "ablation", ablation_table(rows), rows)
    return {"rows": rows, "mlflow_run_id": parent.run_id, "table": str(path)}
