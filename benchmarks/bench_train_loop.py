"""The S-Seg training step in a plain single-process loop vs the same step under Ray Train.

Same model, same step function (sseg.training.TrainStep), same pre-cropped data held in memory; the only
difference is the loop around it. Also usable to try model variants quickly (``--variant``, ``--eval``):

    python benchmarks/bench_train_loop.py --mode both --steps 60
    python benchmarks/bench_train_loop.py --mode plain --steps 800 --variant pooled --eval
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import sseg  # noqa: E402,F401

TEXT = "words"
CANONICAL = False  # diagnostic only: world synonyms/plurals in the training text → the class name


def canonical_words(text: str) -> str:
    from sseg.world.vocab import _word_to_class

    table = _word_to_class()
    return " ".join(table.get(w, w) for w in text.split())


def load_samples(cache_dir: str, count: int, size: int, seed: int = 0):
    """Random-resized crops of ``count`` cache rows, decoded once (the data both loops share)."""
    from sseg.data.transforms import random_resized_crop

    rng = np.random.default_rng(seed)
    images, segments, captions = [], [], []
    files = sorted(Path(cache_dir).glob("*.parquet"))
    if not files:  # a cache base dir: take its newest <generator>-<hash> cache
        caches = sorted((p for p in Path(cache_dir).glob("*/") if any(p.glob("*.parquet"))),
                        key=lambda p: p.stat().st_mtime)
        if not caches:
            raise SystemExit(f"no pseudo-mask cache under {cache_dir}: run jobs/pseudo_masks.py first")
        files = sorted(caches[-1].glob("*.parquet"))
    for path in files:
        table = pq.read_table(path, columns=["image", "mask_png", "caption", "words"]).to_pylist()
        for row in table:
            image = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))
            mask = np.asarray(Image.open(io.BytesIO(row["mask_png"])))
            image, mask = random_resized_crop(image, size, rng, labels=mask)
            images.append(image)
            segments.append(mask)
            captions.append(" ".join(row["words"]) if TEXT in ("words", "word") and row["words"] else row["caption"])
            if CANONICAL:
                captions[-1] = canonical_words(captions[-1])
            if len(images) == count:
                return np.stack(images), np.stack(segments), np.asarray(captions, dtype=object)
    return np.stack(images), np.stack(segments), np.asarray(captions, dtype=object)


def build_step(model_cfg, num_segments: int, lr: float, total_steps: int, warmup: int, seed: int,
               weight_words: float = 0.0, weight_mask: float = 1.0, weight_contrastive: float = 1.0,
               caption_feature: str = "sequence"):
    from sseg.losses.contrastive import ContrastiveLoss
    from sseg.losses.criterion import SSegCriterion
    from sseg.models import SSegModel
    from sseg.training import TrainStep, build_optimizer, cosine_with_warmup

    torch.manual_seed(seed)
    model = SSegModel(model_cfg)
    optimizer = build_optimizer(model, lr, 0.05, (0.9, 0.999))
    scheduler = cosine_with_warmup(optimizer, total_steps, warmup)
    criterion = SSegCriterion(contrastive=ContrastiveLoss(), weight_words=weight_words, weight_mask=weight_mask,
                              weight_contrastive=weight_contrastive)
    return model, TrainStep(model, criterion, optimizer, scheduler, num_segments, 1.0,
                            caption_feature=caption_feature)


def plain_loop(data, model_cfg, args) -> tuple[float, torch.nn.Module, list]:
    from sseg.training import prepare_batch

    images, segments, captions = data
    model, step = build_step(model_cfg, 8, args.lr, args.steps, args.warmup, args.seed, args.words,
                             args.mask_weight, args.contrastive_weight, args.caption_feature)
    if args.freeze_text:  # diagnostic: keep the randomly initialised text tower (words stay apart)
        model.text_encoder.requires_grad_(False)
    rng = np.random.default_rng(args.seed)
    word_templates = None
    if args.words > 0 or args.caption_feature == "word_mean":
        from sseg.prompts import resolve_templates

        word_templates = resolve_templates(args.word_templates)
    history = []
    started = None
    for i in range(args.steps):
        if i == args.skip:
            started = time.perf_counter()
        idx = rng.choice(len(images), args.batch, replace=False)
        texts = captions[idx]
        if TEXT == "word":
            texts = np.asarray([rng.choice(t.split()) for t in texts], dtype=object)
        batch = prepare_batch(images[idx], segments[idx], texts, model_cfg.context_length,
                              torch.device("cpu"), word_templates)
        metrics = step(batch)
        if (i + 1) % 50 == 0:
            history.append({"step": i + 1, **{k: round(v, 4) for k, v in metrics.items()}})
            print(json.dumps(history[-1]), flush=True)
    measured = args.steps - args.skip
    return measured * args.batch / (time.perf_counter() - started), model, history


def ray_loop(data, model_cfg, args) -> float:
    import ray
    import ray.train
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    images, segments, captions = data
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}})
    ds = ray.data.from_items([{"image": i, "segments": s, "caption": c}
                              for i, s, c in zip(images, segments, captions)]).materialize()
    result_file = ROOT / "runs" / "bench" / "ray_rate.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    config = {"model": model_cfg.model_dump(mode="json"), "args": vars(args), "result_file": str(result_file)}

    def loop(cfg: dict) -> None:
        import sseg  # noqa: F401
        from sseg.models.config import ModelConfig
        from sseg.training import prepare_batch

        a = argparse.Namespace(**cfg["args"])
        torch.set_num_threads(a.threads)
        mcfg = ModelConfig.model_validate(cfg["model"])
        _, step = build_step(mcfg, 8, a.lr, a.steps, a.warmup, a.seed)
        shard = ray.train.get_dataset_shard("train")
        done, started = 0, None
        while done < a.steps:
            for batch in shard.iter_batches(batch_size=a.batch, batch_format="numpy", drop_last=True,
                                            prefetch_batches=2):
                if done == a.skip:
                    started = time.perf_counter()
                step(prepare_batch(batch["image"], batch["segments"], batch["caption"],
                                   mcfg.context_length, torch.device("cpu")))
                done += 1
                if done == a.steps:
                    break
        rate = (a.steps - a.skip) * a.batch / (time.perf_counter() - started)
        Path(cfg["result_file"]).write_text(json.dumps({"images_per_s": rate}))

    trainer = TorchTrainer(loop, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=RunConfig(storage_path=str(ROOT / "runs" / "bench"), name="bench"),
                           datasets={"train": ds})
    trainer.fit()
    ray.shutdown()
    return float(json.loads(result_file.read_text())["images_per_s"])


def evaluate(model, voc_root: str, max_images: int, templates: str) -> dict:
    from sseg.data.datasets import build_dataset
    from sseg.inference import SegmentConfig, Segmenter, build_text_classifier
    from sseg.metrics import ConfusionMatrix

    dataset = build_dataset("world", voc_root, "val")
    size = model.cfg.image_size
    seg_cfg = SegmentConfig(templates=templates, bg_mode="none", short_side=size, sliding=False,
                            window=size, stride=size)
    segmenter = Segmenter(model.eval(), build_text_classifier(model, list(dataset.class_names), templates),
                          seg_cfg)
    confusion = ConfusionMatrix(len(dataset.class_names))
    for i in range(min(max_images, len(dataset))):
        _, image, label = dataset[i]
        confusion.update(segmenter.predict(image, return_scores=False).labels, label)
    metrics = confusion.compute()
    names = list(dataset.class_names)
    per_class = {n: round(float(v), 3) for n, v in zip(names, metrics["per_class_iou"])}
    from sseg.world import THING_CLASSES

    things = [per_class[n] for n in THING_CLASSES if n in per_class]
    return {"miou": metrics["miou"], "miou_things": float(np.mean(things)) if things else None,
            "per_class_iou": per_class}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["plain", "ray", "both"], default="both")
    parser.add_argument("--cache", default=str(ROOT / "data/world/pseudo_masks"))
    parser.add_argument("--voc", default=str(ROOT / "data/world/voc"))
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10, help="warm-up steps not timed")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=["query", "pooled"], default="query")
    parser.add_argument("--model", nargs="*", default=[], help="ModelConfig overrides key=value")
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--text", choices=["words", "caption", "word"], default="words")
    parser.add_argument("--words", type=float, default=0.0, help="word-alignment loss weight")
    parser.add_argument("--word-templates", default="clip7")
    parser.add_argument("--caption-feature", choices=["sequence", "word_mean"], default="sequence")
    parser.add_argument("--mask-weight", type=float, default=1.0)
    parser.add_argument("--canonical-words", action="store_true",
                        help="diagnostic: replace the world's synonyms and plurals in the text by the class name")
    parser.add_argument("--contrastive-weight", type=float, default=1.0)
    parser.add_argument("--freeze-text", action="store_true",
                        help="diagnostic: never train the text tower (plain loop)")
    parser.add_argument("--eval-images", type=int, default=300)
    parser.add_argument("--templates", nargs="+", default=["clip7"])
    parser.add_argument("--save", help="save the trained model's state_dict here")
    parser.add_argument("--load", help="skip training: evaluate this saved state_dict")
    args = parser.parse_args()
    global TEXT, CANONICAL
    TEXT = args.text
    CANONICAL = args.canonical_words
    torch.set_num_threads(args.threads)
    from sseg.config import parse_overrides
    from sseg.models.config import tiny_model_config

    model_cfg = tiny_model_config(mask_feature_source=args.variant, **parse_overrides(args.model))
    data = load_samples(args.cache, 64 if args.load else args.samples, model_cfg.image_size, args.seed)
    result = {"batch": args.batch, "steps": args.steps, "threads": args.threads, "variant": args.variant}
    if args.mode in ("plain", "both"):
        if args.load:
            from sseg.models import SSegModel

            model = SSegModel(model_cfg)
            model.load_state_dict(torch.load(args.load, weights_only=True))
        else:
            rate, model, _ = plain_loop(data, model_cfg, args)
            result["plain_images_per_s"] = rate
        if args.save:
            torch.save(model.state_dict(), args.save)
        if args.eval:
            for templates in args.templates:
                result[f"miou_{templates}"] = evaluate(model, args.voc, args.eval_images, templates)["miou"]
    if args.mode in ("ray", "both"):
        result["ray_train_images_per_s"] = ray_loop(data, model_cfg, args)
    if "plain_images_per_s" in result and "ray_train_images_per_s" in result:
        result["ray_overhead"] = 1 - result["ray_train_images_per_s"] / result["plain_images_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
