"""Where does a SemiVL training step spend its time? The world default's step, outside Ray, timed by part.

Builds the SemiVL model of the world default (the demo's S-Seg model as VLM, random weights: the time does
not depend on them) with the config's decoder sizes, and times, over a few dozen steps on synthetic 64-px
batches: the whole update, and each part of the loss on its own (strong views, the weak view's
pseudo-labels, the guidance forward, the training forward, backward + optimizer). Model overrides are the
same ``key=value`` dotted overrides as the job's (``model.dense_pool=1``, ``train.batch_size=16``,
``components.class_definitions=guidance``).

    python research/profile_semivl_step.py
    python research/profile_semivl_step.py components.class_definitions=guidance train.supervised_only=true
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


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="SemiVLConfig overrides, key=value")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from schemas.configs import PretrainConfig, SemiVLConfig
    from sseg.config import load_config
    from sseg.semivl.concepts import decoder_and_guide_classes
    from sseg.semivl.config import SemiVLModelConfig
    from sseg.semivl.model import build_semivl_model, dense_class_similarity
    from sseg.semivl.step import SemiVLStep, SemiVLStepSettings, _normalise, _unit
    from sseg.semivl.augment import strong_view
    from sseg.world.vocab import WORLD_CLASSES

    torch.set_num_threads(args.threads)
    cfg = load_config(SemiVLConfig, None, args.overrides)
    names = list(WORLD_CLASSES)
    classes, guide_classes = decoder_and_guide_classes(names, cfg.data.concepts, cfg.components.class_definitions)
    sseg_cfg = PretrainConfig().model.model_dump(mode="json")
    model_config = SemiVLModelConfig(vlm="sseg", sseg=sseg_cfg, image_size=cfg.data.crop_size,
                                     decoder="language", **cfg.model).model_dump(mode="json")
    torch.manual_seed(0)
    model = build_semivl_model(model_config, "sseg", None, vl_init=False)
    t = cfg.train
    guidance = cfg.components.guidance and not t.supervised_only
    settings = SemiVLStepSettings(total_steps=t.steps, semi=not t.supervised_only, tau=t.tau, guidance=guidance)
    step = SemiVLStep.create(model, model_config, classes, cfg.data.templates, device=torch.device("cpu"),
                             spatial_ft=cfg.components.spatial_ft, guidance=guidance, lr=t.lr,
                             head_lr_mult=t.head_lr_mult, backbone_lr_mult=t.backbone_lr_mult,
                             weight_decay=t.weight_decay, total_steps=t.steps, warmup_steps=0, poly_power=0.9,
                             settings=settings, guide_classes=guide_classes)
    rng = np.random.default_rng(0)
    b, crop = t.batch_size, cfg.data.crop_size
    batch = {"image_l": rng.integers(0, 256, (b, crop, crop, 3), dtype=np.uint8),
             "label_l": rng.integers(0, len(names), (b, crop, crop), dtype=np.uint8),
             "image_u": rng.integers(0, 256, (b, crop, crop, 3), dtype=np.uint8),
             "ignore_u": np.zeros((b, crop, crop), np.uint8)}

    def update():
        loss, _ = step.loss(batch)
        step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step.optimizer.step()

    u01 = _unit(batch["image_u"], step.device)
    u = _normalise(u01)
    x = _normalise(_unit(batch["image_l"], step.device))
    text = step.text

    def strong():
        torch.stack([strong_view(img, step.rng) for img in u01])

    def weak_pseudo():
        with torch.no_grad():
            step.core.eval()
            step.core(u, text.embeddings, text.concept_to_class, text.num_classes)
            step.core.train()

    def guide():
        with torch.no_grad():
            dense_class_similarity(step.guide_vlm or step.core.vlm, u, step.guide_text.embeddings,
                                   step.guide_text.concept_to_class, step.guide_text.num_classes)

    views = 1 if t.supervised_only else 4
    images = torch.cat([x] + ([] if t.supervised_only else [u, u, u]))

    def forward():
        with torch.no_grad():
            step._forward(images, fp_range=None if t.supervised_only else (b, 2 * b))

    def forward_backward():
        step._forward(images, fp_range=None if t.supervised_only else (b, 2 * b)).float().logsumexp(1).mean().backward()

    def vlm_dense():
        with torch.no_grad():
            step.core.vlm.dense(images)

    result = {"overrides": args.overrides, "threads": args.threads, "labelled": b,
              "unlabelled": 0 if t.supervised_only else b, "decoder_concepts": int(text.embeddings.shape[0]),
              "ms": {}}
    parts = {"update (whole step)": update, "forward, all views (no grad)": forward,
             "  of it: VLM dense features": vlm_dense, "forward + backward, all views": forward_backward}
    if not t.supervised_only:
        parts.update({"strong views (colour, blur)": strong, "weak-view pseudo-labels": weak_pseudo})
        if guidance:
            parts["guidance forward"] = guide
    for name, fn in parts.items():
        result["ms"][name] = round(1000 * timed(fn, args.steps), 1)
    per_step = result["ms"]["update (whole step)"] / 1000
    result["images_per_s"] = round((result["labelled"] + result["unlabelled"]) / per_step, 1)
    result["views_through_decoder"] = views * b
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
