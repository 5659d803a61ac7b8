"""Model rows of `make bench-gpu` (benchmarks/gpu.py): pseudo-masks, the three training steps, evaluation.

Each function takes the run's Context and returns rows (Context.row). Models are built through the
project's public entry points (named model configs + the model registry, the pseudo-mask generator
registry, the training-step classes) and imported inside the functions, so a rename is a one-line fix.
Sizes: the papers' on GPU; ``--smoke`` uses the tiny configs so the same code runs on CPU in seconds.
"""

from __future__ import annotations

import time

PM_BATCHES = [256, 512, 1024, 2048, 4096, 8192]  # doubled until one does not fit
SSEG_BATCHES = [64, 128, 256]  # 64 per GPU is the paper's (4096 over 64 GPUs)
CAPTION_WORDS = ("dog", "cat", "car", "tree", "person", "boat", "table", "bird", "horse", "chair", "sofa",
                 "train", "bottle", "sheep", "plant", "road", "sky", "grass", "building", "bicycle")
# A CLIP of the paper's shape, shrunk (patch 16, 5 blocks), for --smoke.
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 5, "width": 64, "patch_size": 16, "head_width": 32},
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
TINY_HEAD = {"channels": 16, "text_channels": 16, "up_channels": [16, 8], "skip_channels": [8, 4],
             "transformer_heads": 2}
# configs/semivl_voc.yaml's model section (SemiVL on Pascal VOC)
SEMIVL_HEAD = {"channels": 128, "text_channels": 128, "up_channels": [64, 32], "skip_channels": [32, 16],
               "clip_skip_blocks": [1, 4], "transformer_heads": 4, "pool_size": 4, "dense_pool": 1}


# ----------------------------------------------------------------------------- inputs


