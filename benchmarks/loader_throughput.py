"""Frames per second the training data loader delivers at a train config's batch shapes, against what one H100
consumes at that shape.

    .venv/bin/python benchmarks/loader_throughput.py             # `aux` at the base shape, 2 workers, 20 h synthetic
    .venv/bin/python benchmarks/loader_throughput.py --mapped 1  # every window maps its file anew (a huge corpus)
    .venv/bin/python benchmarks/loader_throughput.py --corpus corpora/candor --workers 4 --set model.shape=moshi-7b

The need: one H100 at 45 % model-FLOPs utilization (989 TFLOP/s dense bf16, as benchmarks/train_throughput.py) trains
Model.flops_per_frame(window) FLOPs a frame, so it consumes 0.45 × 989e12 / flops_per_frame frames a second. The
supply, three ways, each timed over --seconds after a warm-up, on --corpus or on a synthetic corpus generated into a
temporary folder (--conversations of the `tight` preset, about 3 min each):
  - cut by --workers processes: each cuts every --workers-th step's batches (WindowLoader.step_batches, what a
    `data.workers` worker does), all at once; the loader's own speed on that many CPUs;
  - delivered into the training process by --workers `data.workers` background processes (each step cut into a
    shared buffer, copied out by the training process);
  - cut in the training process itself (`data.workers = 0`).
Each is given in frames per second of wall-clock time and, since other work on a shared machine takes CPU time from
the processes, per second of CPU time of the processes that cut (their own user + system time; for the delivered
stream, the training process's CPU time per step spent receiving). A window is cut from a memory-mapped file: the
first window of a file not mapped yet pays for mapping it and for the page faults of its first reads. At most
--mapped files stay mapped (default: WindowDataset's); `--mapped 1` makes every window map its file anew, the case of
a corpus with far more conversations than that. Also printed: the up-front validation of the split
(WindowDataset.validate) and memory: the corpus size on disk against what this process holds of it (the resident
pages of its maps belong to the page cache; anonymous ones would be copies), the labels it keeps (4 bytes a frame)
and how much memory it holds more after validating and cutting in process (anonymous memory, freed memory
returned first). The files are in the page
cache after the validation; a corpus larger than RAM is read from disk, whose speed then counts too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import BF16_PEAK_FLOPS

DEFAULTS = ["model.shape=base"]
TARGET_MFU = 0.45


def anonymous_memory_bytes() -> int:
    """This process's resident anonymous memory (heap, not file-backed pages), from /proc/self/status, once glibc
    has returned the freed memory it keeps (malloc_trim): what the process holds, not its allocator's slack."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def corpus_mappings(corpus: Path) -> tuple[int, int]:
    """(resident bytes, anonymous bytes) of this process's mappings of files under `corpus`, from /proc/self/smaps:
    resident pages of a mapped file are the page cache's; anonymous ones would be copies."""
    root, inside, totals = str(Path(corpus).resolve()), False, [0, 0]
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and fields[0][0] in "0123456789abcdef":
            inside = len(fields) >= 6 and fields[5].startswith(root)
        elif inside and fields[0] in ("Rss:", "Anonymous:"):
            totals[fields[0] == "Anonymous:"] += int(fields[1]) * 1024
    return totals[0], totals[1]


def frames_per_second(loader, seconds: float, warmup_steps: int) -> tuple[float, float, int]:
    """(frames per wall second, frames per CPU second of this process, steps) of `loader.next_batches()` over
    `seconds` after `warmup_steps` untimed steps."""
    for _ in range(warmup_steps):
        loader.next_batches()
    frames, steps, start, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        frames += sum(b.text.numel() for b in loader.next_batches())
        steps += 1
    return frames / (time.perf_counter() - start), frames / (time.process_time() - cpu), steps


def _cut(loader, first: int, stride: int, seconds: float, warmup_steps: int, results) -> None:
    """In a worker process: cut steps first, first + stride, ... for `seconds` → (frames, wall s, CPU s)."""
    import torch

    torch.set_num_threads(1)  # as a data.workers worker
    step = first
    for _ in range(warmup_steps):
        loader.step_batches(step)
        step += stride
    frames, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        frames += sum(b.text.numel() for b in loader.step_batches(step))
        step += stride
    results.put((frames, time.perf_counter() - start, time.process_time() - cpu))


