"""Where is TagCLIP's decoder capped on the world? The product's model, step and metrics in a plain loop.

Every decoder of the TagCLIP ablation (issue 23) stays near the VLM's zero-shot seen mIoU, even trained on
all classes. This separates the frozen features from the decoder recipe, one variable at a time:

  --head zeroshot   the VLM's dense map against the class texts (no training)
  --head linear     a per-pixel linear probe on the frozen dense embeddings, all classes (the frozen
                    features' ceiling: what any head on them can reach)
  --head decoder    the product's TagCLIP model and step (``--variant``), optionally with the vision tower
                    trained (``--vision-lr-mult``; the product keeps it frozen) and on all classes

    python research/diag_tagclip.py --vlm <S-Seg run id> --head linear
    python research/diag_tagclip.py --vlm <id> --head decoder --variant baseline --all-classes --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sseg  # noqa: E402,F401

VARIANTS = {
    "baseline": dict(trusty_token=False, trusty_learner=False, inference_weighting=False),
    "query_sa": dict(trusty_token=False, trusty_learner=True, inference_weighting=False),
    "tagclip": dict(trusty_token=True, trusty_learner=True, inference_weighting=True),
}


def batches(paths, crop, scale, num_classes, batch, rng, transform):
    from pipelines.stages.tagclip_data import labelled_views

    images, labels = paths
    while True:
        pick = rng.choice(len(images), batch, replace=False)
        yield labelled_views({"row": pick, "image": [images[i] for i in pick], "label": [labels[i] for i in pick]},
                             crop, scale, num_classes, transform, seed=int(rng.integers(1 << 30)))


def evaluate(score_fn, dataset, split, max_images):
    from sseg.metrics import ConfusionMatrix
    from sseg.tagclip.evaluation import seen_unseen_metrics

    confusion = ConfusionMatrix(len(split.class_names))
    for i in range(min(len(dataset), max_images)):
        _, image, label = dataset[i]
        with torch.no_grad():
            pred = score_fn(image).argmax(0).numpy()
        confusion.update(pred, np.asarray(label))
    m = seen_unseen_metrics(confusion, split)
    return {k: round(100 * float(m[k]), 1) for k in ("miou_seen", "miou_unseen", "hiou", "miou", "pixel_accuracy",
                                                    "unseen_as_seen")} | {
        "per_class": {split.class_names[c]: round(100 * float(v), 1) for c, v in enumerate(m["per_class_iou"])}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vlm", required=True, help="S-Seg run id or checkpoint")
    p.add_argument("--head", choices=["zeroshot", "linear", "decoder"], default="decoder")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="baseline")
    p.add_argument("--all-classes", action="store_true")
    p.add_argument("--split", default="world")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr-mult", type=float, default=10.0)
    p.add_argument("--vision-lr-mult", type=float, default=0.0, help="train the VLM's vision tower at lr x this")
    p.add_argument("--model", default="{}", help="JSON of extra TagCLIP model fields")
    p.add_argument("--eval-images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    from pipelines.inputs.tagclip import prepare
    from schemas.configs import TagCLIPConfig
    from sseg.data.datasets import build_dataset
    from sseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from sseg.inference import build_text_classifier
    from sseg.tagclip.build import build_tagclip_model, vlm_model_config
    from sseg.tagclip.losses import LossWeights
    from sseg.tagclip.step import TagCLIPStep

    cfg = TagCLIPConfig.model_validate({"vlm": {"checkpoint": args.vlm}, "data": {"split": args.split},
                                        "model": {**VARIANTS[args.variant], **json.loads(args.model)},
                                        "train": {"all_classes": args.all_classes}})
    prep = prepare(cfg)
    split, train_split = prep.split, prep.train_split
    model_config, loaded = vlm_model_config(prep.model_config, prep.vlm_checkpoint)
    model = build_tagclip_model(model_config, loaded)
    val = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split)
    names = [split.class_names[i] for i in split.evaluated]
    classifier = build_text_classifier(model, names, cfg.data.templates, None, "cpu")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def prep_image(image):
        return (torch.as_tensor(np.asarray(image)).permute(2, 0, 1)[None].float() / 255 - mean) / std

    def dense(x):
        return F.normalize(model.vlm.embed_image(x)[0], dim=1)

    started = time.time()
    log = []
    if args.head == "zeroshot":
        model.eval()
        score = lambda im: torch.einsum("bdhw,kd->bkhw", dense(prep_image(im)),  # noqa: E731
                                        classifier.embeddings)[0]
        score_fn = lambda im: F.interpolate(score(im)[None], size=np.asarray(im).shape[:2], mode="bilinear")[0]  # noqa: E731
    elif args.head == "linear":
        model.eval()
        probe = torch.nn.Conv2d(model.vlm.embed_dim, len(split.class_names), 1)
        opt = torch.optim.AdamW(probe.parameters(), lr=args.lr * args.head_lr_mult, weight_decay=0.01)
        data = batches(prep.train_paths, cfg.data.crop_size, cfg.data.scale, len(split.class_names), args.batch, rng,
                       prep.label_transform)
        for step in range(args.steps):
            b = next(data)
            x = (torch.as_tensor(b["image"]).permute(0, 3, 1, 2).float() / 255 - mean) / std
            y = torch.as_tensor(b["label"]).long()
            with torch.no_grad():
                feats = dense(x)
            logits = F.interpolate(probe(feats), size=y.shape[-2:], mode="bilinear")
            loss = F.cross_entropy(logits, y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0:
                log.append(round(float(loss), 4))
        score_fn = lambda im: F.interpolate(probe(dense(prep_image(im))), size=np.asarray(im).shape[:2],  # noqa: E731
                                            mode="bilinear")[0]
    else:
        step = TagCLIPStep.create(model, model_config, train_split, cfg.data.templates,
                                  device=torch.device("cpu"), lr=args.lr, weight_decay=0.01,
                                  head_mult=args.head_lr_mult, prompt_mult=10.0, total_steps=args.steps,
                                  warmup_steps=0, poly_power=0.9, weights=LossWeights(),
                                  vision_mult=args.vision_lr_mult)
        data = batches(prep.train_paths, cfg.data.crop_size, cfg.data.scale, len(split.class_names), args.batch, rng,
                       prep.label_transform)
        for i in range(args.steps):
            metrics = step.run(next(data))
            if i % 100 == 0:
                log.append({k: round(v, 4) for k, v in metrics.items() if k in ("loss", "loss_focal", "loss_dice")})
                print(i, log[-1], f"{time.time() - started:.0f}s", flush=True)
        model.eval()
        score_fn = lambda im: model.segment_scores(prep_image(im), classifier)[0]  # noqa: E731
    train_s = time.time() - started
    result = evaluate(score_fn, val, split, args.eval_images)
    print(json.dumps({"args": vars(args), "train_s": round(train_s), "loss_log": log, **result}))


if __name__ == "__main__":
    main()
