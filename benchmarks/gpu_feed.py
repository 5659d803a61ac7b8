"""Feed rows of `make bench-gpu` (benchmarks/gpu.py): does CPU decoding keep the pseudo-mask GPU step busy?

Synthetic JPEGs (320x240, quality 90, 4:2:0, flat blocks plus noise) are written to WebDataset tars in a temp
folder, then decoded (short side -> 224, centre crop, as the pseudo-mask cache decodes) on N CPU workers and
fed to one DINO + K-Means generator on the GPU:

* ``feed_dataloader``: torch DataLoader worker processes (needs nothing beyond torch);
* ``feed_ray_data``: the pipeline's own stages, Ray Data decode actors (pipelines/io/shards.DecodeSamples)
  feeding one GPU actor (pipelines/stages/pseudo_masks.add_pseudo_masks); recorded as skipped when Ray is
  not installed.

Each row gives the end-to-end images/s (start-up included) and the steady rate after the first batch, next
to the GPU-only rate of the pseudo_masks rows.
"""

from __future__ import annotations

import os
import tarfile
import time

import torch.utils.data

SOURCE_WIDTH, SOURCE_HEIGHT = 320, 240
WORKER_COUNTS = [1, 2, 4, 8, 14]


def _sizes(ctx) -> tuple[int, int, int]:
    """(shards, images per shard, decoded size)."""
    return (2, 8, 32) if ctx.smoke else (28, 256, 224)


