"""`faceturn probe`: step 1 — a logistic probe on windows of the interlocutor's face (see faceturn.eval.probe)."""

from __future__ import annotations

import argparse

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
from faceturn.eval.probe import ProbeConfig, format_probe, run_probe
from faceturn.store import Corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus(parser, help="corpus folder (from synth or prepare)")
    add_out(parser, help="write probe.json and probe.md into this folder")
    add_force(parser)
    parser.add_argument("--no-groups", action="store_true", help="skip the per-group and leave-one-group-out probes")
    add_config(parser, help="a ProbeConfig as a TOML or JSON file (default: the defaults)")
    add_set(parser, help="override a ProbeConfig field (repeatable)")


def run(args: argparse.Namespace) -> int:
    inputs = {"--corpus": args.corpus, "--config": config_input(args.config)}
    check_result_out(args.out, "probe", inputs=inputs, force=args.force)
    config = load_config(ProbeConfig, args.config, args.overrides)
    result = run_probe(Corpus(args.corpus), config, groups=not args.no_groups)
    write_result("probe", args.out, "probe", result, format_probe(result))
    return 0
