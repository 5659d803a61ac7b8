"""SemiVL reads labelled masks through the dataset reader's label transform (issue 24): Cityscapes label PNGs
hold raw labelIds (road = 7, car = 26, ...), the model's classes are the 19 train ids (road = 0, car = 13);
without the transform every raw id >= 19 became ignore and the rest the wrong class."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _cityscapes_pair(tmp_path):
    labels = np.full((16, 16), 7, np.uint8)  # road
    labels[:, 8:] = 26  # car
    labels[:4] = 0  # unlabeled -> ignore
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a_leftImg8bit.png")
    Image.fromarray(labels).save(tmp_path / "a_gtFine_labelIds.png")
    return str(tmp_path / "a_leftImg8bit.png"), str(tmp_path / "a_gtFine_labelIds.png")


def test_weak_views_apply_the_readers_label_transform(tmp_path):
    from pipelines.stages.semivl_data import weak_views
    from sseg.data.readers.scenes import cityscapes_ids_to_train_ids

    image, label = _cityscapes_pair(tmp_path)
    batch = {"row": np.array([0]), "image_l": np.array([image]), "label_l": np.array([label]),
             "image_u": np.array([image])}
    out = weak_views(batch, crop=16, scale=(1.0, 1.0), num_classes=19, seed=0,
                     label_transform=cityscapes_ids_to_train_ids)
    values = set(np.unique(out["label_l"]).tolist())
    assert values == {0, 13, 255}  # road, car, ignore
    assert (out["label_l"] == 13).sum() == 12 * 8 and (out["label_l"] == 255).sum() == 4 * 16


def test_semivl_dataset_passes_the_transform_to_its_map(monkeypatch):
    import ray

    from pipelines.stages.semivl_data import semivl_dataset, weak_views
    from sseg.data.readers.scenes import cityscapes_ids_to_train_ids

    calls = []

    class Rows:  # stands in for the Ray dataset of rows: records the map it gets
        def map_batches(self, fn, **kwargs):
            calls.append((fn, kwargs["fn_kwargs"]))
            return self

    monkeypatch.setattr(ray.data, "from_items", lambda rows, **kwargs: Rows())
    semivl_dataset((["a.png"], ["a_l.png"]), ["b.png"], crop=16, scale=(1.0, 1.0), num_classes=19, seed=0,
                   label_transform=cityscapes_ids_to_train_ids)
    assert calls[0][0] is weak_views and calls[0][1]["label_transform"] is cityscapes_ids_to_train_ids


def test_prepared_carries_the_readers_label_transform():
    import dataclasses

    from pipelines.inputs.semivl import Prepared

    assert "label_transform" in {f.name for f in dataclasses.fields(Prepared)}
