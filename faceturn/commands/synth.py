"""`faceturn synth`: generate a synthetic audio-visual conversation corpus from a preset (tight: MultiDialog-like
face crops; wide: Seamless-like full-body framing) with known planted face cues.

    faceturn synth --preset tight --conversations 200 --seed 1 --out corpora/tight [--set floor.fto_mean_s=0.3]
        [--audio] [--jobs 2]

The corpus is written in the store format with `truth.json` (the planted cues, the observation noise per face
group, the expected statistics and the full config). Re-running with the same arguments resumes and reproduces the
same bytes.
"""

from __future__ import annotations

import argparse

from faceturn.commands._args import add_jobs, add_out, add_progress, add_set, config_input
from faceturn.io import CORPUS_FOLDER, check_output_dir
from faceturn.synth import generate_corpus, load_preset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, help="built-in preset (tight, wide) or a preset TOML file")
    parser.add_argument("--conversations", type=int, required=True, help="number of conversations to generate")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_out(parser, required=True, help="output corpus folder")
    add_set(parser, help="override a preset value, e.g. --set audio.cue_reliability=0.8 (repeatable; type-checked)")
    parser.add_argument("--audio", action="store_true", help="also write a stereo 24 kHz WAV per conversation")
    parser.add_argument("--name", default=None, help="corpus name in the manifest (default: the preset name)")
    add_jobs(parser, default=1, help="processes generating in parallel (default: 1)")
    add_progress(parser, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, kind=CORPUS_FOLDER, inputs={"--preset": config_input(args.preset)})
    cfg = load_preset(args.preset, args.overrides)
    summary = generate_corpus(
        cfg,
        args.out,
        args.conversations,
        args.seed,
        audio=args.audio,
        corpus_name=args.name,
        workers=args.jobs,
        progress=args.progress,
    )
    print(
        f"synth: {summary.conversations} conversations ({summary.generated} new), {summary.hours:.2f} h of "
        f"conversation in {summary.seconds:.1f} s -> {args.out}"
    )
    return 0