def blocky_images(batch: int, height: int, width: int, device, seed: int = 0, block: int = 16):
    """uint8 [B, H, W, 3] made of flat block×block patches (segment-like, unlike per-pixel noise)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 256, (batch, 3, max(1, height // block), max(1, width // block)),
                           generator=generator, dtype=torch.uint8)
    full = F.interpolate(coarse.to(device).float(), size=(height, width), mode="nearest")
    return full.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def blocky_labels(batch: int, size: int, classes: int, seed: int = 1):
    """uint8 numpy [B, size, size] label maps of 8×8 blocks with ids < ``classes``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (batch, -(-size // 8), -(-size // 8)), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(8, 1).repeat(8, 2)[:, :size, :size])


def captions(batch: int, seed: int = 2) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [f"a photo of a {a} and a {b} near the {c}" for a, b, c in rng.choice(CAPTION_WORDS, (batch, 3))]


def voc_class_names() -> list[str]:
    from sseg.prompts import dataset_class_definitions

    return [d.name for d in dataset_class_definitions("voc")]


# ----------------------------------------------------------------------------- pseudo-masks


def _pm_generator(ctx):
    from sseg.pseudo_masks import PseudoMaskConfig, build_generator

    config = PseudoMaskConfig(generator="dino", dino_allow_random_init=True, num_segments=8,
                              device=str(ctx.device), bf16=ctx.bf16)
    return build_generator(config)


def _kmeans_only(generator, features):
    """The K-Means call of DinoKMeansGenerator.generate on given features (timing split, iterations)."""
    import torch

    from sseg.pseudo_masks import batched_kmeans

    cfg = generator.config
    return batched_kmeans(features, k=cfg.num_segments, max_iter=cfg.max_iter, tol=cfg.tol,
                          generator=generator.kmeans_generator(),
                          distance_dtype=torch.bfloat16 if (cfg.bf16 and generator.device.type == "cuda") else None,
                          n_local_trials=cfg.kmeans_local_trials)


def _measure_pm(ctx, generator, name: str, batch: int, size: int, notes: str, splits: bool = True) -> dict:
    import torch

    images = blocky_images(batch, size, size, ctx.device)
    ctx.reset_memory()

    def end_to_end():
        with torch.inference_mode():
            return generator.generate(images)

    first = time.perf_counter()
    end_to_end()
    ctx.sync()
    first_call_s = time.perf_counter() - first
    per_call, calls = ctx.time_per_call(end_to_end, warmup=0)
    peak = ctx.peak_memory_gib()
    extra = {"seconds_per_batch": round(per_call, 4), "timed_calls": calls, "first_call_s": round(first_call_s, 2),
             "kmeans_k": generator.config.num_segments, "kmeans_max_iter": generator.config.max_iter,
             "kmeans_tol": generator.config.tol, "generator_bf16_active": generator._use_bf16()}
    if splits:
        with torch.inference_mode():
            features, _ = generator.features(images)
            result = _kmeans_only(generator, features)
        extra["kmeans_iterations_mean"] = round(float(result.n_iter.float().mean()), 2)
        extra["kmeans_iterations_max"] = int(result.n_iter.max())

        def vit():
            with torch.inference_mode():
                return generator.features(images)

        def kmeans():
            with torch.inference_mode():
                return _kmeans_only(generator, features)

        short = 0.0 if ctx.smoke else 0.5
        extra["vit_s_per_batch"] = round(ctx.time_per_call(vit, warmup=0, min_seconds=short)[0], 4)
        extra["kmeans_s_per_batch"] = round(ctx.time_per_call(kmeans, warmup=0, min_seconds=short)[0], 4)
        extra["upsample_and_rest_s_per_batch"] = round(
            max(0.0, per_call - extra["vit_s_per_batch"] - extra["kmeans_s_per_batch"]), 4)
        del features, result
    del images
    return ctx.row(name, batch=batch, image_size=size, images_per_s=batch / per_call, peak_memory_gib=peak,
                   notes=notes, **extra)


def pseudo_mask_rows(ctx) -> list[dict]:
    """DINO ViT-S/8 (random init, real architecture) + batched K-Means (K=8), uint8 images already on the
    device (normalised there), masks left on the device; batch doubled until it does not fit."""
    size = 32 if ctx.smoke else 224
    generator = _pm_generator(ctx)
    rows: list[dict] = []
    notes = "GPU-resident uint8 in, masks stay on the device; ViT random init"
    for batch in ctx.batches([2, 4] if ctx.smoke else PM_BATCHES):
        if rows and rows[-1]["status"] == "ok":
            last = rows[-1]["extra"]["seconds_per_batch"] * (batch / rows[-1]["batch"])
            if ctx.remaining() < 8 * last + 20:
                rows.append(ctx.row("pseudo_masks_dino_kmeans", batch=batch, image_size=size, images_per_s=None,
                                    status="skipped", notes="budget"))
                break
        row = ctx.attempt("pseudo_masks_dino_kmeans", batch, size,
                          lambda: _measure_pm(ctx, generator, "pseudo_masks_dino_kmeans", batch, size, notes))
        if row["status"] == "oom":
            row["notes"] = "the largest batch that fits is the one above"
        rows.append(row)
        if row["status"] != "ok":
            break
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        best = max(ok, key=lambda r: r["images_per_s"])
        best["extra"]["best"] = True
        ctx.shared["pm_best_batch"] = best["batch"]
        ctx.shared["pm_best_images_per_s"] = best["images_per_s"]
    return rows


def pseudo_mask_compiled_rows(ctx) -> list[dict]:
    """The same at the best batch with the ViT's forward_features under torch.compile (compile time apart)."""
    import torch

    size = 32 if ctx.smoke else 224
    batch = ctx.shared.get("pm_best_batch", 2 if ctx.smoke else 1024)
    if not ctx.cuda:
        return [ctx.row("pseudo_masks_dino_kmeans_compiled", batch=batch, image_size=size, images_per_s=None,
                        status="skipped", notes="torch.compile row runs on GPU only")]
    generator = _pm_generator(ctx)
    generator.model.forward_features = torch.compile(generator.model.forward_features)
    row = _measure_pm(ctx, generator, "pseudo_masks_dino_kmeans_compiled", batch, size,
                      "torch.compile(ViT forward_features), default mode; first_call_s includes compiling",
                      splits=False)
    return [row]


# ----------------------------------------------------------------------------- training steps


def _timed_step_row(ctx, name: str, fn, batch: int, image_size, notes: str, images_per_step: int | None = None,
                    dtype: str | None = None, **extra) -> dict:
    ctx.reset_memory()
    per_call, calls = ctx.time_per_call(fn)
    return ctx.row(name, batch=batch, image_size=image_size, images_per_s=(images_per_step or batch) / per_call,
                   peak_memory_gib=ctx.peak_memory_gib(), notes=notes, dtype=dtype,
                   seconds_per_step=round(per_call, 4), timed_steps=calls, **extra)


def sseg_pretrain_rows(ctx) -> list[dict]:
    """S-Seg pretraining step (Swin-S, 224, 64 queries, text tower 12x256): forward + Hungarian-matched mask
    losses + contrastive loss + backward + AdamW, bf16 autocast; once with the batch already on the device,
    once from a numpy batch as the data pipeline hands it over (tokenising, normalising and copying included)."""
    import torch

    from sseg.losses.criterion import SSegCriterion
    from sseg.models.registry import create_model, load_model_config, validate_model_config
    from sseg.training import TrainStep, build_optimizer, cosine_with_warmup, prepare_batch

    config_name = "sseg_tiny" if ctx.smoke else "sseg_swin_s"
    model_name, config = load_model_config(config_name)
    cfg = validate_model_config(model_name, config)
    torch.manual_seed(0)
    model = create_model(model_name, cfg).to(ctx.device)
    optimizer = build_optimizer(model, 5e-4, 0.05, (0.9, 0.999))
    train_step = TrainStep(model, SSegCriterion(), optimizer, cosine_with_warmup(optimizer, 10 ** 6, 0),
                           num_segments=8, grad_clip=None, bf16=ctx.bf16)
    size = cfg.image_size
    params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    rows: list[dict] = []
    for batch in ctx.batches([2] if ctx.smoke else SSEG_BATCHES):
        host = {"image": blocky_images(batch, size, size, "cpu").numpy(), "segments": blocky_labels(batch, size, 8),
                "caption": captions(batch)}
        name = f"sseg_pretrain_step[{config_name}]"

        def on_device_step():
            on_device = prepare_batch(host["image"], host["segments"], host["caption"], cfg.context_length,
                                      ctx.device)
            return _timed_step_row(ctx, name, lambda: train_step(on_device), batch, size,
                                   "batch already on the device", params_m=params_m)

        def from_host():  # what SSegPretrainStep does with a numpy batch from the data pipeline
            return train_step(prepare_batch(host["image"], host["segments"], host["caption"],
                                            cfg.context_length, ctx.device))

        for row in (ctx.attempt(name, batch, size, on_device_step),
                    ctx.attempt(name + "+host_prep", batch, size, lambda: _timed_step_row(
                        ctx, name + "+host_prep", from_host, batch, size,
                        "numpy batch: tokenise + normalise on CPU, copy, then the step", params_m=params_m))):
            rows.append(row)
            if row["status"] != "ok":
                optimizer.zero_grad(set_to_none=True)
                ctx.reset_memory()
                break
        if rows[-1]["status"] != "ok":
            break
        if ctx.remaining() < 30:
            break
    return rows


def sseg_plus_rows(ctx) -> list[dict]:
    """S-Seg+ self-training step: UperNet on ViT-B/16 at 512, batch 16, 21 VOC classes, layer-decay AdamW."""
    import torch

    from sseg.models.registry import load_model_config
    from sseg.self_training import SSegPlusStep

    config_name = "sseg_plus_tiny" if ctx.smoke else "sseg_plus_vit_b16"
    _, config = load_model_config(config_name)
    classes = voc_class_names()
    config = {**config, "class_names": classes}
    torch.manual_seed(0)
    step = SSegPlusStep.create(config, device=ctx.device, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999),
                               layer_decay=0.7, total_steps=10 ** 6, warmup_steps=0, bf16=ctx.bf16)
    crop = int(config["image_size"])
    batch = ctx.batches([2 if ctx.smoke else 16])[0]
    data = {"image": blocky_images(batch, crop, crop, "cpu").numpy(),
            "label": blocky_labels(batch, crop, len(classes))}
    params_m = round(sum(p.numel() for p in step.model.parameters()) / 1e6, 1)
    return [_timed_step_row(ctx, f"sseg_plus_step[{config_name}]", lambda: step.run(data), batch, crop,
                            "SSegPlusStep.run from a numpy batch", params_m=params_m)]


def semivl_rows(ctx) -> list[dict]:
    """SemiVL step: CLIP ViT-B/16 at 512, 8 labelled + 8 unlabelled images, the four views (labelled, weak with
    feature perturbation, two strong CutMix views) + dense VL guidance from a frozen copy; spatial fine-tuning.
    The pipeline runs this step in fp32; a bf16-autocast wrapper row shows what bf16 would give."""
    import torch

    from sseg.models.registry import create_model
    from sseg.prompts import dataset_class_definitions
    from sseg.semivl.step import SemiVLStep, SemiVLStepSettings

    if ctx.smoke:
        config = {"vlm": "clip", "clip_model_cfg": TINY_CLIP, "image_size": 64, **TINY_HEAD}
    else:
        config = {"vlm": "clip", "clip_model": "ViT-B-16", "image_size": 512, **SEMIVL_HEAD}
    torch.manual_seed(0)
    classes = dataset_class_definitions("voc", use_concepts=True)
    # configs/semivl_voc.yaml's training settings: lr 1e-4 (head x10, backbone x0.01), wd 0.01, poly 0.9
    step = SemiVLStep.create(create_model("semivl", config), config, classes, "single", device=ctx.device,
                             spatial_ft=True, guidance=True, lr=1e-4, head_lr_mult=10.0, backbone_lr_mult=0.01,
                             weight_decay=0.01, total_steps=10 ** 6, warmup_steps=0, poly_power=0.9,
                             settings=SemiVLStepSettings(total_steps=10 ** 6, guidance=True))
    text = step.text
    size = int(config["image_size"])
    half = ctx.batches([2 if ctx.smoke else 8])[0]
    data = {"image_l": blocky_images(half, size, size, "cpu", seed=3).numpy(),
            "label_l": blocky_labels(half, size, text.num_classes),
            "image_u": blocky_images(half, size, size, "cpu", seed=4).numpy(),
            "ignore_u": blocky_labels(half, size, 1)}  # all 0: nothing padded
    notes = (f"{half}+{half} images/step (img/s counts both); {len(classes)} classes, "
             f"{text.embeddings.shape[0]} concepts")
    name = "semivl_step[tiny_clip]" if ctx.smoke else "semivl_step[clip_vit_b16]"
    rows = [ctx.attempt(name, half, size, lambda: _timed_step_row(
        ctx, name, lambda: step.run(data), half, size, notes + "; fp32 as the pipeline runs it",
        images_per_step=2 * half, dtype="fp32"))]
    if ctx.bf16:
        def bf16_step():
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
                return step.run(data)

        rows.append(ctx.attempt(name + "+autocast", half, size, lambda: _timed_step_row(
            ctx, name + "+autocast", bf16_step, half, size,
            notes + "; bf16 autocast around the step (not in the pipeline yet)", images_per_step=2 * half)))
    return rows


# ----------------------------------------------------------------------------- evaluation


def eval_rows(ctx) -> list[dict]:
    """GroupViT / S-Seg evaluation protocol: short side 448, sliding 448 windows at stride 224, the 80 CLIP
    templates, background by threshold; S-Seg Swin-S on VOC's 20 classes, 500x375 images (VOC's usual size)."""
    import torch

    from sseg.inference import SegmentConfig, Segmenter
    from sseg.models.registry import create_model, load_model_config
    from sseg.prompts import dataset_class_definitions

    config_name = "sseg_tiny" if ctx.smoke else "sseg_swin_s"
    torch.manual_seed(0)
    model = create_model(*load_model_config(config_name)).to(ctx.device).eval()
    if ctx.smoke:
        cfg = SegmentConfig(short_side=64, window=64, stride=32, templates="single")
        height, width, count = 60, 80, 2
    else:
        cfg = SegmentConfig()
        height, width, count = 375, 500, ctx.batches([16])[0]
    started = time.perf_counter()
    segmenter = Segmenter.for_classes(model, dataset_class_definitions("voc"), cfg)
    build_s = time.perf_counter() - started
    images = [im.numpy() for im in blocky_images(count, height, width, "cpu", seed=5)]

    def predict_all():
        for image in images:
            segmenter.predict(image, return_scores=False)

    rows = []
    size = f"{width}x{height} -> short side {cfg.short_side}, window {cfg.window}/{cfg.stride}"
    notes = f"Segmenter.predict per image, windows batched by {cfg.batch_size}; {len(images)} images per call"
    variants = [("fp32", predict_all)]
    if ctx.bf16:
        def predict_all_bf16():
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
                predict_all()

        variants.append(("bf16", predict_all_bf16))
    name = f"eval_groupvit_sliding[{config_name}]"

    def measure(dtype, fn):
        ctx.reset_memory()
        per_call, calls = ctx.time_per_call(fn, warmup=1, max_calls=10)
        return ctx.row(name, batch=1, image_size=size, images_per_s=len(images) / per_call,
                       peak_memory_gib=ctx.peak_memory_gib(), dtype=dtype,
                       notes=notes + ("" if dtype == "fp32" else "; bf16 autocast wrapper"),
                       classifier_build_s=round(build_s, 2), templates=len(segmenter.classifier.templates),
                       timed_calls=calls)

    for dtype, fn in variants:
        rows.append(ctx.attempt(name, 1, size, lambda: measure(dtype, fn)))
    return rows
