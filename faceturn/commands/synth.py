"""`faceturn synth`: generate a synthetic audio-visual conversation corpus from a preset (DESIGN §9).

    faceturn synth --preset tight --conversations 200 --seed 1 --out corpora/tight [--set floor.fto_mean_s=0.3]
        [--audio] [--workers 2]

The corpus is written in the store format with `truth.json` (the planted cues, the observation noise per face
group, the expected statistics and the full config). Re-running with the same arguments resumes and reproduces the
same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="built-in preset (tight, wide) or a preset TOML file")
    parser.add_argument("--conversations", type=int, required=True, help="number of conversations to generate")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="output corpus folder")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset value, e.g. --set audio.cue_reliability=0.8 (repeatable; type-checked)",
    )
    parser.add_argument("--audio", action="store_true", help="also write a stereo 24 kHz WAV per conversation")
    parser.add_argument("--name", default=None, help="corpus name in the manifest (default: the preset name)")
    parser.add_argument("--workers", type=int, default=1, help="processes generating in parallel (default: 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from faceturn.config import ConfigError
    from faceturn.store import CorpusError
    from faceturn.synth import generate_corpus, load_preset

    try:
        cfg = load_preset(args.preset, args.overrides)
        summary = generate_corpus(
            cfg,
            args.out,
            args.conversations,
            args.seed,
            audio=args.audio,
            corpus_name=args.name,
            workers=args.workers,
            progress=not args.quiet,
        )
    except (ConfigError, CorpusError, ValueError) as e:
        print(f"faceturn synth: {e}", file=sys.stderr)
        return 2
    print(
        f"synth: {summary.conversations} conversations ({summary.generated} new), {summary.hours:.2f} h of "
        f"conversation in {summary.seconds:.1f} s -> {args.out}"
    )
    return 0
