"""The COCO-Stuff 164k reader (TagCLIP's second setting): mmseg's converted train ids and the released
stuffthingmaps, mapped alike."""

import numpy as np
import pytest
from PIL import Image

from sseg.data.datasets import build_dataset
from sseg.data.readers.coco_stuff import stuffthing_to_train_ids
from sseg.errors import DataError
from sseg.tagclip.splits import resolve_split


def write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_raw_stuffthingmaps_map_to_the_171_train_ids():
    # category id - 1: person 0 -> 0, id 13 (stop sign, value 12) -> 11, the unused value 11 -> ignored,
    # toothbrush (id 90, value 89) -> 79, banner (id 92, value 91) -> 80, wood (id 182, value 181) -> 170
    raw = np.array([[0, 12, 11, 89], [91, 181, 255, 90]], dtype=np.uint8)
    np.testing.assert_array_equal(stuffthing_to_train_ids(raw), [[0, 11, 255, 79], [80, 170, 255, 255]])


@pytest.mark.parametrize("converted", [True, False])
def test_reader_reads_both_label_layouts(tmp_path, converted):
    image = np.random.default_rng(0).integers(0, 256, (2, 3, 3), dtype=np.uint8)
    write(tmp_path / "images" / "val2017" / "000000000139.jpg", image)
    if converted:
        label = np.array([[0, 20, 255], [170, 94, 19]], dtype=np.uint8)  # train ids
        write(tmp_path / "annotations" / "val2017" / "000000000139_labelTrainIds.png", label, "L")
    else:
        label = np.array([[0, 21, 255], [181, 105, 20]], dtype=np.uint8)  # raw = id - 1: elephant id 22 -> 21
        write(tmp_path / "annotations" / "val2017" / "000000000139.png", label, "L")
    ds = build_dataset("coco_stuff", tmp_path, "val")
    assert len(ds.class_names) == 171 and ds.background_index is None
    key, _, out = ds[0]
    assert key == "000000000139"
    np.testing.assert_array_equal(out, [[0, 20, 255], [170, 94, 19]])
    names = [ds.class_names[i] for i in (20, 94, 170, 19)]
    assert names == ["elephant", "clouds", "wood", "cow"]
    split = resolve_split("coco_stuff", ds.class_names)  # clouds and cow are unseen in the paper's split
    assert {94, 19} <= set(split.unseen) and 20 in split.seen


def test_reader_errors(tmp_path):
    with pytest.raises(DataError, match="COCO-Stuff split must be train or val"):
        build_dataset("coco_stuff", tmp_path, "test")
    with pytest.raises(DataError, match="COCO-Stuff image directory not found"):
        build_dataset("coco_stuff", tmp_path, "val")
