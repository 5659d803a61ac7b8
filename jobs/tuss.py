"""Tuning-free mask classification (TUSS: DBA-CLIP + GLCC): class-agnostic masks embedded by a frozen
vision-language model, classified under full, semi-, weak or no supervision — nothing is fine-tuned.

    python jobs/tuss.py                                   # world: weak supervision from captions, GLCC, newest S-Seg run
    python jobs/tuss.py supervision.kind=semi             # 100 labelled images (SemiVL's split), the rest zero-shot
    python jobs/tuss.py masks.source=ground_truth supervision.kind=full   # the mask-source ceiling
    python jobs/tuss.py --config configs/tuss_voc.yaml vlm.checkpoint=/weights/ViT-B-16.pt masks.files_dir=/sam/voc
    python jobs/tuss.py table                             # probe / + DBA / + DBA + GLCC × supervisions, one parent run
    python jobs/tuss.py --resume latest                   # continue a stopped run (same MLflow run, cached embeddings)

Last stdout line: JSON with miou, f1 and mlflow_run_id (the table: its file and the parent run id).
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job, take_subcommand
from pipelines.runs.tuss import run_table, run_tuss
from pipelines.tracking import emit_result
from schemas.configs import TussConfig


def main(argv=None) -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="RUN_NAME|latest",
                        help="continue a stopped run: its MLflow run, the embedding chunks it finished")
    args = parser.parse_args(argv)
    table = take_subcommand(args, "table")
    cfg = parse_job_config(TussConfig, args)
    emit_result(run_table(cfg) if table else run_tuss(cfg, resume=args.resume))
    return 0


if __name__ == "__main__":
    run_job(main)
