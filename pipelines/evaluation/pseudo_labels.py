"""What S-Seg+ reports about its pseudo-labels: confidence, kept pixels, their mIoU against the train
split's truth (when it has labels), per-class IoU and the class histogram."""

from __future__ import annotations

import math


def log_pseudo_label_stats(tracker, labelled: dict, stats: dict, class_names: list[str]) -> None:
    import matplotlib.pyplot as plt

    metrics = {"pseudo_labels.mean_confidence": stats["mean_confidence"],
               "pseudo_labels.kept_fraction": stats["kept_fraction"], "pseudo_labels.images": stats["images"],
               "pseudo_labels.images_per_s": labelled["images_per_s"],
               "pseudo_labels.chunks_labelled": labelled["chunks_labelled"]}
    if "miou" in stats:
        metrics.update({"pseudo_labels.miou": stats["miou"], "pseudo_labels.miou_kept": stats["miou_kept"],
                        "pseudo_labels.pixel_accuracy": stats["pixel_accuracy"]})
        metrics.update({f"pseudo_labels.iou.{n}": v for n, v in zip(class_names, stats["per_class_iou"])
                        if not math.isnan(v)})
    tracker.log_metrics(metrics)
    tracker.log_dict({**stats, "cache": labelled}, "pseudo_labels/statistics.json")
    pixels = max(1, sum(stats["class_histogram"].values()))
    figure, axis = plt.subplots(figsize=(max(6, 0.45 * len(class_names)), 3.5))
    axis.bar(class_names, [stats["class_histogram"][n] / pixels for n in class_names], label="all pixels")
    axis.bar(class_names, [stats["class_histogram_kept"][n] / pixels for n in class_names],
             label=f"confidence ≥ {stats['confidence_threshold']:g}")
    axis.set_ylabel("share of pixels")
    axis.set_title("pseudo-label class histogram")
    axis.tick_params(axis="x", rotation=60)
    axis.legend()
    figure.tight_layout()
    tracker.log_figure(figure, "pseudo_labels/class_histogram.png")
    plt.close(figure)
    line = (f"[sseg] pseudo-labels: {stats['images']} images, mean confidence {stats['mean_confidence']:.3f}, "
            f"{100 * stats['kept_fraction']:.1f}% of pixels kept at {stats['confidence_threshold']:g}")
    if "miou" in stats:
        line += f", mIoU vs the train split's truth {100 * stats['miou']:.1f} (kept pixels {100 * stats['miou_kept']:.1f})"
    print(line, flush=True)
