"""Why does GLCC keep most of the linear probe's loss under confusion-shaped label noise (issue 22)?

The product's TUSS inputs, embedding cache and ``run_setting`` on one VLM, full supervision with labels corrupted
along the zero-shot confusion matrix, one classifier variant at a time. The first call embeds (Ray Data, the
product's cache); later calls read the cache and save the two splits to ``--store`` so a variant takes seconds.

    python research/diag_tuss_noise.py --vlm <S-Seg run id> --rate 0.4 --noise confusion
    python research/diag_tuss_noise.py --vlm <id> --variant refill --variant glcc
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sseg  # noqa: E402,F401

GLCC = ("probe", "propagation", "probe", "propagation")
VARIANTS = {  # name → (order, noise_refill)
    "probe": (("probe",), False),
    "glcc": (GLCC, False),
    "refill": (GLCC, True),
    "propagation": (("propagation",), False),
    "refill_il": (("propagation", "probe", "propagation", "probe"), True),
    "refill_il_lp": (("propagation", "probe"), True),
    "refill_il_lp_il": (("propagation", "probe", "propagation"), True),
    "refill_x3": (GLCC * 3, True),  # three GLCC rounds: room for the noise model's EM to converge
}


def splits(vlm: str, store: Path):
    if store.exists():
        return pickle.loads(store.read_bytes())
    from pipelines.inputs.tuss import prepare
    from pipelines.io.runtime import init_ray, release_ray
    from pipelines.runs.tuss import embed_splits
    from schemas.configs import TussConfig

    cfg = TussConfig.model_validate({"vlm": {"checkpoint": vlm}, "supervision": {"kind": "full"}})
    prep = prepare(cfg)
    init_ray(cfg.ray.address, cfg.ray.num_cpus)
    train, val, _ = embed_splits(cfg, prep, cfg.embed)
    release_ray()
    data = (train, val, len(prep.class_names), cfg.classifier)
    store.write_bytes(pickle.dumps(data))
    return data


def anchor_transition(scores: np.ndarray, labelled: np.ndarray, quantile: float) -> np.ndarray:
    """``T[i, :]`` = the out-of-fold noisy-label probabilities of class i's anchor: the labelled mask whose
    probability of i is the largest at or below the ``quantile`` of that class's column (Patrini et al. 2017's
    robust anchor; the very top is often an outlier)."""
    c = scores.shape[1]
    rows = scores[labelled]
    t = np.zeros((c, c))
    for i in range(c):
        column = rows[:, i]
        below = np.flatnonzero(column <= np.quantile(column, quantile))
        t[i] = rows[below[column[below].argmax()]]
    return t / t.sum(axis=1, keepdims=True)


def forward_correction(args, experiment, train, num_classes: int, probe_cfg) -> None:
    """Patches the noise generator to record (or estimate) the transition matrix, and GLCC's probe (and with
    ``--correct-propagation`` its propagation) to use it."""
    import sseg.tuss.glcc as glcc_module
    from sseg.tuss.cleaning import out_of_fold_scores
    from sseg.tuss.probe import train_probe
    from sseg.tuss.propagation import propagate
    from sseg.tuss.supervision import confusion_counts

    state: dict = {"T": None}
    corrupt = experiment.noisy_full_labels

    def recorded(proportions, rate, rng, confusion=None):
        y, changed = corrupt(proportions, rate, rng, confusion)
        labelled = y.sum(1) > 0
        given = y.argmax(1)
        true_t = confusion_counts(proportions.argmax(1)[labelled], given[labelled], num_classes).astype(np.float64)
        true_t /= np.maximum(true_t.sum(1, keepdims=True), 1)
        if args.forward == "oracle":
            state["T"] = true_t
        elif args.forward == "volmin":
            from sseg.tuss.config import NoiseModelConfig
            from sseg.tuss.noise_model import fit_volmin

            _, state["T"] = fit_volmin(train.table.embeddings, y, train.table.area, probe_cfg, args.volmin_lambda,
                                       NoiseModelConfig(epochs=args.probe_epochs or probe_cfg.epochs,
                                                        min_diagonal=args.min_diagonal))
        else:
            scores = out_of_fold_scores(train.table.embeddings, y, train.table.area, probe_cfg, 5, 0)
            state["T"] = anchor_transition(scores, labelled, args.anchor_quantile)
        print(json.dumps({"forward": args.forward, "volmin_lambda": args.volmin_lambda, "min_diagonal": args.min_diagonal, "diagonal": np.round(np.diag(state["T"]), 2).tolist(),
                          "true_diagonal": np.round(np.diag(true_t), 2).tolist(),
                          "l1_to_true": round(float(np.abs(state["T"] - true_t).sum(1).mean()), 3)}), flush=True)
        return y, changed

    def corrected_probe(x, y, area, cfg):
        return train_probe(x, y, area, cfg, transition=state["T"])

    def corrected_propagation(graph, y, *rest):
        y_star = propagate(graph, y, *rest)
        return y_star if state["T"] is None else np.clip(y_star @ np.linalg.pinv(state["T"]), 0.0, None)

    experiment.noisy_full_labels = recorded
    glcc_module.train_probe = corrected_probe
    if args.correct_propagation:
        glcc_module.propagate = corrected_propagation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vlm", required=True)
    parser.add_argument("--store", type=Path, default=Path("runs/diag_tuss_noise.pkl"))
    parser.add_argument("--rate", type=float, action="append")
    parser.add_argument("--noise", default="confusion", choices=("confusion", "uniform"))
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--weights", type=float, nargs="*", help="the combination-weight grid (default: the product's)")
    parser.add_argument("--alphas", type=float, nargs="*", help="the α grid (default: the product's)")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--keep", type=float, default=0.0, help="refill variants: share of the noisy labels kept")
    parser.add_argument("--filter", action="store_true", help="refill variants: keep the labels the step agrees with")
    parser.add_argument("--transition", action="store_true",
                        help="refill variants: labels = the posterior under an estimated noise transition matrix")
    parser.add_argument("--oracle-drop", action="store_true",
                        help="control: the corrupted masks lose their label instead (a perfect noise detector)")
    parser.add_argument("--rank-keep", type=float, default=0.0,
                        help="refill variants: keep the top share of each given class by the step's score")
    parser.add_argument("--clean", type=int, default=0, metavar="FOLDS",
                        help="drop the labels confident learning flags (out-of-fold probe, FOLDS folds; 0: off)")
    parser.add_argument("--relabel", action="store_true", help="--clean: flagged masks take their confident class")
    parser.add_argument("--gce-q", type=float, default=0.0, help="the probe's generalised cross-entropy q (0: CE)")
    parser.add_argument("--probe-epochs", type=int, default=0, help="the probe's epochs (0: the product's)")
    parser.add_argument("--zs-topk", type=int, default=0, metavar="K",
                        help="drop a mask's label unless its class is among the VLM's zero-shot top K for the "
                             "mask (a detector that learns nothing from the noisy labels; 0: off)")
    parser.add_argument("--intersect", action="store_true",
                        help="with --zs-topk and --clean: drop only the labels both detectors flag")
    parser.add_argument("--forward", choices=("oracle", "anchor", "volmin"),
                        help="fit the probe through a noise transition matrix (forward correction): the true one "
                             "(control), one estimated from anchor masks of an out-of-fold probe, or one learnt "
                             "jointly with a probe under a minimum-volume penalty (VolMinNet)")
    parser.add_argument("--min-diagonal", type=float, default=0.0, help="--forward volmin: T's diagonal floor")
    parser.add_argument("--volmin-lambda", type=float, default=1e-3, help="--forward volmin: the log det weight")
    parser.add_argument("--anchor-quantile", type=float, default=0.97,
                        help="--forward anchor: a class's anchor is the mask at this quantile of its probability")
    parser.add_argument("--noise-model", choices=("none", "volmin"),
                        help="the product's noise model (glcc.noise_model.kind; λ chosen on the held-out slice)")
    parser.add_argument("--lambdas", type=float, nargs="*", help="--noise-model volmin: the λ candidates")
    parser.add_argument("--correct-propagation", action="store_true",
                        help="--forward: propagated labels are mapped back through the inverse transition")
    args = parser.parse_args()
    if args.correct_propagation and not args.forward:
        parser.error("--correct-propagation needs --forward")
    if args.intersect and not (args.zs_topk and args.clean):
        parser.error("--intersect needs --zs-topk and --clean")
    import sseg.tuss.experiment as experiment
    from sseg.tuss.experiment import Setting, run_setting

    if args.oracle_drop:
        corrupt = experiment.noisy_full_labels

        def dropped(proportions, rate, rng, confusion=None):
            y, changed = corrupt(proportions, rate, rng, confusion)
            y[changed] = 0.0
            return y, changed

        experiment.noisy_full_labels = dropped

    train, val, num_classes, classifier = splits(args.vlm, args.store)
    noisy_labels = experiment.noisy_full_labels
    if args.clean and not args.intersect:
        from sseg.tuss.cleaning import clean_labels

        corrupt_for_clean = experiment.noisy_full_labels

        def cleaned(proportions, rate, rng, confusion=None):
            y, changed = corrupt_for_clean(proportions, rate, rng, confusion)
            y, flags = clean_labels(train.table.embeddings, y, train.table.area, classifier.glcc.probe, args.clean,
                                    relabel=args.relabel)
            labelled = proportions.sum(1) > 0
            print(json.dumps({"flagged": int(flags.sum()), "labelled": int(labelled.sum()),
                              "corrupted": int(changed.sum()), "flagged_corrupted": int((flags & changed).sum()),
                              "flagged_clean": int((flags & ~changed & labelled).sum())}), flush=True)
            return y, changed

        experiment.noisy_full_labels = cleaned
    if args.zs_topk:
        corrupt_for_zs = noisy_labels if args.intersect else experiment.noisy_full_labels
        top = np.argsort(-train.zero_shot, axis=1)[:, :args.zs_topk]

        def zero_shot_agreement(proportions, rate, rng, confusion=None):
            y, changed = corrupt_for_zs(proportions, rate, rng, confusion)
            labelled = y.sum(1) > 0
            agree = (top == y.argmax(1)[:, None]).any(1)
            drop = labelled & ~agree
            if args.intersect:
                from sseg.tuss.cleaning import clean_labels

                _, flags = clean_labels(train.table.embeddings, y, train.table.area, classifier.glcc.probe,
                                        args.clean, relabel=False)
                drop &= flags
            print(json.dumps({"zs_topk": args.zs_topk, "dropped": int(drop.sum()), "labelled": int(labelled.sum()),
                              "dropped_corrupted": int((drop & changed).sum()),
                              "corrupted": int(changed.sum()),
                              "dropped_clean": int((drop & ~changed).sum())}), flush=True)
            y[drop] = 0.0
            return y, changed

        experiment.noisy_full_labels = zero_shot_agreement
    classifier = type(classifier).model_validate(classifier.model_dump())  # a cached config gains new fields
    if args.forward:
        forward_correction(args, experiment, train, num_classes, classifier.glcc.probe)
    probe_update = {k: v for k, v in (("gce_q", args.gce_q), ("epochs", args.probe_epochs)) if v}
    if probe_update:
        glcc = classifier.glcc
        classifier = classifier.model_copy(update={"glcc": glcc.model_copy(update={
            "probe": glcc.probe.model_copy(update=probe_update)})})
    if args.noise_model:
        noise_update = {"kind": args.noise_model, **({"lambdas": tuple(args.lambdas)} if args.lambdas else {})}
        glcc = classifier.glcc
        classifier = classifier.model_copy(update={"glcc": glcc.model_copy(update={
            "noise_model": glcc.noise_model.model_copy(update=noise_update)})})
    grid = dict(classifier.grid)
    if args.weights:
        grid["weight"] = list(args.weights)
    if args.alphas:
        grid["alpha"] = list(args.alphas)
    for rate in args.rate or [0.0, 0.4]:
        for name in args.variant or ["probe", "glcc"]:
            order, refill = VARIANTS[name]
            setting = Setting(kind="full", order=order, noise_rate=rate, noise=args.noise, noise_seed=args.noise_seed,
                              noise_refill=refill, noise_keep=args.keep, noise_filter=args.filter,
                              noise_transition=args.transition, noise_rank_keep=args.rank_keep)
            start = time.perf_counter()
            out = run_setting(setting, train, val, classifier.glcc, num_classes, tune=classifier.tune, grid=grid,
                              holdout_fraction=classifier.holdout_fraction, seed=classifier.seed)
            row = {"variant": name, "rate": rate, "noise": args.noise, "keep": args.keep, "oracle_drop": args.oracle_drop, "clean": args.clean, "relabel": args.relabel, "filter": args.filter,
                   "transition": args.transition,
                   "gce_q": args.gce_q, "probe_epochs": args.probe_epochs, "forward": args.forward, "volmin_lambda": args.volmin_lambda,
                   "correct_propagation": args.correct_propagation, "zs_topk": args.zs_topk, "intersect": args.intersect, "rank_keep": args.rank_keep, "miou": round(100 * out["miou"], 1),
                   "f1": round(100 * out["f1"], 1), "alpha": out.get("alpha"), "k": out.get("k"),
                   "weight": out.get("weight"), "pseudo_before": round(100 * out.get("pseudo_before.miou", 0), 1),
                   "pseudo_after": round(100 * out.get("pseudo_after.miou", 0), 1),
                   "noise_model": args.noise_model, **{k: round(v, 4) for k, v in out.items() if k.startswith("noise_model.")},
                   "seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
