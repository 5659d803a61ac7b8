"""The zero-shot S-Seg row of the TagCLIP ablation alone: the VLM's own inference on the split's classes,
scored by the product's seen / unseen evaluation, in its own MLflow run (a paired-seed study needs it once
per VLM, not the whole ablation).

    python research/tagclip_zero_shot.py vlm.checkpoint=<S-Seg run id> [data.split=world_b]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sseg  # noqa: E402,F401
from pipelines.cli import job_parser, parse_job_config  # noqa: E402
from pipelines.evaluation.tagclip import evaluate_tagclip  # noqa: E402
from pipelines.inputs.tagclip import prepare  # noqa: E402
from pipelines.io.runtime import init_ray, release_ray  # noqa: E402
from pipelines.tracking import tracked_run  # noqa: E402
from schemas.configs import TagCLIPConfig  # noqa: E402


def main() -> None:
    cfg = parse_job_config(TagCLIPConfig, job_parser(__doc__.splitlines()[0]).parse_args())
    prep = prepare(cfg)
    if cfg.vlm.kind != "sseg" or not prep.vlm_checkpoint:
        raise SystemExit("the zero-shot row needs an S-Seg VLM")
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    with tracked_run(cfg.tracking.experiment, stage="tagclip-zero-shot", parent_run_id=prep.parent_run_id,
                     tags=prep.tags) as tracker:
        out = evaluate_tagclip(cfg, prep, prep.vlm_checkpoint, tracker, prefix="zero_shot", trusty=False,
                               pictures=0)
    release_ray()
    print(json.dumps({k: v for k, v in out.items() if isinstance(v, (int, float, str))} |
                     {"mlflow_run_id": tracker.run_id}))


if __name__ == "__main__":
    main()