def cut_in_parallel(loader, processes: int, seconds: float, warmup_steps: int) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second summed over the processes: what they cut on as many CPUs of
    their own) of `processes` forked processes cutting together, each every `processes`-th step."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_cut, args=(loader, i, processes, seconds, warmup_steps, results))
               for i in range(processes)]  # fmt: skip
    for w in workers:
        w.start()
    done = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(f / wall for f, wall, _ in done), sum(f / cpu for f, _, cpu in done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="aux", help="train preset or TOML (default: aux)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"after the default {' '.join(DEFAULTS)}")  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: a synthetic one)")
    parser.add_argument("--conversations", type=int, default=400, help="synthetic corpus size (default: 400)")
    parser.add_argument("--workers", type=int, default=2, help="background loader processes (default: 2)")
    parser.add_argument("--mapped", type=int, default=None, help="files kept mapped (default: WindowDataset's)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per loader (default: 10)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="untimed steps first (default: 20)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.seconds <= 0 or args.conversations < 10 or (args.mapped or 1) < 1:
        parser.error("--workers >= 1, --mapped >= 1, --seconds > 0 and --conversations >= 10 needed")

    import torch

    from faceturn.data import WindowDataset, WindowLoader
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config
    from faceturn.synth import generate_corpus, load_preset

    torch.set_num_threads(1)
    cfg = load_train_config(args.config, [*DEFAULTS, *args.overrides])
    frames = cfg.data.window_frames
    flops_per_frame = from_config(cfg.model, device="meta").flops_per_frame(frames)
    peak = BF16_PEAK_FLOPS["H100 SXM"]
    need = TARGET_MFU * peak / flops_per_frame

    with tempfile.TemporaryDirectory(prefix="faceturn-loader-") as tmp:
        corpus = args.corpus
        if corpus is None:
            corpus = Path(tmp) / "corpus"
            generate_corpus(load_preset("tight"), corpus, args.conversations, seed=0, progress=False)
        corpus_bytes = sum(p.stat().st_size for p in Path(corpus).glob("*.safetensors"))
        anon_before = anonymous_memory_bytes()
        t0 = time.perf_counter()
        mapped = {} if args.mapped is None else {"max_mapped_conversations": args.mapped}
        dataset = WindowDataset(corpus, cfg.data.train_split, frames, cfg.labels, **mapped)
        dataset.validate()
        validate_s = time.perf_counter() - t0
        hours = float(dataset.n_frames.sum()) * 0.08 / 3600

        def loader(workers: int) -> WindowLoader:
            return WindowLoader(dataset, cfg.data.batch_size, cfg.data.seed, cfg.data.face_dropout, workers=workers)

        alone, alone_cpu, _ = frames_per_second(loader(0), args.seconds, args.warmup_steps)
        anon_gained = anonymous_memory_bytes() - anon_before
        mapped_rss, mapped_anon = corpus_mappings(corpus)
        labels_bytes = 4 * int(dataset.n_frames.sum())
        cut, cut_cpu = cut_in_parallel(loader(0), args.workers, args.seconds, args.warmup_steps)
        delivered, delivered_cpu, steps = frames_per_second(loader(args.workers), args.seconds, args.warmup_steps)
        receive_us = cfg.data.batch_size * frames / delivered_cpu * 1e6  # training-process CPU per step

    result = {
        "config": args.config,
        "overrides": [*DEFAULTS, *args.overrides],
        "model": cfg.model.shape,
        "batch_size": cfg.data.batch_size,
        "window_frames": frames,
        "corpus": str(args.corpus) if args.corpus else f"synthetic tight, {args.conversations} conversations",
        "split_hours": hours,
        "corpus_bytes": corpus_bytes,
        "validate_s": validate_s,
        "workers": args.workers,
        "conversations_in_split": len(dataset),
        "max_mapped": dataset._max_mapped,
        "frames_per_s_cut_by_workers": cut,
        "frames_per_cpu_s_cut_by_workers": cut_cpu,
        "frames_per_s_delivered_by_workers": delivered,
        "receive_cpu_us_per_step": receive_us,
        "delivered_steps": steps,
        "frames_per_s_in_process": alone,
        "frames_per_cpu_s_in_process": alone_cpu,
        "h100_frames_per_s": need,
        "h100_step_ms": cfg.data.batch_size * frames / need * 1e3,
        "model_flops_per_frame": flops_per_frame,
        "anonymous_memory_gained_bytes": anon_gained,
        "labels_bytes": labels_bytes,
        "corpus_mapped_resident_bytes": mapped_rss,
        "corpus_mapped_anonymous_bytes": mapped_anon,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": list(os.getloadavg()),
    }
    w = args.workers
    step_ms = result["h100_step_ms"]

    def row(label: str, wall: float, cpu: float | None) -> str:
        per_cpu = "" if cpu is None else f" · {cpu:11,.0f} per CPU-s ({cpu / need:5.1f}×)"
        return f"  {label:34} {wall:11,.0f} frames/s ({wall / need:5.1f}×){per_cpu}\n"

    print(
        f"loader · {args.config} at {cfg.model.shape}: batch {cfg.data.batch_size} × {frames} frames · "
        f"{result['corpus']} ({hours:.1f} h, {len(dataset)} conversations in split {cfg.data.train_split!r}, "
        f"{corpus_bytes / 1e6:.0f} MB of files; at most {dataset._max_mapped} mapped)\n"
        f"  one H100 at {TARGET_MFU:.0%} MFU consumes            {need:11,.0f} frames/s "
        f"({flops_per_frame / 1e9:.2f} GFLOP a frame of {peak / 1e12:.0f} TFLOP/s; a step {step_ms:.1f} ms)\n"
        + row(f"cut by {w} processes (sum)", cut, cut_cpu)
        + row(f"delivered by {w} data.workers", delivered, None)
        + f"  {'':34} receiving costs the training process {receive_us:,.0f} µs of CPU a step\n"
        + row("cut in the training process", alone, alone_cpu)
        + f"  validation of the split up front   {validate_s:11.1f} s\n"
        f"  memory: corpus files {corpus_bytes / 1e6:.0f} MB on disk; of their maps {mapped_rss / 1e6:.1f} MB "
        f"resident (page cache), {mapped_anon / 1e6:.1f} MB copied; labels {labels_bytes / 1e6:.1f} MB; this process's "
        f"anonymous memory grew {anon_gained / 1e6:.1f} MB\n"
        f"  load average {result['load_average'][0]:.2f} on {result['cpus']} CPUs (other work slows the wall-clock "
        "figures, not the per-CPU-second ones)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
