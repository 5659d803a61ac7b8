"""Colour-only probe on the world's things: how much does a thing region's colour alone tell its class?

    .venv/bin/python benchmarks/bench_world_probe.py [--presets v1 v2 debug] [--images 600] [--size 64] [--seed 0]

For each preset, renders ``--images`` labelled val images; every connected ground-truth region of a
thing class (>= 8 px, 8-connected) gives one feature vector: the region's mean CIE Lab colour plus a
12-bin hue histogram weighted by saturation (per pixel, so it sums to the region's mean saturation).
A logistic regression on standardised features is trained on the regions of the first half of the
images and tested on the second half (no image in both). Prints one JSON line per preset: accuracy
over the ten things, chance (1/10), majority (the test share of the training half's most frequent
class), region counts, and the mean fraction of thing pixels per image. Targets: v2 <= 0.5 (colour
narrows the class but does not name it), debug >= 0.9 (colour names it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sseg.world import THING_CLASSES, WorldConfig, render_sample  # noqa: E402

HUE_BINS = 12
MIN_REGION_PIXELS = 8
_EIGHT = np.ones((3, 3), dtype=bool)
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 sRGB -> (N, 3) CIE Lab (D65)."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def hue_histogram(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (HUE_BINS,) HSV hue histogram, each pixel weighted by its saturation, / N."""
    c = rgb.astype(np.float64) / 255.0
    high, low = c.max(axis=1), c.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-12), 0.0)
    r, g, b = c.T
    safe = np.maximum(chroma, 1e-12)
    hue = np.where(high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    bins = np.minimum((hue / 6 * HUE_BINS).astype(int), HUE_BINS - 1)
    return np.bincount(bins, weights=saturation, minlength=HUE_BINS) / len(rgb)


def region_features(image: np.ndarray, label: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """One feature vector and class id per connected thing region of >= MIN_REGION_PIXELS pixels."""
    features, targets = [], []
    for class_id in np.unique(label):
        if class_id >= len(THING_CLASSES):
            continue
        components, count = ndimage.label(label == class_id, structure=_EIGHT)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        for component in np.flatnonzero(sizes[1:] >= MIN_REGION_PIXELS) + 1:
            pixels = image[components == component]
            features.append(np.concatenate([rgb_to_lab(pixels).mean(axis=0), hue_histogram(pixels)]))
            targets.append(int(class_id))
    return features, targets


def probe(preset: str, images: int, size: int, seed: int) -> dict[str, object]:
    config = WorldConfig(image_size=size, seed=seed, preset=preset)
    halves: list[tuple[list[np.ndarray], list[int]]] = [([], []), ([], [])]
    thing_fraction = []
    for index in range(images):
        sample = render_sample(seed, index, config, "val")
        features, targets = region_features(sample.image, sample.label)
        half = halves[int(index >= images // 2)]
        half[0].extend(features)
        half[1].extend(targets)
        thing_fraction.append(float((sample.label < len(THING_CLASSES)).mean()))
    (x_train, y_train), (x_test, y_test) = [(np.array(x), np.array(y)) for x, y in halves]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    model.fit(x_train, y_train)
    majority_class = np.bincount(y_train, minlength=len(THING_CLASSES)).argmax()
    return {
        "preset": preset,
        "images": images,
        "image_size": size,
        "accuracy": round(float(model.score(x_test, y_test)), 4),
        "chance": round(1 / len(THING_CLASSES), 4),
        "majority": round(float((y_test == majority_class).mean()), 4),
        "regions_train": int(len(y_train)),
        "regions_test": int(len(y_test)),
        "thing_pixel_fraction": round(float(np.mean(thing_fraction)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["v1", "v2", "debug"])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for preset in args.presets:
        print(json.dumps(probe(preset, args.images, args.size, args.seed)), flush=True)


if __name__ == "__main__":
    main()
