"""`faceturn timing`: step 4 — turn-taking metrics of a talk file (pause handling, smooth turn-taking against the
recording's own human gaps, yielding, backchannels, speech, overlap and silence), face vs zeroed with paired
conversation-cluster CIs, ungated and gated side by side, with the voice reader's accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceturn.commands._args import (
    add_config,
    add_corpus,
    add_force,
    add_out,
    add_set,
    check_result_out,
    config_input,
    write_result,
)
from faceturn.config import load_config
from faceturn.eval.talk import Talk
from faceturn.eval.timing import TimingConfig, format_timing, timing_metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--talk", type=Path, required=True, help="talk file from `faceturn talk`")
    add_corpus(parser, required=False, help="refuse a talk file made from another corpus than this one")
    parser.add_argument("--split", help="refuse a talk file made for another split")
    add_out(parser, help="folder for timing.json and timing.md")
    add_force(parser)
    add_config(parser, help="a TimingConfig as a TOML or JSON file (default: the defaults)")
    add_set(parser, help="override a TimingConfig field, e.g. resamples=5000 (repeatable)")


def run(args: argparse.Namespace) -> int:
    inputs = {"--talk": args.talk, "--corpus": args.corpus, "--config": config_input(args.config)}
    check_result_out(args.out, "timing", inputs=inputs, force=args.force)
    config = load_config(TimingConfig, args.config, args.overrides)
    talk = Talk.load(args.talk)
    talk.check_source(args.corpus, args.split)
    res = timing_metrics(talk, config)
    res["talk"]["file"] = str(args.talk)
    write_result("timing", args.out, "timing", res, format_timing(res))
    return 0
