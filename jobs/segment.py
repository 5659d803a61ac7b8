"""Segment any images with any class names.

    python jobs/segment.py --checkpoint CKPT --classes "cat,dog,grass" IMAGE [IMAGE ...] [--out DIR]
    python jobs/segment.py --config seg.yaml segment.bg_thresh=0.5 images=[a.jpg,b.jpg]

CKPT is a checkpoint path or an MLflow run id (any checkpoint kind that can segment). A class may list
several concepts separated by ';' ("person;people;man"); --classes may also name a YAML/JSON file of class
definitions. Positional arguments with '=' are config overrides (``segment.window=448``), the others are
images. Writes, per image, <name>_labels.png (palette PNG, pixel = class id, 0 = background) and
<name>_overlay.png (overlay + legend). Unreadable images are skipped and counted. Last stdout line: JSON.
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job
from pipelines.runs.segment import run_segment
from pipelines.tracking import emit_result
from schemas.configs import SegmentJobConfig


def main(argv=None) -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint path or MLflow run id (= checkpoint=...)")
    parser.add_argument("--classes", help='"cat,dog,grass", "person;people,...", or a file (= classes=...)')
    parser.add_argument("--out", help="output directory (= out=...)")
    parser.add_argument("--log-mlflow", action="store_true", help="log the overlays to an MLflow run")
    parser.add_argument("--set", nargs="*", default=[], metavar="field=value", help="= segment.field=value")
    args = parser.parse_args(argv)
    images = [a for a in args.overrides if "=" not in a]
    args.overrides = [a for a in args.overrides if "=" in a] + [f"segment.{kv}" for kv in args.set]
    cfg = parse_job_config(SegmentJobConfig, args)
    flags = {"checkpoint": args.checkpoint, "classes": args.classes, "out": args.out}
    cfg = cfg.model_copy(update={k: v for k, v in flags.items() if v is not None}
                         | ({"images": cfg.images + images} if images else {})
                         | ({"log_mlflow": True} if args.log_mlflow else {}))
    result = run_segment(cfg)
    emit_result(result)
    return 0 if result["images"] else 2


if __name__ == "__main__":
    run_job(main)
