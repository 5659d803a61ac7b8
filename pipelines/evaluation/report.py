"""The one evaluation report: a checkpoint evaluated on a labelled split (Ray Data batch inference) and
logged to its MLflow run — mIoU, pixel accuracy, images/s, per-class IoU (metrics, a bar chart and a JSON
artifact), the thing/stuff summary on the world and the input | prediction | truth picture grid. Every
stage and ``jobs/evaluate.py`` report through :func:`log_report` (one protocol) or
:func:`evaluate_protocols` (several protocols, several checkpoints on the same settings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pipelines.stages.batch_inference import EvalVariant, run_evaluations
from pipelines.stages.evaluate_protocols import Protocol, build_protocol
from pipelines.tracking import Tracker
from sseg.errors import ConfigError

# inference settings on the 64-px world (no sliding window, the demo's templates); a config's own win
WORLD_DEFAULT_SEGMENT = {"short_side": 64, "sliding": False, "window": 64, "stride": 64, "templates": "clip7"}


def segment_settings(dataset: str, overrides: dict) -> dict:
    """The inference settings of a dataset: the world's defaults (other datasets: SegmentConfig's), then
    the config's ``overrides``."""
    return {**(WORLD_DEFAULT_SEGMENT if dataset == "world" else {}), **overrides}


def background_classes_of(dataset: str, given: list[str] | None) -> list[str] | None:
    """Classes counted as background by the with_background protocol on a dataset without a background
    class: the given ones; on the world its stuff classes (VOC's background holds stuff too)."""
    if given is None and dataset == "world":
        from sseg.world import STUFF_CLASSES

        return list(STUFF_CLASSES)
    return given


def thing_stuff_summary(class_names: list[str], per_class_iou) -> dict:
    """Mean IoU over the world's thing and stuff classes and how many things reach 0.10 IoU."""
    from sseg.world import STUFF_CLASSES, THING_CLASSES

    iou = dict(zip(class_names, (float(v) for v in per_class_iou)))
    things = [iou[c] for c in THING_CLASSES if c in iou and np.isfinite(iou[c])]
    stuff = [iou[c] for c in STUFF_CLASSES if c in iou and np.isfinite(iou[c])]
    return {"miou_things": float(np.mean(things)) if things else float("nan"),
            "miou_stuff": float(np.mean(stuff)) if stuff else float("nan"),
            "things_iou_ge_0.1": int(sum(v >= 0.1 for v in things))}


