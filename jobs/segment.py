"""Segment any images with any class names.

    python jobs/segment.py --checkpoint CKPT --classes "cat,dog,grass" IMAGE [IMAGE ...] [--out DIR]

CKPT is a checkpoint path or an MLflow run id. A class may list several concepts separated by ';'
("person;people;man"); --classes may also name a YAML/JSON file of class definitions. Writes, per image,
<name>_labels.png (palette PNG, pixel = class id, 0 = background) and <name>_overlay.png (overlay + legend).
Images that cannot be read are skipped and counted. Last stdout line: JSON with counts and paths.
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import argparse
import logging
import time
from pathlib import Path

import numpy as np

import sseg  # noqa: F401
from sseg.cli import run_job
from sseg.config import parse_overrides
from sseg.errors import ConfigError, DataError
from sseg.tracking import STAGE_TAG, LINEAGE_TAG, Tracker, emit_result, resolve_checkpoint

log = logging.getLogger("jobs.segment")


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, labels: np.ndarray,
                  class_names: list[str]) -> tuple[Path, Path]:
    from PIL import Image

    from sseg import viz

    palette = viz.voc_palette()
    label_png = Image.fromarray(labels.astype(np.uint8), mode="P")
    label_png.putpalette(palette.reshape(-1).tolist())
    label_path = out_dir / f"{stem}_labels.png"
    label_png.save(label_path)
    blended = viz.overlay(image, labels, 0.5, palette)
    key = viz.legend(class_names, palette, present=np.unique(labels).tolist())
    height = max(blended.shape[0], key.shape[0])
    canvas = np.full((height, blended.shape[1] + key.shape[1], 3), 255, np.uint8)
    canvas[:blended.shape[0], :blended.shape[1]] = blended
    canvas[:key.shape[0], blended.shape[1]:] = key
    overlay_path = out_dir / f"{stem}_overlay.png"
    viz.save_png(overlay_path, canvas)
    return label_path, overlay_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint path or MLflow run id")
    parser.add_argument("--classes", required=True, help='"cat,dog,grass", "person;people,...", or a file')
    parser.add_argument("--out", default="outputs/segment", help="output directory")
    parser.add_argument("--log-mlflow", action="store_true", help="log the overlays to an MLflow run")
    parser.add_argument("images", nargs="+", help="image files (any size; jpg/png/webp/...)")
    parser.add_argument("--set", nargs="*", default=[], metavar="field=value",
                        help="SegmentConfig overrides, e.g. bg_thresh=0.5 sliding=false")
    args = parser.parse_args(argv)

    from sseg.data.decode import decode_image
    from sseg.inference import SegmentConfig, Segmenter
    from sseg.prompts import parse_class_definitions
    from sseg.training import model_from_checkpoint

    classes = parse_class_definitions(args.classes)  # empty / duplicate names: one-line ConfigError
    try:
        cfg = SegmentConfig.model_validate(parse_overrides(args.set))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"segment settings: {str(exc).splitlines()[0]}") from None
    checkpoint = resolve_checkpoint(args.checkpoint)
    model, state = model_from_checkpoint(checkpoint)
    segmenter = Segmenter(model, _classifier(model, classes, cfg), cfg,
                          background_index=0 if cfg.bg_mode == "threshold" else None)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = None
    if args.log_mlflow:
        tags = {STAGE_TAG: "segment"}
        if (state.get("extra") or {}).get("mlflow_run_id"):
            tags[LINEAGE_TAG] = state["extra"]["mlflow_run_id"]
        tracker = Tracker("sseg-segment", tags=tags)
    written, skipped = [], {}
    started = time.perf_counter()
    for path in args.images:
        try:
            image = decode_image(Path(path).read_bytes())
        except (OSError, DataError) as exc:
            reason = "unreadable" if isinstance(exc, OSError) else "undecodable"
            skipped[reason] = skipped.get(reason, 0) + 1
            print(f"warning: skipping {path}: {str(exc).splitlines()[0]}", flush=True)
            continue
        labels = segmenter.predict(image, return_scores=False).labels
        label_path, overlay_path = write_outputs(out_dir, Path(path).stem, image, labels,
                                                 segmenter.class_names)
        written.append(str(overlay_path))
        print(f"[sseg] {path}: {image.shape[1]}x{image.shape[0]} → {overlay_path}", flush=True)
        if tracker is not None:
            tracker.log_artifact(overlay_path, "overlays")
    if tracker is not None:
        tracker.end()
    emit_result({"images": len(written), "skipped": skipped, "out_dir": str(out_dir),
                 "class_names": segmenter.class_names, "outputs": written,
                 "seconds": time.perf_counter() - started,
                 "mlflow_run_id": tracker.run_id if tracker else None})
    return 0 if written or not args.images else 2


def _classifier(model, classes, cfg):
    from sseg.inference import build_text_classifier

    return build_text_classifier(model, classes, cfg.templates)


if __name__ == "__main__":
    run_job(main)
