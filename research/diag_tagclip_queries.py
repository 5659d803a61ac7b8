"""Where do TagCLIP's decoders lose the unseen classes? Two measurements on finished runs, no training.

1. **Where the unseen pixels go** (each run's logged ``eval/val.json`` confusion): the share of unseen-class
   pixels labelled correctly, as *another unseen* class, or as a seen class (the error the trusty token is
   for), and the share of seen pixels labelled unseen.
2. **What the query projection does with an unseen name**: the class names through the VLM's text tower
   (the job's templates), each unseen embedding split into its part inside the span of the seen classes'
   embeddings and the rest. Only the seen texts ever reach ``query_proj`` in training, so its response to the
   rest can change only through the optimiser's per-coordinate scaling and weight decay: paired runs that share
   an initialisation (same seed, another variant) show how far it moved.

    python research/diag_tagclip_queries.py --run base0=1ffb3233 --run tag0=0ba6ba0a --zero-shot 5bab8eb3
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import sseg  # noqa: E402,F401


def find_run(client, prefix: str):
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"attributes.run_id LIKE '{prefix}%'")
    if len(runs) != 1:
        raise SystemExit(f"error: {len(runs)} runs start with {prefix!r}")
    return runs[0]


def pixel_fates(confusion: np.ndarray, class_names: list[str], unseen: list[str]) -> dict:
    u = [class_names.index(n) for n in unseen]
    s = [i for i in range(len(class_names)) if i not in u]
    rows = confusion[u]
    total = rows.sum()
    correct = sum(confusion[i, i] for i in u)
    to_seen = rows[:, s].sum()
    return {"unseen_correct": correct / total, "unseen_as_other_unseen": (total - correct - to_seen) / total,
            "unseen_as_seen": to_seen / total, "seen_as_unseen": confusion[np.ix_(s, u)].sum() / confusion[s].sum()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_ID_PREFIX of a tagclip run")
    parser.add_argument("--zero-shot", help="run id prefix of research/tagclip_zero_shot.py's run")
    parser.add_argument("--unseen", nargs="*", default=["tree", "car", "house", "water"],
                        help="the zero-shot run's unseen classes (the world's default split)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F
    from mlflow.tracking import MlflowClient

    from sseg.checkpoints import model_from_checkpoint
    from sseg.inference import build_text_classifier

    client = MlflowClient(args.tracking_uri)
    scratch = Path(tempfile.mkdtemp(prefix="diag_tagclip_queries_"))
    runs = dict(item.split("=", 1) for item in args.run)
    if args.zero_shot:
        runs = {"zero-shot": args.zero_shot, **runs}
    text_response = {}
    for name, prefix in runs.items():
        run = find_run(client, prefix)
        artifact = "zero_shot/val.json" if name == "zero-shot" else "eval/val.json"
        val = json.loads(Path(client.download_artifacts(run.info.run_id, artifact, str(scratch / name))).read_text())
        split = json.loads(Path(client.download_artifacts(run.info.run_id, "split.json", str(scratch / name))
                                ).read_text()) if name != "zero-shot" else None
        unseen = split["unseen"] if split else list(args.unseen)
        fates = pixel_fates(np.asarray(val["confusion"], dtype=np.float64), val["class_names"], unseen)
        row = {"run": name, **{k: round(100 * v, 1) for k, v in fates.items()}}
        if name != "zero-shot":
            path = client.download_artifacts(run.info.run_id, "checkpoints/final", str(scratch / name))
            model, _ = model_from_checkpoint(path)
            names = val["class_names"]
            templates = run.data.params.get("data.templates", "clip7")
            if templates.startswith("["):
                templates = ast.literal_eval(templates)
            with torch.no_grad():
                t = F.normalize(build_text_classifier(model, names, templates).embeddings.float(), dim=-1)
            u = [names.index(n) for n in unseen]
            s = [i for i in range(len(names)) if i not in u]
            basis, _ = torch.linalg.qr(t[s].T)
            inside = (t @ basis) @ basis.T
            outside = t - inside
            w_text = model.decoder.query_proj.weight.detach()[:, t.shape[1]:]  # the half acting on t
            text_response[name] = (w_text, inside[u], outside[u])
            row["unseen_outside_seen_span"] = [round(float(v), 2) for v in (outside[u].norm(dim=1) ** 2)]
            row["response_outside_over_inside"] = [
                round(float((outside[i] @ w_text.T).norm() / (inside[i] @ w_text.T).norm()), 2) for i in u]
        print(json.dumps(row), flush=True)
    # paired runs (names ending in the same seed digit) share the initialisation: how far training moved it
    names = list(text_response)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a[-1] != b[-1] or not a[-1].isdigit():
                continue
            wa, inside, outside = text_response[a]
            wb = text_response[b][0]
            print(json.dumps({"pair": [a, b],
                              "cos_outside": [round(float(v), 2) for v in F.cosine_similarity(
                                  outside @ wa.T, outside @ wb.T, dim=-1)],
                              "cos_inside": [round(float(v), 2) for v in F.cosine_similarity(
                                  inside @ wa.T, inside @ wb.T, dim=-1)]}), flush=True)


if __name__ == "__main__":
    main()