def write_shards(ctx) -> list[str]:
    """The synthetic WebDataset tars (written once per run, reused by both feed rows)."""
    if "feed_shards" in ctx.shared:
        return ctx.shared["feed_shards"]
    import numpy as np

    from sseg.data.shards import ShardWriter, encode_jpeg

    shards, per_shard, _ = _sizes(ctx)
    width, height = (48, 40) if ctx.smoke else (SOURCE_WIDTH, SOURCE_HEIGHT)
    rng = np.random.default_rng(0)
    directory = ctx.tmp / "shards"
    paths = []
    for shard in range(shards):
        path = directory / f"{shard:05d}.tar"
        with ShardWriter(path) as writer:
            for index in range(per_shard):
                coarse = rng.integers(0, 256, (-(-height // 16), -(-width // 16), 3), dtype=np.uint8)
                image = coarse.repeat(16, 0).repeat(16, 1)[:height, :width].astype(np.int16)
                image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
                writer.write(f"{shard:05d}{index:05d}", [("jpg", encode_jpeg(image, 90, 2)),
                                                         ("txt", b"a photo of a dog and a cat")])
        paths.append(str(path))
    ctx.shared["feed_shards"] = paths
    return paths


def _worker_counts(ctx) -> list[int]:
    if ctx.smoke:
        return [1]
    cores = os.cpu_count() or 1
    return sorted({min(n, max(1, cores - 1)) for n in WORKER_COUNTS})


def _feed_batch(ctx) -> int:
    if ctx.smoke:
        return 4
    return min(512, int(ctx.shared.get("pm_best_batch", 512)))


class ShardImages(torch.utils.data.IterableDataset):
    """IterableDataset over tar shards: decoded, short side resized and centre-cropped uint8 [S, S, 3];
    DataLoader workers take every n-th shard."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths = list(paths)
        self.size = size

    def __iter__(self):
        from sseg.data.decode import decode_image
        from sseg.data.transforms import center_square

        info = torch.utils.data.get_worker_info()
        paths = self.paths if info is None else self.paths[info.id::info.num_workers]
        for path in paths:
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.endswith(".jpg"):
                        yield center_square(decode_image(tar.extractfile(member).read()), self.size)


def _rates(count: int, started: float, first_at: float | None, first_count: int, ended: float) -> dict:
    total = ended - started
    steady = None
    if first_at is not None and ended > first_at and count > first_count:
        steady = (count - first_count) / (ended - first_at)
    return {"images": count, "wall_s": round(total, 2),
            "images_per_s_end_to_end": round(count / total, 1) if total > 0 else None,
            "images_per_s_after_first_batch": None if steady is None else round(steady, 1),
            "first_batch_s": None if first_at is None else round(first_at - started, 2)}


def dataloader_feed_rows(ctx) -> list[dict]:
    import torch
    from torch.utils.data import DataLoader

    from gpu_rows import _pm_generator

    paths = write_shards(ctx)
    _, _, size = _sizes(ctx)
    batch = _feed_batch(ctx)
    generator = _pm_generator(ctx)
    gpu_rate = ctx.shared.get("pm_best_images_per_s")
    rows = []
    dataset = ShardImages(paths, size)

    # one worker, no GPU work: what one core decodes
    started = time.perf_counter()
    decoded = sum(len(b) for b in DataLoader(dataset, batch_size=batch, num_workers=1))
    seconds = time.perf_counter() - started
    rows.append(ctx.row("decode_only_dataloader", batch=batch, image_size=size, images_per_s=decoded / seconds,
                        dtype="uint8", notes=f"1 worker, JPEG {SOURCE_WIDTH}x{SOURCE_HEIGHT} -> {size}, "
                                             "start-up included", images=decoded, workers=1))
    for workers in _worker_counts(ctx):
        if ctx.remaining() < 25:
            rows.append(ctx.row("feed_dataloader_to_gpu", batch=batch, image_size=size, images_per_s=None,
                                status="skipped", notes=f"budget ({workers} workers and up)"))
            break
        ctx.reset_memory()
        loader = DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=ctx.cuda,
                            prefetch_factor=4)
        count, first_at, first_count = 0, None, 0
        started = time.perf_counter()
        with torch.inference_mode():
            for images in loader:
                generator.generate(images.to(ctx.device, non_blocking=True))
                count += len(images)
                if first_at is None:
                    ctx.sync()
                    first_at, first_count = time.perf_counter(), count
        ctx.sync()
        rates = _rates(count, started, first_at, first_count, time.perf_counter())
        steady = rates["images_per_s_after_first_batch"]
        rows.append(ctx.row("feed_dataloader_to_gpu", batch=batch, image_size=size,
                            images_per_s=rates["images_per_s_end_to_end"], peak_memory_gib=ctx.peak_memory_gib(),
                            notes=f"{workers} decode workers -> DINO+K-Means; img/s includes worker start-up",
                            workers=workers, gpu_only_images_per_s=gpu_rate,
                            keeps_up=None if not (gpu_rate and steady) else bool(steady >= 0.9 * gpu_rate),
                            **rates))
    return rows


def ray_feed_rows(ctx) -> list[dict]:
    _, _, size = _sizes(ctx)
    batch = _feed_batch(ctx)
    try:
        import ray
    except ImportError:
        return [ctx.row("feed_ray_data_to_gpu", batch=batch, image_size=size, images_per_s=None, status="skipped",
                        error="ray not installed on this machine")]
    from gpu import ROOT
    from pipelines.io.shards import DecodeSamples, read_shards
    from pipelines.stages.pseudo_masks import add_pseudo_masks
    from sseg.pseudo_masks import PseudoMaskConfig

    paths = write_shards(ctx)
    counts = _worker_counts(ctx)
    gpu_rate = ctx.shared.get("pm_best_images_per_s")
    config = PseudoMaskConfig(generator="dino", dino_allow_random_init=True, num_segments=8,
                              device="cuda" if ctx.cuda else "cpu", bf16=ctx.bf16)
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    init_started = time.perf_counter()
    # decode actors take n CPUs; one more for the read tasks and one for a CPU pseudo-mask actor
    ray.init(address="local", num_cpus=max(counts) + 2, num_gpus=1 if ctx.cuda else 0, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": python_path}})
    init_s = time.perf_counter() - init_started
    rows = []
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for workers in counts:
            if ctx.remaining() < 40:
                rows.append(ctx.row("feed_ray_data_to_gpu", batch=batch, image_size=size, images_per_s=None,
                                    status="skipped", notes=f"budget ({workers} decode actors and up)"))
                break
            started = time.perf_counter()
            ds = read_shards(paths).map_batches(
                DecodeSamples, fn_constructor_kwargs={"size": size, "mode": "cache"},
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, batch_size=64, batch_format="numpy")
            ds = add_pseudo_masks(ds, config, num_actors=1, gpus_per_actor=1 if ctx.cuda else 0,
                                  batch_size=batch).select_columns(["key"])
            count, first_at, first_count = 0, None, 0
            for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
                count += len(block["key"])
                if first_at is None:
                    first_at, first_count = time.perf_counter(), count
            rates = _rates(count, started, first_at, first_count, time.perf_counter())
            steady = rates["images_per_s_after_first_batch"]
            rows.append(ctx.row("feed_ray_data_to_gpu", batch=batch, image_size=size,
                                images_per_s=rates["images_per_s_end_to_end"],
                                notes=f"{workers} Ray Data decode actors -> 1 pseudo-mask actor; img/s includes "
                                      f"actor start-up (ray.init {init_s:.1f} s not included)",
                                workers=workers, ray_version=ray.__version__, gpu_only_images_per_s=gpu_rate,
                                keeps_up=None if not (gpu_rate and steady) else bool(steady >= 0.9 * gpu_rate),
                                ray_init_s=round(init_s, 1), **rates))
    finally:
        ray.shutdown()
    return rows
