"""SemiVL fine-tuning on Ray Train: a vision-language model + language-guided decoder, UniMatch consistency,
dense VL guidance and class definitions, from a few labelled and many unlabelled images.

    python jobs/semivl.py                                   # tiny CPU run on the world from the newest S-Seg run
    python jobs/semivl.py vlm.checkpoint=<S-Seg run id or path> data.num_labeled=100
    python jobs/semivl.py --config configs/semivl_voc.yaml vlm.checkpoint=/weights/ViT-B-16.pt
    python jobs/semivl.py ablation                          # paper Table 6 rows + supervised-only, one parent run
    python jobs/semivl.py --resume latest                   # continue a stopped run (same MLflow run)

Last stdout line: JSON with miou and mlflow_run_id (the ablation: the table and the parent run id).
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job, take_subcommand
from pipelines.runs.semivl import run_ablation, run_semivl
from pipelines.tracking import emit_result
from schemas.configs import SemiVLConfig


def main(argv=None) -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="RUN_NAME|latest",
                        help="continue a stopped run from its latest checkpoint, logging to its MLflow run")
    args = parser.parse_args(argv)
    ablation = take_subcommand(args, "ablation")
    cfg = parse_job_config(SemiVLConfig, args)
    emit_result(run_ablation(cfg) if ablation else run_semivl(cfg, resume=args.resume))
    return 0


if __name__ == "__main__":
    run_job(main)
