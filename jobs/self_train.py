"""S-Seg+ self-training: pseudo-label the target's train images with S-Seg, train UperNet-ViT on them.

    python jobs/self_train.py                                  # newest finished sseg-pretrain run, the world
    python jobs/self_train.py checkpoint=<run id or path> --config configs/self_train_voc.yaml \
        target.root=/data/VOCdevkit/VOC2012 model.backbone_checkpoint=/weights/mae_pretrain_vit_base.pth
    python jobs/self_train.py --resume latest                  # continue a stopped run (same MLflow run)

Last stdout line: JSON with sseg_miou, sseg_plus_miou and gain (same split, same protocol), the
pseudo-labels' own mIoU and the MLflow run id (tag sseg.parent_run_id = the pretraining run).
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job
from pipelines.runs.self_train import run_self_train
from pipelines.tracking import emit_result
from schemas.configs import SelfTrainConfig


def main(argv=None) -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="RUN_NAME|latest",
                        help="continue a stopped run from its latest checkpoint, logging to its MLflow run")
    args = parser.parse_args(argv)
    emit_result(run_self_train(parse_job_config(SelfTrainConfig, args), resume=args.resume))
    return 0


if __name__ == "__main__":
    run_job(main)
