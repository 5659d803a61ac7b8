"""S-Seg pretraining on Ray Train (MaskFormer + text transformer; mask + contrastive losses).

    python jobs/pretrain.py                      # the embedded CPU demo on the procedural world
    python jobs/pretrain.py --config configs/sseg_cc12m.yaml data.shards='s3://bucket/cc12m/{00000..01242}.tar'
    python jobs/pretrain.py --resume latest      # continue a stopped run (same MLflow run)

Last stdout line: JSON with open-vocabulary mIoU, baselines, and the MLflow run id.
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.runs.pretrain import run_pretrain
from schemas.configs import PretrainConfig
from pipelines.cli import job_parser, parse_job_config, run_job
from pipelines.tracking import emit_result


def main(argv=None) -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="RUN_NAME|latest",
                        help="continue a stopped run from its latest checkpoint, logging to its MLflow run")
    args = parser.parse_args(argv)
    cfg = parse_job_config(PretrainConfig, args)
    emit_result(run_pretrain(cfg, resume=args.resume))
    return 0


if __name__ == "__main__":
    run_job(main)
