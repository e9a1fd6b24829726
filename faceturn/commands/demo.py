"""`faceturn demo`: the main job on the built-in synthetic corpora.

It generates the two synthetic presets (`tight`, MultiDialog-like face crops; `wide`, Seamless-like full-body
framing) with waveforms, validates them and prints their statistics next to what the generator planted. Re-running
with the same seed resumes and reproduces the same corpora.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PRESETS = ("tight", "wide")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    parser.add_argument("--conversations", type=int, default=200, help="conversations per corpus (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-audio", action="store_true", help="skip waveforms (faster)")


def run(args: argparse.Namespace) -> int:
    from faceturn.commands.inspect import corpus_statistics, format_summary
    from faceturn.store import Corpus
    from faceturn.synth import generate_corpus, load_preset

    t0 = time.perf_counter()
    summary = {}
    for preset in PRESETS:
        out = args.out / "corpora" / preset
        cfg = load_preset(preset)
        generate_corpus(cfg, out, n_conversations=args.conversations, seed=args.seed, audio=not args.no_audio)
        corpus = Corpus(out)
        problems = corpus.validate_all()
        if problems:
            for p in problems:
                print(p)
            return 1
        stats = corpus_statistics(corpus)
        truth = json.loads((out / "truth.json").read_text())
        summary[preset] = {"statistics": stats, "expected": truth.get("expected_statistics", {})}
        print(f"\n== {preset} ({out})")
        print(format_summary(stats))
    (args.out / "demo-summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    elapsed_s = time.perf_counter() - t0
    print(f"\ndemo: {len(PRESETS)} corpora in {elapsed_s:.1f} s; summary: {args.out / 'demo-summary.json'}")
    return 0
