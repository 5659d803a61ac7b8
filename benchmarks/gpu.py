"""`make bench-gpu`: every GPU throughput figure in one unattended process (one JSON file + a Markdown table).

    python benchmarks/gpu.py --out runs/bench-gpu [--budget-s 420] [--only pseudo_masks sseg_pretrain ...]
    python benchmarks/gpu.py --smoke --out /tmp/bench-smoke      # tiny sizes on CPU (the test runs this)

Rows (benchmarks/gpu_rows.py, benchmarks/gpu_feed.py): DINO ViT-S/8 + batched K-Means pseudo-masks
(largest batch that fits, then torch.compile), the S-Seg / S-Seg+ / SemiVL training steps at the papers'
sizes, GroupViT-protocol evaluation, and decoding fed to the GPU (DataLoader workers, Ray Data actors).
Every row has device, dtype, batch, image size, images/s and peak memory; a row that fails is recorded
with its error and the run goes on; rows that would start after ``--budget-s`` are recorded as skipped.
Results are rewritten after every row, so a run killed half-way still leaves what it measured.
More rows (TagCLIP, tuning-free mask embeddings): append a ``RowSpec`` to ``ROWS``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

ROW_KEYS = ("name", "device", "dtype", "batch", "image_size", "images_per_s", "peak_memory_gib",
            "status", "error", "seconds", "notes", "extra")


@dataclass
class Context:
    """What every row function gets: the device, the size regime and the time left."""

    device: "object"  # torch.device
    smoke: bool
    bf16: bool
    deadline: float  # time.perf_counter() value after which no new measurement starts
    tmp: Path
    max_batch: int | None = None  # caps every batch size (e.g. a CPU check of the full-size models)
    quick: bool = False  # one warm-up and one timed call per measurement (--smoke, --check)
    shared: dict = field(default_factory=dict)  # results one row leaves for a later one

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def batches(self, candidates: list[int]) -> list[int]:
        if self.max_batch is None:
            return list(candidates)
        capped = sorted({min(b, self.max_batch) for b in candidates})
        return capped

    def device_name(self) -> str:
        import torch

        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- measurement helpers shared by the rows

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def reset_memory(self) -> None:
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gib(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return round(torch.cuda.max_memory_allocated(self.device) / 2 ** 30, 2)

    def time_per_call(self, fn: Callable[[], object], warmup: int | None = None,
                      min_seconds: float | None = None, max_calls: int = 50) -> tuple[float, int]:
        """Seconds per call of ``fn`` after warm-up (synchronised), and the number of timed calls:
        at least 2 (1 in smoke), then on until ``min_seconds`` have passed or ``max_calls``."""
        warmup = (1 if self.quick else 2) if warmup is None else min(warmup, 1) if self.quick else warmup
        min_seconds = 0.0 if self.quick else 2.0 if min_seconds is None else min_seconds
        for _ in range(warmup):
            fn()
        self.sync()
        calls, started = 0, time.perf_counter()
        while True:
            fn()
            self.sync()
            calls += 1
            elapsed = time.perf_counter() - started
            if calls >= max_calls or (calls >= (1 if self.quick else 2) and elapsed >= min_seconds):
                return elapsed / calls, calls

    def attempt(self, name: str, batch: int | None, image_size, measure: Callable[[], dict]) -> dict:
        """``measure()``'s row, or a row with status "oom" / "error" and the error when it raises."""
        try:
            return measure()
        except Exception as exc:
            traceback.print_exc()
            status, error = ("oom" if is_oom(exc) else "error"), error_text(exc)
        self.reset_memory()  # out of the except block: the traceback no longer holds the tensors
        return self.row(name, batch=batch, image_size=image_size, images_per_s=None, status=status, error=error)

    def row(self, name: str, *, batch: int | None, image_size: str | int | None, images_per_s: float | None,
            peak_memory_gib: float | None = None, dtype: str | None = None, status: str = "ok",
            error: str | None = None, notes: str = "", seconds: float | None = None, **extra) -> dict:
        return {"name": name, "device": self.device_name(), "dtype": dtype or self.dtype, "batch": batch,
                "image_size": image_size,
                "images_per_s": None if images_per_s is None else round(float(images_per_s), 1),
                "peak_memory_gib": peak_memory_gib, "status": status, "error": error,
                "seconds": None if seconds is None else round(seconds, 1), "notes": notes, "extra": extra}


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


@dataclass(frozen=True)
class RowSpec:
    name: str
    run: Callable[[Context], list[dict]]  # one or more rows; exceptions are caught by the runner
    min_seconds_left: float = 0.0  # GPU runs: skip when less time than this is left (e.g. torch.compile)


def _specs() -> list[RowSpec]:
    import gpu_feed
    import gpu_rows

    return [
        RowSpec("pseudo_masks", gpu_rows.pseudo_mask_rows),
        RowSpec("sseg_pretrain", gpu_rows.sseg_pretrain_rows),
        RowSpec("sseg_plus", gpu_rows.sseg_plus_rows),
        RowSpec("semivl", gpu_rows.semivl_rows),
        RowSpec("eval_groupvit", gpu_rows.eval_rows),
        RowSpec("feed_dataloader", gpu_feed.dataloader_feed_rows),
        RowSpec("feed_ray_data", gpu_feed.ray_feed_rows),
        RowSpec("pseudo_masks_compiled", gpu_rows.pseudo_mask_compiled_rows, min_seconds_left=100.0),
    ]


