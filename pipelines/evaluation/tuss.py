"""TUSS's report: a classified split logged like every other evaluation (``report.log_report``: mIoU, per-class
IoU, the input | prediction | truth grid painted from the cached masks), plus mask F1, the pseudo-labels'
quality before and after GLCC, the chosen hyperparameters and the seconds per GLCC step; and the table."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq

from pipelines.evaluation.report import log_report
from pipelines.io.tuss_cache import TussCache
from pipelines.stages.pseudo_labels import decode_png
from pipelines.stages.tuss_embed import NO_MASK
from pipelines.tracking import Tracker
from sseg.tuss.table import MaskTable, pixel_confusion


def painted_examples(cache: TussCache, reader, table: MaskTable, predicted: np.ndarray, count: int) -> list:
    """``(key, image, prediction, truth)`` of the first ``count`` classified images: each mask painted with
    its class (``sseg.tuss.paint``'s rule, from the cached segment ids)."""
    from sseg.tuss.masks import segment_ids_to_masks
    from sseg.tuss.paint import paint

    wanted = set(table.image_ids[:count])
    index = {k: i for i, k in enumerate(reader.keys)}
    first = np.searchsorted(table.image_index, np.arange(len(table.image_ids)))
    out = []
    for path in cache.files():
        for row in pq.read_table(path, columns=["key", "segments_png"]).to_pylist():
            if row["key"] not in wanted:
                continue
            i = table.image_ids.index(row["key"])
            masks, _ = segment_ids_to_masks(decode_png(row["segments_png"]).astype(np.int64), no_mask_value=NO_MASK)
            classes = predicted[first[i]:first[i] + len(masks)]
            _, image, label = reader[index[row["key"]]]
            out.append((row["key"], image, paint(masks, classes), label))
        if len(out) >= len(wanted):
            break
    return sorted(out, key=lambda e: table.image_ids.index(e[0]))


def log_setting(tracker: Tracker, result: dict, val: MaskTable, class_names: list[str], *, world: bool,
                examples: list, images_per_s: float, prefix: str = "eval") -> dict:
    """Everything about one classified split under ``prefix``; returns the headline figures."""
    k = len(class_names)
    confusion = pixel_confusion(val, result["predicted"], k)
    report = log_report(tracker, {"confusion": confusion, "images_per_s": images_per_s, "examples": examples,
                                  "images": len(val.image_ids), "skipped": 0}, class_names, prefix=prefix,
                        world=world, json_name="val")
    extra = {k2: v for k2, v in result.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k2 != "miou" and math.isfinite(v)}
    tracker.log_metrics({f"{prefix}.{name}": value for name, value in extra.items()})
    if result.get("trials"):
        tracker.log_dict(result["trials"], f"{prefix}/tuning_trials.json")
    return {"miou": report["miou"], "f1": result["f1"], **{n: report[n] for n in ("miou_things", "miou_stuff")
                                                              if n in report}, **extra}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``| row | <column> F1 / mIoU | … |`` with the rows' ``{column: {"f1", "miou"}}`` in percent."""
    head = "| row | " + " | ".join(f"{c} F1 / mIoU" for c in columns) + " |"
    lines = [head, "|" + " --- |" * (len(columns) + 1)]
    for row in rows:
        cells = []
        for c in columns:
            cell = row["cells"].get(c)
            cells.append("–" if cell is None else f"{100 * cell['f1']:.1f} / {100 * cell['miou']:.1f}")
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
