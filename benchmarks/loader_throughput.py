"""Frames per second the training data loader delivers at a train config's batch shapes, against what one H100
consumes at that shape.

    .venv/bin/python benchmarks/loader_throughput.py             # `aux` at the base shape, 2 workers, 20 h synthetic
    .venv/bin/python benchmarks/loader_throughput.py --corpus corpora/candor --workers 4 --set model.shape=moshi-7b

The need: one H100 at 45 % model-FLOPs utilization (989 TFLOP/s dense bf16, as benchmarks/train_throughput.py) trains
Model.flops_per_frame(window) FLOPs a frame, so it consumes 0.45 × 989e12 / flops_per_frame frames a second. The
supply, three ways, each timed over --seconds after a warm-up, on --corpus or on a synthetic corpus generated into a
temporary folder (--conversations of the `tight` preset, about 3 min each):
  - cut by --workers processes: each cuts every --workers-th step's batches (WindowLoader.step_batches, what a
    `data.workers` worker does), all at once; the loader's own speed on that many CPUs;
  - delivered into the training process by --workers `data.workers` background processes (torch's DataLoader: each
    step's batch crosses from a worker as one shared-memory block);
  - cut in the training process itself (`data.workers = 0`).
Also printed: the up-front validation of the split (WindowDataset.validate) and how much anonymous memory this
process gained while validating and loading, against the corpus size on disk (the memory-mapped files' pages belong
to the page cache, not to the process). The files are in the page cache after the validation; a corpus larger than
RAM is read from disk, whose speed then counts too. Other work on the machine slows all three: the load average is
printed.
"""

from __future__ import annotations

import argparse
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
    """This process's resident anonymous memory (heap, not file-backed pages), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def frames_per_second(loader, seconds: float, warmup_steps: int) -> tuple[float, int]:
    """(frames/s, steps) of `loader.next_batches()` over `seconds` after `warmup_steps` untimed steps."""
    for _ in range(warmup_steps):
        loader.next_batches()
    frames, steps, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        frames += sum(b.text.numel() for b in loader.next_batches())
        steps += 1
    return frames / (time.perf_counter() - start), steps


def _cut(loader, first: int, stride: int, seconds: float, warmup_steps: int, results) -> None:
    """In a worker process: cut steps first, first + stride, ... for `seconds` → (frames, seconds) on `results`."""
    step = first
    for _ in range(warmup_steps):
        loader.step_batches(step)
        step += stride
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        frames += sum(b.text.numel() for b in loader.step_batches(step))
        step += stride
    results.put((frames, time.perf_counter() - start))


def cut_in_parallel(loader, processes: int, seconds: float, warmup_steps: int) -> float:
    """Frames/s that `processes` forked processes cut together, each every `processes`-th step."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_cut, args=(loader, i, processes, seconds, warmup_steps, results))
               for i in range(processes)]  # fmt: skip
    for w in workers:
        w.start()
    rates = [frames / elapsed for frames, elapsed in (results.get() for _ in workers)]
    for w in workers:
        w.join()
    return sum(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="aux", help="train preset or TOML (default: aux)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"after the default {' '.join(DEFAULTS)}")  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder (default: a synthetic one)")
    parser.add_argument("--conversations", type=int, default=400, help="synthetic corpus size (default: 400)")
    parser.add_argument("--workers", type=int, default=2, help="background loader processes (default: 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per loader (default: 10)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="untimed steps first (default: 20)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.seconds <= 0 or args.conversations < 10:
        parser.error("--workers >= 1, --seconds > 0 and --conversations >= 10 needed")

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
        dataset = WindowDataset(corpus, cfg.data.train_split, frames, cfg.labels)
        dataset.validate()
        validate_s = time.perf_counter() - t0
        hours = float(dataset.n_frames.sum()) * 0.08 / 3600

        def loader(workers: int) -> WindowLoader:
            return WindowLoader(dataset, cfg.data.batch_size, cfg.data.seed, cfg.data.face_dropout, workers=workers)

        alone, _ = frames_per_second(loader(0), args.seconds, args.warmup_steps)
        anon_gained = anonymous_memory_bytes() - anon_before
        cut = cut_in_parallel(loader(0), args.workers, args.seconds, args.warmup_steps)
        delivered, steps = frames_per_second(loader(args.workers), args.seconds, args.warmup_steps)

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
        "frames_per_s_cut_by_workers": cut,
        "frames_per_s_delivered_by_workers": delivered,
        "delivered_steps": steps,
        "frames_per_s_in_process": alone,
        "h100_frames_per_s": need,
        "model_flops_per_frame": flops_per_frame,
        "ratio_cut": cut / need,
        "ratio_delivered": delivered / need,
        "ratio_in_process": alone / need,
        "anonymous_memory_gained_bytes": anon_gained,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": list(os.getloadavg()),
    }
    w = args.workers
    print(
        f"loader · {args.config} at {cfg.model.shape}: batch {cfg.data.batch_size} × {frames} frames · "
        f"{result['corpus']} ({hours:.1f} h in split {cfg.data.train_split!r}, {corpus_bytes / 1e6:.0f} MB of files)\n"
        f"  one H100 at {TARGET_MFU:.0%} MFU consumes              {need:12,.0f} frames/s "
        f"({flops_per_frame / 1e9:.2f} GFLOP a frame of {peak / 1e12:.0f} TFLOP/s)\n"
        f"  cut by {w} worker processes               {cut:12,.0f} frames/s  {cut / need:6.1f}× the need\n"
        f"  delivered by {w} data.workers             {delivered:12,.0f} frames/s  {delivered / need:6.1f}×\n"
        f"  cut in the training process              {alone:12,.0f} frames/s  {alone / need:6.1f}×\n"
        f"  validation of the split up front         {validate_s:12.1f} s\n"
        f"  anonymous memory gained                  {anon_gained / 1e6:12.1f} MB "
        f"(corpus files {corpus_bytes / 1e6:.0f} MB; memory-mapped, not loaded)\n"
        f"  load average {result['load_average'][0]:.2f} on {result['cpus']} CPUs"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