def log_pictures(tracker: Tracker, examples: list, class_names: list[str], per_class_iou, prefix: str) -> None:
    """The input | prediction | truth grid, its legend and the per-class IoU bar chart under ``prefix/``."""
    import matplotlib.pyplot as plt

    from sseg import viz

    if examples:
        rows = [(image, pred, gt) for _, image, pred, gt in examples]
        # at least 4x and at least ~256 px per cell: a person can read a 64-px world image then
        upscale = max(4, -(-256 // max(1, max(r[0].shape[0] for r in rows))))
        tracker.log_image(viz.grid(rows, upscale=upscale), f"{prefix}/input_prediction_truth.png")
        tracker.log_image(viz.legend(class_names), f"{prefix}/legend.png")
    figure = viz.per_class_iou_bar_chart(class_names, per_class_iou, title=f"{prefix}: per-class IoU")
    tracker.log_figure(figure, f"{prefix}/per_class_iou.png")
    plt.close(figure)


def log_report(tracker: Tracker, out: dict, class_names: list[str], *, prefix: str = "eval",
               protocol: str | None = None, exclude=(), world: bool = False, json_name: str | None = None) -> dict:
    """Log one evaluation (``out``: one result of :func:`run_evaluations`) under ``prefix``: ``<prefix>.miou``,
    ``.pixel_accuracy``, ``.images_per_s`` (each ``_<protocol>`` with a protocol), the world's
    ``.miou_things`` / ``.miou_stuff`` / ``.things_iou_ge_0.1``, ``<prefix>.[<protocol>.]iou.<class>``,
    ``<prefix>/<json_name or protocol>.json`` and the pictures. Returns those figures (+ images, skipped,
    per_class_iou)."""
    metrics = out["confusion"].compute(exclude=list(exclude))
    per_class = metrics["per_class_iou"]
    summary = {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"],
               "images_per_s": out["images_per_s"]}
    if world:
        summary.update(thing_stuff_summary(class_names, per_class))
    suffix = f"_{protocol}" if protocol else ""
    tracker.log_metrics({f"{prefix}.{k}{suffix}": v for k, v in summary.items() if math.isfinite(v)})
    per_class_key = f"{prefix}.{protocol}.iou." if protocol else f"{prefix}.iou."
    tracker.log_metrics({per_class_key + n: float(v) for n, v in zip(class_names, per_class) if np.isfinite(v)})
    tracker.log_dict({"class_names": list(class_names),
                      "per_class_iou": [None if not np.isfinite(v) else float(v) for v in per_class],
                      "confusion": out["confusion"].matrix.tolist()}, f"{prefix}/{json_name or protocol}.json")
    log_pictures(tracker, out["examples"], class_names, per_class, f"{prefix}/{protocol}" if protocol else prefix)
    return {**summary, "images": out["images"], "skipped": out["skipped"], "per_class_iou": per_class}


def protocol_of(name: str, class_names: list[str], background_index: int | None,
                background_classes: list[str] | None) -> Protocol:
    """A protocol by name: with_background, without_background, or all_classes (every class a text query,
    no background: what pretraining reports; only on a dataset without a background class)."""
    if name == "all_classes":
        if background_index is not None:
            raise ConfigError("protocol all_classes needs a dataset without a background class")
        return build_protocol("without_background", class_names, None, None)
    return build_protocol(name, class_names, background_index, background_classes)


def evaluate_protocols(tracker: Tracker, models: list[tuple[str, str | Path, str]], dataset: dict, reader,
                       protocols: list[str], segment: dict, *, background_classes: list[str] | None,
                       max_images: int | None, num_actors: int, gpus_per_actor: float, batch_size: int,
                       pictures: int) -> dict[str, dict[str, dict]]:
    """Every checkpoint of ``models`` ((key, checkpoint, metric prefix)) on every protocol with the same
    ``segment`` settings (``bg_thresh`` included); ``dataset`` = {name, root, split}. Returns
    ``{key: {protocol: log_report(...) + bg_clamped_images}}``."""
    results: dict[str, dict[str, dict]] = {key: {} for key, _, _ in models}
    names = list(reader.class_names)
    runs, variants = [], []  # one pass scores every (protocol, model) pair
    for name in protocols:
        protocol = protocol_of(name, names, reader.background_index, background_classes)
        seg = {**segment, "bg_mode": protocol.bg_mode}
        for key, checkpoint, prefix in models:
            runs.append((name, protocol, key, prefix))
            variants.append(EvalVariant(checkpoint, seg, protocol.text_classes, protocol.background_index,
                                        protocol.label_map, mask_quality=False, keep_predictions=pictures))
    outs = run_evaluations(dataset, variants, max_images=max_images, num_actors=num_actors,
                           gpus_per_actor=gpus_per_actor, batch_size=batch_size)
    for (name, protocol, key, prefix), out in zip(runs, outs):
        report = log_report(tracker, out, protocol.report_names, prefix=prefix, protocol=name,
                            exclude=protocol.exclude, world=dataset["name"] == "world")
        if protocol.bg_mode == "threshold":
            report["bg_clamped_images"] = out["bg_clamped"]
            tracker.log_metrics({f"{prefix}.bg_clamped_images_{name}": out["bg_clamped"]})
        results[key][name] = report
    return results


def save_table(tracker: Tracker, out_dir: Path, name: str, markdown: str, data) -> Path:
    """A results table (ablation, comparison) printed, written as ``<name>.md`` + ``<name>.json`` into
    ``out_dir`` and logged as artifacts of ``tracker``'s run; returns the Markdown file."""
    print(markdown, flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(markdown + "\n")
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1, default=float))
    tracker.log_artifact(out_dir / f"{name}.md")
    tracker.log_artifact(out_dir / f"{name}.json")
    return out_dir / f"{name}.md"
