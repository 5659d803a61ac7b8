"""Where does the naming signal get lost? The demo's image side trained on ever weaker supervision.

The tiny S-Seg image side (backbone + pixel decoder + semantic map, exactly as in the demo) is trained for
the demo's budget (600 steps × 64 images of the captioned world) with one of:

  dense      per-pixel ground-truth classes, a linear classifier (the upper bound)
  objects    image-level labels: the classes present (clean), multiple-instance: max over pixels, BCE
  mentioned  image-level labels: the classes the caption names (≈20 % caption noise)
  words      image-level labels: every noun/verb of the caption as its own word (synonyms, plurals, ...)

and with class vectors from a linear head (``--head linear``) or from the text tower on the class names /
words (``--head text``). Evaluation: per-pixel argmax over the 14 class names on the labelled split.

    python research/diag_supervision.py --supervision dense --head linear
    python research/diag_supervision.py --supervision words --head text
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


def text_lm_warm_start(model, texts: list[str], steps: int, rng: np.random.Generator,
                       batch: int = 256) -> float:
    """Next-token prediction on the texts through the (causal) text tower, output layer tied to the
    token embedding and restricted to the tokens the texts use."""
    from sseg.models.text import tokenize

    tower = model.text_encoder.transformer
    tokens = tokenize(texts, model.cfg.context_length)
    used = torch.unique(tokens)
    remap = torch.full((model.cfg.vocab_size,), -100, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    optimizer = torch.optim.AdamW(tower.parameters(), lr=1e-3, weight_decay=0.05)
    tower.output_tokens = True
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x = tokens[torch.as_tensor(rng.choice(len(tokens), batch, replace=False))]
        _, hidden = tower(x)
        logits = hidden[:, :-1] @ tower.token_embedding.weight[used].T
        target = remap[x[:, 1:]]
        target[x[:, 1:] == 0] = -100  # padding after the end-of-text token
        loss = F.cross_entropy(logits.reshape(-1, len(used)), target.reshape(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    tower.output_tokens = False
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supervision", choices=["dense", "objects", "mentioned", "words"], default="dense")
    parser.add_argument("--head", choices=["linear", "text"], default="linear")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=12000)
    parser.add_argument("--eval-images", type=int, default=300)
    parser.add_argument("--voc", default=str(ROOT / "data/world/voc"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="v2", help="world preset (v1, v2, debug)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pool", choices=["max", "lse"], default="max",
                        help="image score of a class from its pixel scores (multiple instance): the best pixel, "
                             "or log-mean-exp with sharpness --lse-r (every pixel gets a share of the gradient)")
    parser.add_argument("--lse-r", type=float, default=5.0)
    parser.add_argument("--text-lm-steps", type=int, default=0,
                        help="first train the text tower as a causal language model on the captions' words")
    args = parser.parse_args()
    if args.supervision in ("dense", "words") and args.head != ("linear" if args.supervision == "dense" else "text"):
        raise SystemExit(f"--supervision {args.supervision} needs --head "
                         f"{'linear' if args.supervision == 'dense' else 'text'}")

    from sseg.data.captions import extract_words
    from sseg.data.datasets import build_dataset
    from sseg.data.transforms import to_normalized_tensor
    from sseg.world import WorldConfig, render_sample
    from sseg.world.vocab import WORLD_CLASSES
    from sseg.losses.word_alignment import build_word_targets
    from sseg.metrics import ConfusionMatrix
    from sseg.models import SSegModel
    from sseg.models.config import tiny_model_config
    from sseg.models.text import tokenize

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    world = WorldConfig(preset=args.preset)
    samples = [render_sample(world.seed, i, world) for i in range(args.images)]
    images = np.stack([s.image for s in samples])
    pixel_labels = np.stack([s.label for s in samples]).astype(np.int64)
    names = list(WORLD_CLASSES)
    train_names = names
    image_labels = np.zeros((len(samples), len(names)), np.float32)
    for i, s in enumerate(samples):
        for c in (s.mentioned if args.supervision == "mentioned" else s.objects):
            image_labels[i, names.index(c)] = 1
    if args.supervision == "words":
        targets = build_word_targets([" ".join(extract_words(s.caption)) for s in samples], ["{}"])
        train_names, image_labels = targets.vocabulary, targets.labels.float().numpy()

    model = SSegModel(tiny_model_config(mask_feature_source="pooled"))
    linear = torch.nn.Conv2d(model.cfg.hidden_dim, len(names), 1)
    bias = torch.nn.Parameter(torch.tensor(-5.0))
    params = [*model.maskformer.parameters(), *model.semantic_proj.parameters()]
    params += [*linear.parameters()] if args.head == "linear" else [
        *model.text_encoder.parameters(), *model.image_projection.parameters(), bias]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    eval_tokens = tokenize(names, model.cfg.context_length)
    train_tokens = tokenize(train_names, model.cfg.context_length)

    def class_logits(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        semantic = model.semantic_proj(model.maskformer(x).pixel_features)
        if args.head == "linear":
            logits = linear(semantic)
        else:
            pixels = F.normalize(model.image_projection(semantic.permute(0, 2, 3, 1)), dim=-1)
            words = F.normalize(model.encode_text(tokens), dim=-1)
            logits = (10 * pixels @ words.T + bias).permute(0, 3, 1, 2)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    if args.text_lm_steps:
        lm_loss = text_lm_warm_start(model, [" ".join(extract_words(s.caption)) for s in samples],
                                     args.text_lm_steps, rng)
        print(f"text LM warm start: {args.text_lm_steps} steps, final loss {lm_loss:.3f}, "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    for step in range(args.steps):
        idx = rng.choice(len(images), args.batch, replace=False)
        x = to_normalized_tensor(torch.as_tensor(images[idx]))
        logits = class_logits(x, train_tokens)
        if args.supervision == "dense":
            loss = F.cross_entropy(logits, torch.as_tensor(pixel_labels[idx]))
        else:  # multiple instance: the best pixel (or a soft maximum) answers for the image
            flat = logits.flatten(2)
            if args.pool == "max":
                image_logits = flat.amax(-1)
            else:
                image_logits = (torch.logsumexp(args.lse_r * flat, -1) - np.log(flat.shape[-1])) / args.lse_r
            loss = F.binary_cross_entropy_with_logits(image_logits, torch.as_tensor(image_labels[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step} loss {float(loss.detach()):.4f}", flush=True)

    dataset = build_dataset("world", args.voc, "val")
    confusion = ConfusionMatrix(len(names))
    model.eval()
    with torch.no_grad():
        for i in range(min(args.eval_images, len(dataset))):
            _, image, label = dataset[i]
            x = to_normalized_tensor(torch.as_tensor(np.ascontiguousarray(image)[None]))
            confusion.update(class_logits(x, eval_tokens).argmax(1)[0].numpy(), label)
    result = confusion.compute()
    per_class = dict(zip(names, (round(float(v), 3) for v in result["per_class_iou"])))
    things = [per_class[n] for n in names[:10]]
    print(json.dumps({"preset": args.preset, "supervision": args.supervision, "head": args.head, "steps": args.steps,
                      "pool": args.pool, **({"lse_r": args.lse_r} if args.pool == "lse" else {}),
                      "text_lm_steps": args.text_lm_steps,
                      "vocabulary": len(train_names), "miou": round(float(result["miou"]), 4),
                      "thing_iou_min": min(things), "thing_iou_max": max(things),
                      "train_seconds": round(time.perf_counter() - started, 1), "per_class_iou": per_class}))


if __name__ == "__main__":
    main()
