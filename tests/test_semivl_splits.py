"""SemiVL's benchmark splits (issue 24, defect 4): UniMatch's labelled lists ship with the package, the
unlabelled set is the training pool minus them, and VOC's ``train_aug`` pool is read without labels for
the unlabelled images."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from sseg.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
# sha256 of the sorted ids of UniMatch's splits/pascal/<n>/unlabeled.txt (commit 0324f3d): the shipped
# labelled list subtracted from the shipped train_aug pool must give exactly UniMatch's unlabelled set
UNIMATCH_UNLABELED_SHA256 = {
    "92": (10490, "7ea77f8ddd7b327e30f9f6e0f9e44b408759cb4353de85666ac7ee137932b6f9"),
    "1464": (9118, "6d42f86cb89ef37e793748bac95003e09cf3a88ac6453cc678a0c67b45ed0aa5"),
}


def _lines(path: Path) -> list[str]:
    return path.read_text().split()


def test_shipped_voc_splits_are_unimatchs_lists():
    from sseg.semivl.splits import SHIPPED_DIR, resolve_split, shipped_splits

    splits = shipped_splits("voc")
    assert sorted(splits, key=int) == ["92", "183", "366", "732", "1464"]
    pool = _lines(SHIPPED_DIR / "voc" / "train_aug.txt")
    assert len(pool) == len(set(pool)) == 10582
    train = set(_lines(splits["1464"] / "labeled.txt"))
    for name, directory in splits.items():
        labeled = _lines(directory / "labeled.txt")
        assert len(labeled) == len(set(labeled)) == int(name) and set(labeled) <= train <= set(pool)
    for name, (count, digest) in UNIMATCH_UNLABELED_SHA256.items():
        split = resolve_split("voc", None, int(name), pool, seed=0)
        assert split.official and len(split.unlabeled) == count
        assert hashlib.sha256("\n".join(sorted(split.unlabeled)).encode()).hexdigest() == digest
    cityscapes = shipped_splits("cityscapes")
    assert {n: len(_lines(d / "labeled.txt")) for n, d in cityscapes.items()} == {
        "1_16": 186, "1_2": 1488, "1_30": 100, "1_4": 744, "1_8": 372}
    assert all(re.fullmatch(r"[a-z_]+/[a-z_]+_\d{6}_\d{6}", i) for i in _lines(cityscapes["1_16"] / "labeled.txt"))


def test_resolve_split_names_folders_and_counts(tmp_path):
    from sseg.semivl.splits import resolve_split

    pool = [f"id{i}" for i in range(10)]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "labeled.txt").write_text("JPEGImages/id3.jpg SegmentationClass/id3.png\nid7\n")
    split = resolve_split("world", str(tmp_path / "s"), 99, pool, seed=0)
    assert split.labeled == ("id3", "id7") and split.unlabeled == tuple(i for i in pool if i not in ("id3", "id7"))
    assert split.official and "pool minus" in split.description
    by_name = resolve_split("voc", "voc/92", 5, _lines(ROOT / "sseg/data/splits/voc/train_aug.txt"), seed=0)
    assert len(by_name.labeled) == 92 and "voc/92" in by_name.description
    drawn = resolve_split("voc", None, 100, [f"id{i}" for i in range(300)], seed=0)  # no benchmark split of 100
    assert not drawn.official and len(drawn.labeled) == 100
    with pytest.raises(ConfigError, match=r"voc/92.*|shipped split"):
        resolve_split("voc", "splits/pascal/93", 92, pool, seed=0)


def _jpeg(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(path)


def _label(path: Path, value: int = 0) -> None:
    from PIL import Image

    image = Image.fromarray(np.full((8, 8), value, np.uint8), mode="P")
    image.putpalette([0, 0, 0] * 256)
    image.save(path)


@pytest.fixture(scope="module")
def voc_train_aug(tmp_path_factory):
    """A VOC 2012 tree holding every train_aug image (one 8x8 JPEG, hard-linked) and labels only for
    VOC's 1464 train images (no SBD masks), no ImageSets/Segmentation/train_aug.txt, 2 val images."""
    import os

    base = tmp_path_factory.mktemp("voc") / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    split_dir = ROOT / "sseg/data/splits/voc"
    pool = _lines(split_dir / "train_aug.txt")
    first = base / "JPEGImages" / f"{pool[0]}.jpg"
    _jpeg(first)
    for key in pool[1:]:
        os.link(first, base / "JPEGImages" / f"{key}.jpg")
    label = base / "SegmentationClass" / "label.png"
    _label(label, 15)
    for key in _lines(split_dir / "1464" / "labeled.txt"):
        os.link(label, base / "SegmentationClass" / f"{key}.png")
    label.unlink()
    for key in ("2007_000033", "2007_000042"):
        _jpeg(base / "JPEGImages" / f"{key}.jpg")
        _label(base / "SegmentationClass" / f"{key}.png")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    return base


def test_voc_train_aug_pool_without_labels_for_unlabelled_images(voc_train_aug):
    from sseg.data.datasets import build_dataset

    reader = build_dataset("voc", voc_train_aug.parent.parent, "train_aug", require_labels=False)
    assert len(reader) == 10582 and reader.label_paths[0].parent.name == "SegmentationClass"
    with pytest.raises(DataError, match="label file not found"):  # a labelled reader still needs them all
        build_dataset("voc", voc_train_aug.parent.parent, "train_aug")


def test_voc_train_aug_labels_come_from_segmentation_class_aug(tmp_path):
    from sseg.data.readers.voc import VOCSegmentation

    base = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    for key in ("a", "b"):
        _jpeg(base / "JPEGImages" / f"{key}.jpg")
        _label(base / "SegmentationClassAug" / f"{key}.png", 3)
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("a\nb\n")
    reader = VOCSegmentation(tmp_path, "train_aug")
    assert reader.keys == ["a", "b"] and int(reader[1][2].max()) == 3


def test_semivl_voc92_starts_on_the_train_aug_pool(voc_train_aug, tmp_path):
    """The run's input check (what jobs/semivl.py does before any work) on configs/semivl_voc.yaml's data
    section: the shipped 92-image split, 10,490 unlabelled images without label files."""
    from pipelines.runs.semivl import prepare
    from schemas.configs import SemiVLConfig
    from test_semivl import TINY_SSEG, _tiny_sseg_checkpoint

    checkpoint = _tiny_sseg_checkpoint(tmp_path / "sseg")
    cfg = SemiVLConfig.model_validate({
        "world": None,
        "data": {"dataset": "voc", "root": str(voc_train_aug), "train_split": "train_aug", "num_labeled": 92,
                 "templates": "single", "concepts": None},
        "vlm": {"kind": "sseg", "checkpoint": str(checkpoint), "embed_dim": TINY_SSEG["embed_dim"]}})
    prep = prepare(cfg)
    assert prep.split.official and "voc/92" in prep.split.description
    assert len(prep.labeled_paths[0]) == 92 and len(prep.unlabeled_paths) == 10490
    assert prep.tags["sseg.split_official"] == "true"


def test_readme_split_pointers_exist():
    from sseg.semivl.splits import resolve_split

    text = (ROOT / "README.md").read_text() + (ROOT / "configs" / "semivl_voc.yaml").read_text()
    pointers = re.findall(r"data\.split_dir=(\S+)", text)
    assert pointers
    pool = _lines(ROOT / "sseg/data/splits/voc/train_aug.txt")
    for pointer in pointers:
        assert len(resolve_split("voc", pointer, 1, pool, seed=0).labeled) > 1
