"""The TUSS run: checks (pipelines/inputs/tuss.py) → mask embeddings of both splits by Ray Data batch inference
into the resumable Parquet cache (pipelines/stages/tuss_embed.py) → classification on the cached embeddings
(sseg/tuss: supervision, tuning on a held-out slice of train, GLCC or its baselines) → painting and scoring
(pipelines/evaluation/tuss.py), in one MLflow run whose lineage tag is the VLM's run. ``run_table``: the
paper's Table 5 (probe / + DBA / + DBA + GLCC × full / semi / weak / open vocabulary), its Table 7 orders
and a label-noise study, one nested MLflow run per cell under one parent run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.evaluation.tuss import log_setting, markdown_table, painted_examples
from pipelines.inputs.tuss import Prepared, prepare
from pipelines.io.runtime import init_ray, require_gpus
from pipelines.io.tuss_cache import TussCache, read_table, tuss_identity
from pipelines.stages.tuss_embed import build_embedding_caches
from pipelines.evaluation.report import save_table
from pipelines.tracking import generated_run_name, tracked_run
from pipelines.training import trainer
from schemas.configs import TussConfig
from sseg.config import flatten
from sseg.tuss.config import EmbedConfig
from sseg.tuss.experiment import Setting, SplitData, run_setting

STAGE = "tuss"
BASELINE = {"sseg": "pooled", "clip": "maskclip"}  # MaskCLIP-style pooling (S-Seg: its own mask path)
DBA = {"sseg": "pooled_dba", "clip": "dba"}
KINDS = ("full", "semi", "weak", "open_vocabulary")
TABLE7 = {"LP": ("probe",), "IL": ("propagation",), "LP→IL": ("probe", "propagation"), "LP→LP": ("probe", "probe"),
          "IL→IL": ("propagation", "propagation"), "LP→IL→LP→IL": ("probe", "propagation", "probe", "propagation"),
          "IL→LP→IL→LP": ("propagation", "probe", "propagation", "probe")}
NOISE_RATES = (0.2, 0.4, 0.6)


def embed_splits(cfg: TussConfig, prep: Prepared, embed: EmbedConfig) -> tuple[SplitData, SplitData, list[dict]]:
    """Both splits' caches (built where unfinished, one Ray Data pass) and their tables with every mask's
    zero-shot scores."""
    from sseg.tuss.supervision import zero_shot_scores
    from sseg.tuss.vlm import text_classifier, vlm_logit_scale

    jobs = []
    for split, keys, truth in ((cfg.data.train_split, prep.train_keys, prep.train_truth),
                               (cfg.data.val_split, prep.val_keys, True)):
        identity = tuss_identity(vlm_file=prep.vlm_spec["checkpoint"], vlm_kind=prep.vlm_spec["kind"],
                                 masks=prep.masks_spec, embed=embed.model_dump(mode="json"), dataset=cfg.data.dataset,
                                 split=split, class_names=prep.class_names, keys=keys, chunk_size=cfg.data.chunk_size)
        cache = TussCache(TussCache.default_root(cfg.cache_dir, identity), identity).open()
        jobs.append((cache, {"name": cfg.data.dataset, "root": cfg.data.root, "split": split}, truth))
    infos = build_embedding_caches(jobs, vlm=prep.vlm_spec, embed=embed.model_dump(mode="json"),
                                   masks=prep.masks_spec, num_classes=len(prep.class_names),
                                   num_actors=cfg.pool.num_actors, gpus_per_actor=cfg.pool.gpus_per_actor,
                                   threads=cfg.threads)
    text = text_classifier(prep.vlm, prep.classes, cfg.data.templates)
    scale = cfg.classifier.zero_shot_scale or vlm_logit_scale(prep.vlm)
    out = []
    for (cache, _, truth), info in zip(jobs, infos):
        table, counts, _ = read_table(cache, with_truth=truth)
        scores = zero_shot_scores(table.embeddings, text.embeddings.cpu(), text.concept_to_class.tolist(), scale)
        out.append(SplitData(table, scores))
        info.update(counts=counts, cache=cache, masks=len(table))
    return out[0], out[1], infos


def setting_for(cfg: TussConfig, prep: Prepared, train: SplitData, kind: str, order: tuple[str, ...],
                noise_rate: float = 0.0, noise: str = "uniform") -> Setting:
    """The run's supervision ``kind`` over the training masks (semi: its labelled images; weak: each image's
    labels; full: optionally corrupted)."""
    from sseg.tuss.supervision import image_labels_from_names

    ids = train.table.image_ids
    return Setting(kind=kind, order=order, noise_rate=noise_rate, noise=noise, noise_seed=cfg.supervision.noise_seed,
                   noise_refill=cfg.supervision.noise_refill,
                   labeled_images=np.array([k in prep.labeled_keys for k in ids]) if kind == "semi" else None,
                   image_labels=image_labels_from_names([prep.image_labels[k] for k in ids], prep.class_names)
                   if kind == "weak" else None)


def classify(cfg: TussConfig, train: SplitData, val: SplitData, setting: Setting, num_classes: int,
             chosen: dict | None = None) -> dict:
    """``chosen``: propagation settings already chosen for this supervision (no search then)."""
    c = cfg.classifier
    glcc = c.glcc if chosen is None else c.glcc.model_copy(
        update={"propagation": c.glcc.propagation.model_copy(update=chosen)})
    return run_setting(setting, train, val, glcc, num_classes, tune=c.tune and chosen is None, grid=c.grid,
                       holdout_fraction=c.holdout_fraction, seed=c.seed)


def _log_embedding(tracker, split: str, info: dict) -> None:
    counts = dict(info["counts"])
    dropped = counts.pop("dropped_masks", 0)
    tracker.log_metrics({f"embed.{split}.images_per_s": info["images_per_s"], f"embed.{split}.masks": info["masks"],
                         f"embed.{split}.dropped_masks": dropped,
                         **{f"embed.{split}.images_{status}": n for status, n in counts.items()}})


def run_tuss(cfg: TussConfig, resume: str | None = None) -> dict:
    """One setting. ``resume`` (a run name or ``latest``): the stopped run's MLflow run is reopened and the
    embedding cache skips the chunks it finished; a changed config is refused."""
    import torch

    from sseg.data.datasets import build_dataset

    run = trainer.run_identity(STAGE, cfg, resume)
    prep = prepare(cfg)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.pool.gpus_per_actor, "pool.gpus_per_actor")
    torch.set_num_threads(cfg.threads)
    sup = cfg.supervision
    with trainer.open_run(run, cfg, parent_run_id=cfg.tracking.parent_run_id or prep.parent_run_id,
                          tags=prep.tags) as tracker:
        train, val, (train_info, val_info) = embed_splits(cfg, prep, cfg.embed)
        for split, info in (("train", train_info), ("val", val_info)):
            _log_embedding(tracker, split, info)
        print(f"[sseg] TUSS {sup.kind}: {len(train.table)} training masks ({len(train.table.image_ids)} images), "
              f"{len(val.table)} masks to classify; MLflow run {tracker.run_id}", flush=True)
        noise_model = cfg.classifier.glcc.noise_model
        if noise_model.kind != "none" and sup.kind == "full":
            print(f"[sseg] choosing the label-noise model ({noise_model.kind}, λ in {list(noise_model.lambdas)} or "
                  f"none) on the held-out training images, then GLCC through it", flush=True)
        setting = setting_for(cfg, prep, train, sup.kind, cfg.classifier.glcc.order, sup.noise_rate, sup.noise)
        result = classify(cfg, train, val, setting, len(prep.class_names))
        reader = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
        examples = painted_examples(val_info["cache"], reader, val.table, result["predicted"], cfg.pictures)
        summary = log_setting(tracker, result, val.table, prep.class_names, world=cfg.data.dataset == "world",
                              examples=examples, images_per_s=val_info["images_per_s"])
    return {**summary, "mlflow_run_id": tracker.run_id}


def _cell(cfg, prep, parent_id: str, name: str, data: tuple[SplitData, SplitData], setting: Setting,
          chosen: dict, method: str) -> dict:
    """One cell as a nested run. The propagation settings are searched once per embedding and supervision kind
    (its first cell with a propagation step; noisy labels count as a kind) and kept in ``chosen`` for its later
    cells (Table 7, the other noise rates)."""
    key = (method, "noisy" if setting.noise_rate > 0 else setting.kind)
    with tracked_run(cfg.tracking.experiment, stage=STAGE, run_name=f"{parent_id[:8]}-{name}",
                     parent_run_id=prep.parent_run_id,
                     tags={**prep.tags, "mlflow.parentRunId": parent_id, "sseg.table_cell": name,
                           "sseg.supervision": setting.kind, "sseg.embed": method}) as run:
        result = classify(cfg, *data, setting, len(prep.class_names), chosen.get(key))
        if "propagation" in setting.order and key not in chosen:
            chosen[key] = {k: result[k] for k in ("alpha", "k", "weight")}
        run.log_metrics({k: v for k, v in result.items() if isinstance(v, (int, float)) and np.isfinite(v)})
    print(f"[sseg] {name}: F1 {100 * result['f1']:.1f} mIoU {100 * result['miou']:.1f}", flush=True)
    return {k: v for k, v in result.items() if k not in ("predicted", "per_class_iou", "trials")}


def noise_classifiers(cfg: TussConfig) -> list[tuple[str, tuple[str, ...], TussConfig]]:
    """The noise study's rows: the probe and GLCC as configured, and GLCC with the VolMin noise model when the
    configuration has none (sseg/tuss/noise_model.py; the held-out likelihood may still choose no model)."""
    glcc = cfg.classifier.glcc
    rows = [("probe", ("probe",), cfg), ("GLCC", glcc.order, cfg)]
    if glcc.noise_model.kind == "none":
        volmin = glcc.model_copy(update={"noise_model": glcc.noise_model.model_copy(update={"kind": "volmin"})})
        rows.append(("GLCC + noise model", glcc.order, cfg.model_copy(update={
            "classifier": cfg.classifier.model_copy(update={"glcc": volmin})})))
    return rows


def run_table(cfg: TussConfig) -> dict:
    """Every cell as a nested run of one parent run; the tables printed and logged (markdown + JSON). Table 5's
    rows use the baseline and the DBA embedding (plus the configured one with GLCC when it is neither DBA);
    Table 7 and the noise study use the configured embedding (``embed.method``)."""
    import torch

    prep = prepare(cfg, kinds=KINDS)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    require_gpus(cfg.pool.gpus_per_actor, "pool.gpus_per_actor")
    torch.set_num_threads(cfg.threads)
    base, dba, own, glcc = BASELINE[cfg.vlm.kind], DBA[cfg.vlm.kind], cfg.embed.method, cfg.classifier.glcc.order
    rows = [(f"{base} + probe", base, ("probe",)), ("+ DBA + probe", dba, ("probe",)), ("+ DBA + GLCC", dba, glcc)]
    if own != dba:
        rows.append((f"{own} + GLCC (the configured embedding)", own, glcc))
    with tracked_run(cfg.tracking.experiment, stage="tuss-table", run_name=generated_run_name("tuss-table"),
                     parent_run_id=prep.parent_run_id, tags=prep.tags, params=flatten(cfg),
                     config=cfg.model_dump(mode="json")) as parent:
        data = {m: embed_splits(cfg, prep, cfg.embed.model_copy(update={"method": m}))[:2] for m in dict.fromkeys(
            (base, dba, own))}
        chosen: dict = {}

        def cell(name, method, kind, order, rate=0.0, noise="uniform", config=cfg):
            setting = setting_for(config, prep, data[method][0], kind, order, rate, noise)
            return _cell(config, prep, parent.run_id, name, data[method], setting, chosen, method)

        main_rows = [{"row": row, "cells": {k: cell(f"{row} [{k}]", method, k, order) for k in KINDS
                                            if k != "open_vocabulary" or "propagation" not in order}}
                     for row, method, order in rows]  # GLCC has nothing to train on without supervision
        order_rows = [{"row": name, "cells": {"weak": cell(f"order {name} [weak]", own, "weak", order)}}
                      for name, order in TABLE7.items()]
        noise_rows = [{"row": f"{name}, {noise} noise",
                       "cells": {f"{r:.0%}": cell(f"full {noise} noise {r:.0%} {name}", own, "full", order, r, noise,
                                                  config) for r in (0.0, *NOISE_RATES)}}
                      for noise in ("uniform", "confusion") for name, order, config in noise_classifiers(cfg)]
        tables = {"table5": markdown_table(main_rows, list(KINDS)), "table7": markdown_table(order_rows, ["weak"]),
                  "noise": markdown_table(noise_rows, [f"{r:.0%}" for r in (0.0, *NOISE_RATES)])}
        text = "\n\n".join(f"### {name}\n\n{t}" for name, t in tables.items())
        path = save_table(parent, Path(cfg.storage_path).resolve() / f"tuss-table-{parent.run_id[:8]}", "table",
                          text, {"main": main_rows, "orders": order_rows, "noise": noise_rows})
    return {"table": str(path), "mlflow_run_id": parent.run_id}
