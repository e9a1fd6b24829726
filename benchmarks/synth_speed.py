"""Issue target: the synthetic generator writes ≥ 100 hours of conversation per minute of wall time on 2 cores
(without waveforms).

Generates N conversations of a preset into a temporary folder (store files, manifest, truth.json) and prints hours of
conversation per minute, for tokens and faces only and, separately, with waveforms. Wall time depends on what else
runs on the machine, so the CPU time of the run is printed too.

    python benchmarks/synth_speed.py [--preset tight --conversations 200 --jobs 2 --audio-conversations 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from faceturn.synth import generate_corpus, load_preset


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children (the workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(preset: str, n: int, workers: int, audio: bool) -> None:
    cfg = load_preset(preset)
    with tempfile.TemporaryDirectory() as out:
        wall0, cpu0 = time.perf_counter(), _cpu_s()
        summary = generate_corpus(cfg, out, n, seed=0, audio=audio, workers=workers, progress=False)
        wall_s, cpu_s = time.perf_counter() - wall0, _cpu_s() - cpu0
    kind = "with waveforms" if audio else "tokens + faces"
    print(
        f"{preset} {kind}: {summary.conversations} conversations, {summary.hours:.2f} h in {wall_s:.1f} s wall "
        f"({cpu_s:.1f} s CPU, {workers} worker(s)) -> {summary.hours / (wall_s / 60):.0f} h of conversation per minute"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tight")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--audio-conversations", type=int, default=20, help="0 skips the waveform measurement")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="generating processes")
    args = parser.parse_args()
    measure(args.preset, args.conversations, args.jobs, audio=False)
    if args.audio_conversations:
        measure(args.preset, args.audio_conversations, args.jobs, audio=True)


if __name__ == "__main__":
    main()
