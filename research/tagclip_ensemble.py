"""Re-score finished TagCLIP runs with the zero-shot ensemble (``model.zero_shot_ensemble``) without training
again: the ensemble acts at inference only, so each run's final checkpoint is copied with the weight set and
evaluated by the product's seen / unseen evaluation, one MLflow run per source run (tag ``sseg.source_run``).

    python research/tagclip_ensemble.py vlm.checkpoint=<S-Seg run id> --runs <tagclip run id> ... [--weight 0.8]
        [--field inference_weighting=false]   (other inference fields of the model config, changed alike)
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

import sseg  # noqa: E402,F401
from pipelines.cli import job_parser, parse_job_config  # noqa: E402
from pipelines.evaluation.tagclip import evaluate_tagclip  # noqa: E402
from pipelines.inputs.tagclip import prepare  # noqa: E402
from pipelines.io.runtime import init_ray, release_ray  # noqa: E402
from pipelines.lineage import resolve_checkpoint  # noqa: E402
from pipelines.tracking import tracked_run  # noqa: E402
from schemas.configs import TagCLIPConfig  # noqa: E402
from sseg.tagclip.build import with_model_fields  # noqa: E402


def main() -> None:
    parser = job_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished TagCLIP run ids")
    parser.add_argument("--weight", type=float, default=0.8)
    parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    cfg = parse_job_config(TagCLIPConfig, args)
    fields = {k: yaml.safe_load(v) for k, v in (f.split("=", 1) for f in args.field)}
    prep = prepare(cfg)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    for run_id in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = with_model_fields(resolve_checkpoint(run_id), tmp, zero_shot_ensemble=args.weight,
                                           **fields)
            with tracked_run(cfg.tracking.experiment, stage="tagclip-ensemble", parent_run_id=prep.parent_run_id,
                             tags=prep.tags | {"sseg.source_run": run_id,
                                               "sseg.zero_shot_ensemble": str(args.weight),
                                               **{f"sseg.inference.{k}": str(v) for k, v in fields.items()}}) as tracker:
                out = evaluate_tagclip(cfg, prep, checkpoint, tracker, prefix="eval", trusty=False, pictures=0)
        print(json.dumps({"source_run": run_id, "weight": args.weight, **fields, "mlflow_run_id": tracker.run_id} |
                         {k: round(v, 4) for k, v in out.items() if isinstance(v, float)}), flush=True)
    release_ray()


if __name__ == "__main__":
    main()
