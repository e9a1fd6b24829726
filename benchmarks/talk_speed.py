"""Talking speed: microseconds per talked row-frame of `faceturn.stream.generate` (what `faceturn talk` spends), for
greedy decoding and Moshi's sampling, at several batch sizes, with one CPU thread (a study slot's share).

    .venv/bin/python benchmarks/talk_speed.py                       # tiny, rows 20/40/80, 300 frames
    .venv/bin/python benchmarks/talk_speed.py --config small --rows 40 --frames 200 --threads 2

A row is one (condition, conversation, perspective) of a talk file; a talked minute is 750 frames. The model is
randomly initialised (the cost does not depend on the weights; with a trained model only the sampled tokens differ).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    from faceturn.model import from_config, load_model_config
    from faceturn.schema import N_CODEBOOKS, N_FACE
    from faceturn.stream import GREEDY, MOSHI_SAMPLING, generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", help="model shape (default: tiny)")
    ap.add_argument("--rows", type=int, nargs="+", default=[20, 40, 80], help="rows per batch (default: 20 40 80)")
    ap.add_argument("--frames", type=int, default=300, help="frames talked per measurement (default: 300)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per setting; the median is printed")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = from_config(load_model_config(args.config)).eval()
    card = model.cfg.card
    print(f"{args.config}, {args.threads} thread(s), {args.frames} frames, median of {args.repeats}")
    print("| rows | greedy µs/row-frame | Moshi sampling µs/row-frame | talked minutes per CPU-minute (sampling) |")
    print("|---|---|---|---|")
    for rows in args.rows:
        g = torch.Generator().manual_seed(0)
        other = torch.randint(0, card, (rows, N_CODEBOOKS, args.frames), generator=g)
        face, present = torch.randn(rows, args.frames, N_FACE, generator=g), torch.ones(rows, args.frames)
        uniforms = torch.rand(rows, args.frames + 1, 1 + N_CODEBOOKS, generator=g)
        cells = []
        for sampling in (GREEDY, MOSHI_SAMPLING):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                generate(model, other, face, present, sampling, text=False, uniforms=uniforms)
                times.append(time.perf_counter() - t0)
            cells.append(float(np.median(times)) / (rows * args.frames) * 1e6)
        minutes = 60.0 / (cells[1] * 1e-6 * 750)  # a CPU-minute over the CPU-seconds of one talked row-minute
        print(f"| {rows} | {cells[0]:.0f} | {cells[1]:.0f} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
