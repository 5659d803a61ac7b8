"""Is there thing identity anywhere in a trained S-Seg checkpoint? Probes on the world's labelled split.

For one or more pretraining checkpoints (e.g. the trained model and its step-0 twin), reports:

  text_cosine     mean pairwise cosine of the ten thing names' text embeddings, per prompt form
                  (1.0 = the text tower maps every thing name to one vector)
  thingness_auc   per pixel, the open-vocabulary class scores summed over the ten thing names
                  (inference as in evaluation): ROC AUC of thing vs stuff pixels (0.5 = none)
  thing_only_acc  on thing pixels, argmax over the ten thing names only (chance 0.10)
  probe_acc       a logistic-regression probe on the image side: one feature per ground-truth thing
                  region (the region pooled on the semantic map and projected, as a perfect mask would
                  be; "query" models: the mask-assignment mixture of mask features), trained on the
                  first half of the images, tested on the second half (no image in both), next to the
                  majority-class rate of the test half

    python research/diag_thing_signal.py runs/demo-seed0/untrained mlruns/<run>/artifacts/checkpoints/final
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sseg  # noqa: E402,F401

PROMPT_FORMS = ("{}", "a photo of a {}.", "{} grass")


@torch.no_grad()
def text_cosines(model, names: list[str]) -> dict[str, float]:
    from sseg.models.text import tokenize

    out = {}
    for form in PROMPT_FORMS:
        emb = F.normalize(model.encode_text(tokenize([form.format(n) for n in names], model.cfg.context_length)), dim=-1)
        n = len(names)
        out[form] = float(((emb @ emb.T).sum() - n) / (n * n - n))
    return out


@torch.no_grad()
def region_features(model, image_tensor: torch.Tensor, label: np.ndarray,
                    classes: list[int]) -> list[np.ndarray]:
    """One feature per class region of ``label`` (see module docstring)."""
    masks = torch.stack([torch.as_tensor(label == c, dtype=torch.float32) for c in classes])[None]
    if getattr(model, "semantic_proj", None) is not None:
        trunk = model.maskformer(image_tensor)
        semantic = model.semantic_proj(trunk.pixel_features)  # [1,C,h,w]
        weights = F.adaptive_avg_pool2d(masks, semantic.shape[-2:]).flatten(2)  # area weights at 1/4
        pooled = torch.einsum("bnp,bcp->bnc", weights, semantic.flatten(2)) / weights.sum(-1, keepdim=True).clamp_min(1e-6)
        return list(model.image_projection(pooled)[0].numpy())
    out = model.encode_image(image_tensor)
    assignment = F.interpolate(out["pred_masks"].float().softmax(dim=1), size=label.shape, mode="bilinear")[0]
    pixel = torch.einsum("qd,qhw->dhw", F.normalize(out["mask_features"][0].float(), dim=-1), assignment)
    return [(pixel * m).flatten(1).sum(-1).numpy() / float(m.sum()) for m in masks[0]]


def probe(checkpoint: str, max_images: int, voc: str) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from sseg.data.datasets import build_dataset
    from sseg.world.vocab import THING_CLASSES
    from sseg.inference import SegmentConfig, Segmenter, build_text_classifier
    from sseg.models.text import tokenize
    from sseg.checkpoints import model_from_checkpoint

    model, _ = model_from_checkpoint(checkpoint)
    dataset = build_dataset("world", voc, "val")
    names = list(dataset.class_names)
    num_things = len(THING_CLASSES)
    if names[:num_things] != list(THING_CLASSES):
        raise SystemExit(f"{voc} is not the world's labelled split (classes {names})")
    size = model.cfg.image_size
    classifier = build_text_classifier(model, names, "clip7", tokenize)
    segmenter = Segmenter(model, classifier, SegmentConfig(templates="clip7", bg_mode="none", short_side=size,
                                                         sliding=False, window=size, stride=size))
    is_thing, thingness, thing_hits, thing_pixels = [], [], 0, 0
    features, targets, image_ids = [], [], []
    count = min(max_images, len(dataset))
    for index in range(count):
        _, image, label = dataset[index]
        valid = label < len(names)
        scores = segmenter.score_map(image).numpy()  # [C,H,W], per-pixel normalised
        is_thing.append(label[valid] < num_things)
        thingness.append(scores[:num_things].sum(0)[valid])
        things_here = label < num_things
        thing_hits += int((scores[:num_things].argmax(0)[things_here] == label[things_here]).sum())
        thing_pixels += int(things_here.sum())
        present = [int(c) for c in np.unique(label[things_here])]
        if present:
            features += region_features(model, segmenter.preprocess(image), label, present)
            targets += present
            image_ids += [index] * len(present)
    features, targets, image_ids = np.stack(features), np.asarray(targets), np.asarray(image_ids)
    train, test = image_ids < count // 2, image_ids >= count // 2
    head = LogisticRegression(max_iter=2000).fit(features[train], targets[train])
    return {
        "checkpoint": checkpoint,
        "text_cosine": text_cosines(model, list(THING_CLASSES)),
        "thingness_auc": float(roc_auc_score(np.concatenate(is_thing), np.concatenate(thingness))),
        "thing_only_acc": thing_hits / max(thing_pixels, 1),
        "probe_acc": float(head.score(features[test], targets[test])),
        "probe_majority": float(np.bincount(targets[test]).max() / test.sum()),
        "probe_regions": [int(train.sum()), int(test.sum())],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--voc", default=str(ROOT / "data" / "world" / "voc"))
    parser.add_argument("--images", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for checkpoint in args.checkpoints:
        print(json.dumps(probe(checkpoint, args.images, args.voc)), flush=True)


if __name__ == "__main__":
    main()
