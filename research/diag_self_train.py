"""S-Seg+ recipe sweep in one process (no Ray): pseudo-label the world's train split with an S-Seg checkpoint,
train UperNet-ViT students with the product's step (sseg.self_training.SSegPlusStep) under several settings,
and score every student and the teacher on the val split with the product's inference (all classes, no
background: the pretraining protocol). For choosing the embedded default quickly (e.g. on a GPU); the
figures the README quotes come from jobs/self_train.py.

    python research/diag_self_train.py --checkpoint CKPT --root data/world/voc --device cuda \
        --sweep '[{"name": "default"}, {"name": "thr0.8", "threshold": 0.8}]'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sseg  # noqa: E402,F401

WORLD_SEGMENT = {"short_side": 64, "sliding": False, "window": 64, "stride": 64, "templates": "clip7",
                 "bg_mode": "none"}


def load_teacher(path: str, device):
    from sseg.checkpoints import load_checkpoint, upgrade_model_config
    from sseg.models.config import ModelConfig
    from sseg.models.sseg_model import SSegModel

    state = load_checkpoint(path)
    model = SSegModel(ModelConfig.model_validate(upgrade_model_config("sseg", state["model_config"])))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def miou(model, reader, device, segment=WORLD_SEGMENT) -> float:
    from sseg.inference import SegmentConfig, Segmenter
    from sseg.metrics import ConfusionMatrix

    segmenter = Segmenter.for_classes(model, list(reader.class_names), SegmentConfig.model_validate(segment))
    confusion = ConfusionMatrix(len(reader.class_names))
    for i in range(len(reader)):
        _, image, label = reader[i]
        confusion.update(segmenter.predict(image, return_scores=False).labels, label)
    return float(confusion.compute()["miou"])


def pseudo_label(model, reader, device):
    from sseg.inference import SegmentConfig, Segmenter
    from sseg.metrics import ConfusionMatrix

    segmenter = Segmenter.for_classes(model, list(reader.class_names), SegmentConfig.model_validate(WORLD_SEGMENT))
    images, labels, confidences = [], [], []
    confusion = ConfusionMatrix(len(reader.class_names))
    for i in range(len(reader)):
        _, image, truth = reader[i]
        prediction = segmenter.predict(image, return_scores=True)
        confidence = prediction.scores.max(0).values.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        images.append(image)
        labels.append(prediction.labels.astype(np.uint8))
        confidences.append(confidence)
        confusion.update(prediction.labels, truth)
    return images, labels, confidences, float(confusion.compute()["miou"])


def train_student(images, labels, confidences, class_names, device, spec: dict):
    from sseg.data.transforms import random_resized_crop
    from sseg.models.upernet import IGNORE_INDEX, UperNetConfig, UperNetViT
    from sseg.self_training import SSegPlusStep, build_sseg_plus_optimizer
    from sseg.training import poly_with_warmup

    base = json.loads((ROOT / "sseg/models/model_configs/sseg_plus_tiny.json").read_text())["config"]
    model_cfg = UperNetConfig.model_validate({**base, **spec.get("model", {}), "class_names": list(class_names)})
    torch.manual_seed(spec.get("seed", 0))
    model = UperNetViT(model_cfg).to(device)
    steps, batch = spec.get("steps", 800), spec.get("batch", 16)
    optimizer = build_sseg_plus_optimizer(model, spec.get("lr", 1e-3), 0.05, (0.9, 0.999), spec.get("layer_decay", 0.9))
    scheduler = poly_with_warmup(optimizer, steps, spec.get("warmup", 100))
    step = SSegPlusStep(model, optimizer, scheduler, model_cfg.model_dump(mode="json"), device,
                        bf16=False)
    threshold = int(np.ceil(spec.get("threshold", 0.5) * 255 - 1e-9))
    masked = []
    for label, confidence in zip(labels, confidences):
        label = label.copy()
        label[confidence < threshold] = IGNORE_INDEX
        masked.append(label)
    rng = np.random.default_rng(spec.get("seed", 0))
    scale = tuple(spec.get("crop_scale", (0.5, 1.0)))
    started = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(images), batch)
        crops = [random_resized_crop(images[i], 64, rng, labels=masked[i], scale=scale) for i in idx]
        metrics = step.run({"image": np.stack([c[0] for c in crops]), "label": np.stack([c[1] for c in crops])})
    return model.eval(), time.perf_counter() - started, metrics["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", default=str(ROOT / "data/world/voc"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--sweep", default='[{"name": "default"}]')
    args = parser.parse_args()
    from sseg.data.datasets import build_dataset

    device = torch.device(args.device)
    train, val = build_dataset("world", args.root, "train"), build_dataset("world", args.root, "val")
    if args.max_train:
        train.sample_keys = train.sample_keys[:args.max_train]
    teacher = load_teacher(args.checkpoint, device)
    started = time.perf_counter()
    images, labels, confidences, pl_miou = pseudo_label(teacher, train, device)
    print(json.dumps({"what": "teacher", "val_miou": miou(teacher, val, device), "pseudo_label_miou": pl_miou,
                      "train_images": len(images), "seconds": time.perf_counter() - started}), flush=True)
    for spec in json.loads(args.sweep):
        student, seconds, loss = train_student(images, labels, confidences, train.class_names, device, spec)
        print(json.dumps({"what": "student", **spec, "val_miou": miou(student, val, device), "train_seconds": seconds,
                          "final_loss": loss}), flush=True)


if __name__ == "__main__":
    main()
