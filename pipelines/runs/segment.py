"""The segment run: any images, any class names, one label PNG + one overlay per image."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from pipelines.lineage import resolve_checkpoint
from pipelines.tracking import tracked_run
from schemas.configs import SegmentJobConfig
from sseg.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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


def run_segment(cfg: SegmentJobConfig) -> dict:
    from sseg.checkpoints import model_from_checkpoint
    from sseg.data.decode import decode_image
    from sseg.inference import SegmentConfig, Segmenter, build_text_classifier
    from sseg.prompts import parse_class_definitions

    if not cfg.checkpoint:
        raise ConfigError("config field 'checkpoint' is required (a checkpoint path or an MLflow run id)")
    if cfg.classes is None:
        raise ConfigError("config field 'classes' is required (e.g. \"cat,dog,grass\")")
    if not cfg.images:
        raise ConfigError("no images to segment: give image paths (jobs/segment.py ... photo.jpg) or images=[...]")
    classes = parse_class_definitions(cfg.classes)  # empty / duplicate names: one-line ConfigError
    try:
        seg_cfg = SegmentConfig.model_validate(cfg.segment)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"segment settings: {str(exc).splitlines()[0]}") from None
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    model, state = model_from_checkpoint(checkpoint, segmenting=True)
    segmenter = Segmenter(model, build_text_classifier(model, classes, seg_cfg.templates), seg_cfg,
                          background_index=0 if seg_cfg.bg_mode == "threshold" else None)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = (tracked_run(cfg.tracking.experiment, stage="segment", run_name=cfg.tracking.run_name,
                           parent_run_id=(state.get("extra") or {}).get("mlflow_run_id"))
               if cfg.log_mlflow else nullcontext(None))
    written, skipped = [], {}
    started = time.perf_counter()
    with context as tracker:
        for path in cfg.images:
            try:
                image = decode_image(Path(path).read_bytes())
            except (OSError, DataError) as exc:
                reason = "unreadable" if isinstance(exc, OSError) else "undecodable"
                skipped[reason] = skipped.get(reason, 0) + 1
                print(f"warning: skipping {path}: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
                continue
            labels = segmenter.predict(image, return_scores=False).labels
            _, overlay_path = write_outputs(out_dir, Path(path).stem, image, labels, segmenter.class_names)
            written.append(str(overlay_path))
            print(f"[sseg] {path}: {image.shape[1]}x{image.shape[0]} → {overlay_path}", file=sys.stderr, flush=True)
            if tracker is not None:
                tracker.log_artifact(overlay_path, "overlays")
    return {"images": len(written), "skipped": skipped, "out_dir": str(out_dir),
            "class_names": segmenter.class_names, "outputs": written, "checkpoint_kind": state["kind"],
            "seconds": time.perf_counter() - started, "mlflow_run_id": tracker.run_id if tracker else None}