# TagCLIP and the tuning-free (TUSS) mask-embedding rows go here when those models exist, e.g.
# EXTRA_ROWS.append(RowSpec("tagclip", gpu_rows.tagclip_rows)).
EXTRA_ROWS: list[RowSpec] = []
ROWS: list[RowSpec] = []


def all_specs() -> list[RowSpec]:
    return (ROWS or _specs()) + EXTRA_ROWS


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    head = (f"GPU benchmark ({'smoke, ' if report['smoke'] else ''}{report['date']}, commit "
            f"{report['git_commit'] or '?'}, torch {report['torch']}, CUDA {report['cuda'] or '–'}): "
            f"{report['device_name']}, {report['elapsed_s']:.0f} s of {report['budget_s']:.0f} s budget")
    lines = [head, "",
             "| row | device | dtype | batch | image size | img/s | peak mem (GiB) | status / notes |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for r in report["rows"]:
        note = r["status"] if r["status"] == "ok" else f"**{r['status']}**"
        if r["error"]:
            note += f": {r['error']}"
        if r["notes"]:
            note += f"; {r['notes']}"
        note = note.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['name']} | {r['device']} | {r['dtype']} | {fmt(r['batch'])} | {fmt(r['image_size'])} | "
                     f"{fmt(r['images_per_s'])} | {fmt(r['peak_memory_gib'], 2)} | {note} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json.tmp").write_text(json.dumps(report, indent=1, default=str))
    os.replace(out / "gpu_bench.json.tmp", out / "gpu_bench.json")
    (out / "gpu_bench.md").write_text(markdown(report))


def run(args: argparse.Namespace) -> dict:
    import torch

    import sseg  # noqa: F401 - the torchvision fix before timm / open_clip load

    started = time.perf_counter()
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or min(4, os.cpu_count() or 1))
    else:
        torch.backends.cudnn.benchmark = True
    tmp = Path(tempfile.mkdtemp(prefix="sseg-bench-gpu-"))
    # bf16 on CPU is emulated (slower) on most CPUs: CPU runs measure fp32
    ctx = Context(device=device, smoke=args.smoke, bf16=not args.fp32 and device.type == "cuda",
                  deadline=started + args.budget_s, tmp=tmp, max_batch=args.max_batch,
                  quick=args.smoke or args.check)
    report = {"date": dt.date.today().isoformat(), "started": dt.datetime.now().isoformat(timespec="seconds"),
              "device_name": ctx.device_name(), "device": str(device), "torch": torch.__version__,
              "cuda": torch.version.cuda, "python": platform.python_version(), "git_commit": git_commit(),
              "smoke": args.smoke, "budget_s": args.budget_s, "elapsed_s": 0.0, "argv": sys.argv[1:],
              "cpu_count": os.cpu_count(), "rows": []}
    specs = [s for s in all_specs() if (not args.only or s.name in args.only) and s.name not in (args.skip or [])]
    ctx.log(f"bench-gpu on {report['device_name']} ({device}), {len(specs)} row groups, budget {args.budget_s:.0f} s")
    for spec in specs:
        left = ctx.remaining()
        if left <= 0 or (ctx.cuda and left < spec.min_seconds_left):
            report["rows"].append(ctx.row(spec.name, batch=None, image_size=None, images_per_s=None, status="skipped",
                                          notes=f"budget: {max(left, 0):.0f} s left of --budget-s {args.budget_s:.0f}"))
            ctx.log(f"{spec.name}: skipped (budget)")
            continue
        ctx.log(f"{spec.name}: start ({left:.0f} s left)")
        group_started = time.perf_counter()
        try:
            rows = spec.run(ctx)
        except Exception as exc:  # a row never aborts the run
            traceback.print_exc()
            rows = [ctx.row(spec.name, batch=None, image_size=None, images_per_s=None, status="error",
                            error=error_text(exc), seconds=time.perf_counter() - group_started)]
        finally:
            ctx.reset_memory()
        for row in rows:
            ctx.log(f"  {row['name']}: {row['status']} batch={row['batch']} img/s={row['images_per_s']} "
                    f"peak={row['peak_memory_gib']} {row['error'] or ''} {row['notes']}")
        report["rows"].extend(rows)
        report["elapsed_s"] = round(time.perf_counter() - started, 1)
        write_outputs(args.out, report)
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    write_outputs(args.out, report)
    ctx.log(f"done in {report['elapsed_s']:.0f} s: {args.out / 'gpu_bench.json'}, {args.out / 'gpu_bench.md'}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-gpu")
    parser.add_argument("--budget-s", type=float, default=420.0, help="no row starts after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="tiny models and sizes on CPU (seconds)")
    parser.add_argument("--device", default="auto", help="auto: cuda when available (cpu with --smoke)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    parser.add_argument("--max-batch", type=int, default=None, help="cap every batch size (CPU checks)")
    parser.add_argument("--check", action="store_true",
                        help="one warm-up + one timed call per row: do the full-size rows run at all? "
                             "(e.g. on CPU with --device cpu --max-batch 2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default min(4, cores))")
    parser.add_argument("--only", nargs="*", help="row groups to run (names as in the table)")
    parser.add_argument("--skip", nargs="*", help="row groups to leave out")
    args = parser.parse_args(argv)
    known = {s.name for s in all_specs()}
    unknown = sorted((set(args.only or []) | set(args.skip or [])) - known)
    if unknown:
        print(f"error: unknown row group(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})", file=sys.stderr)
        return 2
    if args.budget_s <= 0 or (args.max_batch is not None and args.max_batch < 1):
        print("error: --budget-s and --max-batch must be positive", file=sys.stderr)
        return 2
    report = run(args)
    return 0 if report["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
