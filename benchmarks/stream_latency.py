"""Streaming latency: milliseconds per 80 ms frame of faceturn.stream.TurnYieldStream, p50 / p99 / max.

    .venv/bin/python benchmarks/stream_latency.py                          # tiny and small, 1 and 64 streams, 2 threads
    .venv/bin/python benchmarks/stream_latency.py --configs small --streams 1 --frames 2000 --repeats 3

One measured frame = one `step_batch` call for all streams (listen: P(yield) only), or one `generate_step` call
(talk: the model also draws its own text and 8 audio codebooks, greedy), with input checks and the copy of the result
to the CPU included, as a caller sees it. The models are randomly initialised (latency does not depend on the
weights). The KV cache is a fixed ring of `context` slots that every frame attends over (masked while filling), so
the cost per frame is the same from the first frame on; the first `--warmup` frames are not measured anyway. The
target is the listen row of `small`, one stream, 2 CPU threads: p99 <= 15 ms. On a CUDA machine the same rows
are measured on the GPU too (each frame ends with a device sync, through the copy of P(yield) to the CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def frame_inputs(n_frames: int, streams: int, card: int, seed: int = 0) -> dict[str, torch.Tensor]:
    from faceturn.schema import N_CODEBOOKS, N_FACE

    g = torch.Generator().manual_seed(seed)
    return {
        "self_codes": torch.randint(0, card, (n_frames, streams, N_CODEBOOKS), generator=g),
        "other_codes": torch.randint(0, card, (n_frames, streams, N_CODEBOOKS), generator=g),
        "other_face": torch.randn(n_frames, streams, N_FACE, generator=g),
        "face_present": torch.rand(n_frames, streams, generator=g) > 0.1,
    }


def measure(config: str, device: str, streams: int, mode: str, frames: int, warmup: int) -> list[float]:
    """Milliseconds of each measured frame."""
    from faceturn.model import from_config, load_model_config
    from faceturn.stream import MOSHI_SAMPLING, TurnYieldStream

    torch.manual_seed(0)
    model = from_config(load_model_config(config), device=device).eval()
    stream = TurnYieldStream(model, batch_size=streams)
    inputs = frame_inputs(warmup + frames, streams, model.cfg.card)
    generator = torch.Generator(device=device).manual_seed(0)
    out = []
    for k in range(warmup + frames):
        x = {name: value[k] for name, value in inputs.items()}
        start = time.perf_counter()
        if mode == "listen":
            stream.step_batch(x["self_codes"], x["other_codes"], x["other_face"], x["face_present"])
        else:
            stream.generate_step(x["other_codes"], x["other_face"], x["face_present"], MOSHI_SAMPLING, True, generator)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        if k >= warmup:
            out.append(elapsed_ms)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,small", help="model configs, comma-separated (default: tiny,small)")
    parser.add_argument("--streams", default="1,64", help="concurrent streams, comma-separated (default: 1,64)")
    parser.add_argument("--modes", default="listen,talk", help="listen (P(yield)) and/or talk (generate_step)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--frames", type=int, default=500, help="measured frames per row (default: 500)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured frames first (default: 20)")
    parser.add_argument("--repeats", type=int, default=1, help="measure every row this many times (default: 1)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU rows even when CUDA is available")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.frames < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--threads, --frames and --repeats must be >= 1 and --warmup >= 0")
    modes = args.modes.split(",")
    if set(modes) - {"listen", "talk"}:
        parser.error(f"--modes takes listen and/or talk, got {args.modes!r}")
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    where = ", ".join(
        torch.cuda.get_device_name(0) if d == "cuda" else f"CPU ({args.threads} threads)" for d in devices
    )
    if not args.json:
        print(f"stream latency, ms per 80 ms frame; torch {torch.__version__}; {where}")
        print(f"{'config':8} {'device':6} {'streams':>7} {'mode':6} {'p50':>8} {'p99':>8} {'max':>8} {'ms/stream':>9}")
    for config in args.configs.split(","):
        for device in devices:
            for streams in (int(s) for s in args.streams.split(",")):
                for mode in modes:
                    for _ in range(args.repeats):
                        ms = np.asarray(measure(config, device, streams, mode, args.frames, args.warmup))
                        row = {
                            "config": config, "device": device, "threads": args.threads, "streams": streams,
                            "mode": mode, "frames": args.frames, "p50_ms": float(np.percentile(ms, 50)),
                            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
                            "p50_ms_per_stream": float(np.percentile(ms, 50)) / streams,
                        }  # fmt: skip
                        if args.json:
                            print(json.dumps(row))
                        else:
                            figures = (row["p50_ms"], row["p99_ms"], row["max_ms"])
                            print(
                                f"{config:8} {device:6} {streams:7d} {mode:6} "
                                + " ".join(f"{x:8.2f}" for x in figures)
                                + f" {row['p50_ms_per_stream']:9.3f}"
                            )
                        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
