"""Open-vocabulary mIoU of a checkpoint on a labelled dataset, with and without background.

    python jobs/evaluate.py checkpoint=runs/<run>/checkpoint_... dataset=voc root=/data/VOC2012
    python jobs/evaluate.py checkpoint=<mlflow run id>          # the world's labelled split by default

Runs as Ray Data batch inference (num_actors, gpus_per_actor); logs per-class IoU, a bar chart and an
input | prediction | truth grid to MLflow. With background, the threshold is GroupViT's for the dataset
(VOC, COCO-Object 0.95; Pascal Context 0.35; else 0.95) unless segment.bg_thresh=... sets it, clamped per
image to its best foreground probability (segment.bg_clamp=false turns that off); it is logged as the
MLflow params eval.bg_thresh / eval.bg_thresh_source. Last stdout line: JSON with both mIoUs and images/s.
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job
from pipelines.runs.evaluate import run_evaluate
from pipelines.tracking import emit_result
from schemas.configs import EvaluateConfig


def main(argv=None) -> int:
    args = job_parser(__doc__.splitlines()[0]).parse_args(argv)
    emit_result(run_evaluate(parse_job_config(EvaluateConfig, args)))
    return 0


if __name__ == "__main__":
    run_job(main)
