"""TagCLIP on Ray Train: a decoder over a vision-language model's patch and text embeddings, trained on seen
classes only, with a trusty token that tells where pixels belong to no seen class; unseen classes at test time.

    python jobs/tagclip.py                                  # the world, VLM = the newest finished S-Seg run
    python jobs/tagclip.py vlm.checkpoint=<S-Seg run id or path> data.split=world_b train.seed=1
    python jobs/tagclip.py model.trusty_token=false model.trusty_learner=false   # the baseline decoder
    python jobs/tagclip.py --config configs/tagclip_voc.yaml vlm.checkpoint=/weights/ViT-B-16.pt
    python jobs/tagclip.py ablation                         # zero-shot S-Seg + decoder variants, one parent run
    python jobs/tagclip.py --resume latest                  # continue a stopped run (same MLflow run)

Last stdout line: JSON with miou_seen, miou_unseen, hiou and mlflow_run_id (the ablation: its rows and the
parent run id).
"""

from __future__ import annotations

import _bootstrap  # noqa: F401

import sseg  # noqa: F401
from pipelines.cli import job_parser, parse_job_config, run_job, take_subcommand
from pipelines.runs.tagclip import run_ablation, run_tagclip
from pipelines.tracking import emit_result
from schemas.configs import TagCLIPConfig


def main(argv=None) -> int:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="RUN_NAME|latest",
                        help="continue a stopped run from its latest checkpoint, logging to its MLflow run")
    args = parser.parse_args(argv)
    ablation = take_subcommand(args, "ablation")
    cfg = parse_job_config(TagCLIPConfig, args)
    emit_result(run_ablation(cfg) if ablation else run_tagclip(cfg, resume=args.resume))
    return 0


if __name__ == "__main__":
    run_job(main)
