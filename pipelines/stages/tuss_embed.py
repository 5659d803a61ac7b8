"""TUSS stage 1: mask embeddings of a split by Ray Data batch inference into the resumable Parquet cache.

Rows are chunks of the split (``TussCache``); an actor pool (one GPU per actor on a cluster) loads the VLM,
the dataset reader and the mask source once, and per image makes its masks (our pseudo-mask generator,
S-Seg's own masks, PNG files of segment ids, or the ground-truth regions), embeds all of them in one pass
(``sseg.tuss.embed.MaskEmbedder``) and counts their ground-truth pixels. An image whose masks cannot be used
(size mismatch, unreadable or missing file, no mask) is a row with its reason and no masks: skipped and
counted, never fatal. The driver writes each chunk as soon as its rows are in, so an interrupted run keeps
every finished chunk.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from pipelines.io.tuss_cache import TussCache

NO_MASK = 65535  # segments_png value of a pixel no mask covers


def encode_segments(owner: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(owner.astype(np.uint16))).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class MaskSource:
    """One image's masks from the configured source (``masks``: the run's ``masks`` config as a dict)."""

    def __init__(self, masks: dict, vlm, device: torch.device):
        from sseg.pseudo_masks.generator import PseudoMaskConfig, build_generator
        from sseg.tuss.vlm import load_vlm

        self.cfg, self.device = masks, device
        self.generator = self.model = None
        if masks["source"] == "generator":
            self.generator = build_generator(PseudoMaskConfig.model_validate(masks["generator"]))
        elif masks["source"] == "sseg":
            self.model = (vlm if masks.get("checkpoint") is None
                          else load_vlm("sseg", masks["checkpoint"]).to(device)).model

    def __call__(self, key: str, image: np.ndarray, label: np.ndarray | None) -> tuple[torch.Tensor, int]:
        from sseg.tuss import masks as M

        source = self.cfg["source"]
        if source == "generator":
            masks, dropped = M.generated_masks(self.generator, np.array(image[None]), self.cfg["split_components"])[0]
        elif source == "sseg":
            masks, dropped = self._sseg(image)
        elif source == "files":
            masks, dropped = M.read_mask_png(Path(self.cfg["files_dir"]) / f"{key}.png", image.shape[:2],
                                             self.cfg.get("no_mask_value"))
        else:
            masks, dropped = M.ground_truth_regions(label)
        kept, small = M.drop_empty(masks, self.cfg["min_area"])
        return kept, dropped + small

    def _sseg(self, image: np.ndarray) -> tuple[torch.Tensor, int]:
        import torch.nn.functional as F

        from sseg.data.transforms import to_normalized_tensor
        from sseg.tuss.masks import sseg_predicted_masks

        h, w = image.shape[:2]
        x = to_normalized_tensor(image[None]).to(self.device)
        x = F.pad(x, (0, -w % 32, 0, -h % 32))
        masks, dropped = sseg_predicted_masks(self.model, x)[0]
        return masks[:, :h, :w].cpu(), dropped


class EmbedChunk:
    """Actor: a chunk row {"split", "chunk", "start", "stop"} → one cache row per image of the chunk (``splits``:
    per split its dataset dict, whether it has labels and its cache key)."""

    def __init__(self, vlm: dict, embed: dict, masks: dict, splits: list[dict], num_classes: int, threads: int = 1):
        import sseg  # noqa: F401 - torchvision fix in this worker

        from sseg.data.datasets import build_dataset
        from sseg.tuss.config import EmbedConfig
        from sseg.tuss.embed import MaskEmbedder
        from sseg.tuss.vlm import load_vlm

        torch.set_num_threads(threads)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_vlm(vlm["kind"], vlm["checkpoint"], vlm["clip_model"], vlm["clip_model_cfg"]).to(device)
        self.embedder = MaskEmbedder.for_vlm(model, EmbedConfig.model_validate(embed), device)
        self.source = MaskSource(masks, model, device)
        self.readers = [build_dataset(d["name"], d["root"], d["split"], require_labels=d["with_truth"]) for d in splits]
        self.splits, self.num_classes = splits, num_classes

    def row(self, split: int, index: int, chunk: int) -> dict:
        from sseg.data.readers.base import read_image
        from sseg.tuss.masks import MaskSkip
        from sseg.tuss.paint import paint
        from sseg.tuss.table import mask_counts

        reader, with_truth = self.readers[split], self.splits[split]["with_truth"]
        if with_truth:
            key, image, label = reader[index]
        else:  # a pool without label files (weak supervision from captions): the image alone
            key, image, label = reader.keys[index], read_image(Path(reader.image_paths[index])), None
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        row = {"split": split, "key": key, "index": index, "chunk": chunk, "width": image.shape[1], "height": image.shape[0],
               "status": "ok", "dropped_masks": 0, "num_masks": 0, "segments_png": b"", "area": empty_i,
               "embed_dim": 0, "embeddings": empty_f, "gt_counts": empty_i, "owned_counts": empty_i,
               "cache_key": self.splits[split]["cache_key"]}
        try:
            masks, dropped = self.source(key, image, label if with_truth else None)
        except MaskSkip as skip:
            row["status"] = skip.reason
            return row
        embeddings = self.embedder.embed(image, masks).numpy().astype(np.float32)
        row.update(dropped_masks=dropped, num_masks=len(masks), embed_dim=embeddings.shape[1],
                   embeddings=embeddings.ravel(), area=masks.flatten(1).sum(1).numpy().astype(np.int64),
                   segments_png=encode_segments(paint(masks, np.arange(len(masks)), uncovered=NO_MASK)))
        if with_truth:
            _, inside, owned = mask_counts(masks, label, self.num_classes)
            row.update(gt_counts=inside.ravel(), owned_counts=owned.ravel())
        return row

    def __call__(self, batch: dict) -> dict:
        rows = [self.row(int(split), index, int(chunk))
                for split, chunk, start, stop in zip(batch["split"], batch["chunk"], batch["start"], batch["stop"])
                for index in range(int(start), int(stop))]
        # variable-length arrays travel as raw bytes (Ray Data's numpy batches want fixed shapes)
        return {name: np.asarray([r[name].tobytes() if name in ARRAYS else r[name] for r in rows],
                                 dtype=object if name in ARRAYS or name in OBJECTS else np.int64)
                for name in rows[0]}


ARRAYS = {"area": np.int64, "embeddings": np.float32, "gt_counts": np.int64, "owned_counts": np.int64}
OBJECTS = ("key", "status", "segments_png", "cache_key")


def _cache_row(row: dict) -> dict:
    return {k: np.frombuffer(v, dtype=ARRAYS[k]).tolist() if k in ARRAYS else v for k, v in row.items() if k != "split"}


def _size(cache: TussCache, chunk: int) -> int:
    start, stop = cache.chunk_range(chunk)
    return stop - start


def build_embedding_caches(jobs: list[tuple[TussCache, dict, bool]], *, vlm: dict, embed: dict, masks: dict,
                           num_classes: int, num_actors: int = 1, gpus_per_actor: float = 0.0,
                           threads: int = 1) -> list[dict]:
    """Embed every unfinished chunk of every ``(cache, dataset {name, root, split}, with_truth)`` in one Ray Data
    pass (one actor pool); returns per job what was done and the images/s of this pass."""
    splits, items = [], []
    for j, (cache, dataset, with_truth) in enumerate(jobs):
        todo = cache.todo()
        print(f"[sseg] mask embeddings ({dataset['split']}): {cache.num_chunks() - len(todo)} of {cache.num_chunks()} "
              f"chunks already in {cache.root}, {len(todo)} to embed", flush=True)
        splits.append({**dataset, "root": str(Path(dataset["root"]).resolve()), "with_truth": with_truth,
                       "cache_key": cache.key})  # absolute root: actors run elsewhere
        items += [{"split": j, "chunk": c, "start": cache.chunk_range(c)[0], "stop": cache.chunk_range(c)[1]}
                  for c in todo]
    started, written = time.perf_counter(), [0] * len(jobs)
    if items:
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            EmbedChunk, fn_constructor_kwargs=dict(vlm=vlm, embed=embed, masks=masks, splits=splits,
                                                   num_classes=num_classes, threads=threads),
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(num_actors, len(items)))),
            num_gpus=gpus_per_actor, num_cpus=0 if gpus_per_actor else threads, batch_size=1, batch_format="numpy")
        pending: dict[tuple[int, int], list[dict]] = defaultdict(list)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                pending[(row["split"], row["chunk"])].append(_cache_row(row))
            for j, chunk in [key for key, rows in pending.items() if len(rows) == _size(jobs[key[0]][0], key[1])]:
                written[j] += jobs[j][0].write_chunk(chunk, pending.pop((j, chunk)))
        if pending:
            raise RuntimeError(f"mask embedding returned incomplete chunks {sorted(pending)}")
    elapsed = time.perf_counter() - started
    rate = sum(written) / elapsed if sum(written) and elapsed else 0.0
    return [{"images_embedded": n, "seconds": elapsed, "images_per_s": rate, "cache_dir": str(cache.root)}
            for n, (cache, _, _) in zip(written, jobs)]
