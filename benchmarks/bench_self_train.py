"""S-Seg+ throughput: the training step (any named UperNet-ViT config, CPU or GPU) and the pseudo-labelling
stage through Ray Data vs the same inference in a plain loop.

    python benchmarks/bench_self_train.py train --model-config sseg_plus_tiny --batch 16 --steps 30
    python benchmarks/bench_self_train.py train --model-config sseg_plus_vit_b16 --batch 16 --crop 512 --device cuda
    python benchmarks/bench_self_train.py pseudo --checkpoint runs/<run>/checkpoint_... --images 400

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bench_train(args) -> dict:
    import torch

    import sseg  # noqa: F401
    from sseg.models.upernet import UperNetConfig, UperNetViT
    from sseg.self_training import SSegPlusStep, build_sseg_plus_optimizer
    from sseg.training import poly_with_warmup

    torch.set_num_threads(args.threads)
    config = json.loads((ROOT / "sseg/models/model_configs" / f"{args.model_config}.json").read_text())["config"]
    config["class_names"] = [f"class{i}" for i in range(args.classes)]
    cfg = UperNetConfig.model_validate(config)
    device = torch.device(args.device)
    crop = args.crop or cfg.image_size
    model = UperNetViT(cfg).to(device)
    if device.type == "cuda" and args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_sseg_plus_optimizer(model, 1e-4, 0.05, (0.9, 0.999), 0.7)
    scheduler = poly_with_warmup(optimizer, 10 ** 6, 0)
    step = SSegPlusStep(model, optimizer, scheduler, cfg.model_dump(mode="json"), device, bf16=args.bf16)
    import numpy as np

    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 255, (args.batch, crop, crop, 3), dtype=np.uint8),
             "label": rng.integers(0, args.classes, (args.batch, crop, crop), dtype=np.uint8)}
    for _ in range(args.warmup):
        step.run(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        metrics = step.run(batch)  # .run returns Python floats: one sync per step, as in the loop
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    out = {"what": "sseg_plus_train_step", "model_config": args.model_config, "device": str(device),
           "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "bf16": args.bf16,
           "batch": args.batch, "crop": crop, "steps": args.steps, "params_m": params / 1e6,
           "images_per_s": args.batch * args.steps / elapsed, "seconds_per_step": elapsed / args.steps,
           "loss": metrics["loss"], "threads": args.threads}
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def bench_pseudo(args) -> list[dict]:
    import torch

    import sseg  # noqa: F401
    from pipelines.io.pseudo_label_cache import PseudoLabelCache, pseudo_label_identity
    from pipelines.evaluation.report import WORLD_DEFAULT_SEGMENT
    from pipelines.stages.pseudo_labels import LabelChunk, build_pseudo_label_cache, encode_png
    from sseg.checkpoints import CHECKPOINT_FILE
    from sseg.data.datasets import build_dataset
    from sseg.inference import SegmentConfig

    reader = build_dataset("world", args.root, "train")
    keys = reader.keys[:args.images]
    segment = SegmentConfig.model_validate({**WORLD_DEFAULT_SEGMENT, "bg_mode": "none"}).model_dump(mode="json")
    dataset = {"name": "world", "root": args.root, "split": "train"}
    checkpoint = Path(args.checkpoint)
    checkpoint_file = checkpoint / CHECKPOINT_FILE if checkpoint.is_dir() else checkpoint
    results = []

    torch.set_num_threads(args.threads)  # the plain loop: the same inference and encoding in one process
    labeller = LabelChunk(str(checkpoint), dataset, list(reader.class_names), segment, "bench", args.threads)
    started = time.perf_counter()
    for index in range(len(keys)):
        _, image, _ = labeller.reader[index]
        labels, confidence = labeller.label(image)
        encode_png(image), encode_png(labels), encode_png(confidence)
    plain = len(keys) / (time.perf_counter() - started)
    results.append({"what": "pseudo_labels_plain_loop", "images": len(keys), "images_per_s": plain,
                    "threads": args.threads})

    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as tmp:
        identity = pseudo_label_identity(checkpoint_file=checkpoint_file, class_names=list(reader.class_names),
                                         segment=segment, dataset="world", split="train", keys=list(keys),
                                         chunk_size=args.chunk)
        cache = PseudoLabelCache(Path(tmp) / "cache", identity).open()
        summary = build_pseudo_label_cache(cache, checkpoint, dataset, list(reader.class_names), segment,
                                           num_actors=args.actors, threads=args.threads)
    ray.shutdown()
    results.append({"what": "pseudo_labels_ray_data", "images": summary["images_labelled"],
                    "images_per_s": summary["images_per_s"], "actors": args.actors, "threads_per_actor": args.threads,
                    "speedup_vs_plain": summary["images_per_s"] / plain, "includes": "actor start-up, Parquet writes"})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    train = sub.add_parser("train")
    train.add_argument("--model-config", default="sseg_plus_tiny")
    train.add_argument("--classes", type=int, default=21)
    train.add_argument("--batch", type=int, default=16)
    train.add_argument("--crop", type=int, default=None)
    train.add_argument("--steps", type=int, default=20)
    train.add_argument("--warmup", type=int, default=3)
    train.add_argument("--device", default="cpu")
    train.add_argument("--bf16", action="store_true")
    train.add_argument("--channels-last", action="store_true")
    train.add_argument("--threads", type=int, default=2)
    pseudo = sub.add_parser("pseudo")
    pseudo.add_argument("--checkpoint", required=True)
    pseudo.add_argument("--root", default=str(ROOT / "data/world/voc"))
    pseudo.add_argument("--images", type=int, default=400)
    pseudo.add_argument("--chunk", type=int, default=100)
    pseudo.add_argument("--actors", type=int, default=2)
    pseudo.add_argument("--cpus", type=int, default=2)
    pseudo.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    results = [bench_train(args)] if args.mode == "train" else bench_pseudo(args)
    for result in results:
        print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
