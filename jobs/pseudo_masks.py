"""Build the pseudo-mask Parquet cache from WebDataset shards (DINO/pixel + K-Means on a Ray actor pool).

    python jobs/pseudo_masks.py [--config FILE] [section.field=value ...]

Re-running skips finished shards. Last stdout line: JSON with samples, skips by reason, oracle mIoU,
images/s and the MLflow run id.
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job
from pipelines.runs.pseudo_masks import run_pseudo_masks
from pipelines.tracking import emit_result
from schemas.configs import PseudoMaskJobConfig


def main(argv=None) -> int:
    args = job_parser(__doc__.splitlines()[0]).parse_args(argv)
    emit_result(run_pseudo_masks(parse_job_config(PseudoMaskJobConfig, args)))
    return 0


if __name__ == "__main__":
    run_job(main)
