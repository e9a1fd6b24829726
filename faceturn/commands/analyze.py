"""`faceturn analyze`: step 2 — does the model use the face? (prediction change, hidden-state probes, readout gain)"""

from __future__ import annotations

import argparse

from faceturn.commands._args import (
    add_config,
    add_corpus,
    add_force,
    add_out,
    add_run,
    add_set,
    check_result_out,
    config_input,
    run_input,
    write_result,
)
from faceturn.config import load_config
from faceturn.eval.analyze import AnalyzeConfig, analyze, format_analysis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    add_corpus(parser)
    add_out(parser, help="folder for analysis.json and analysis.md")
    add_force(parser)
    add_config(parser, help="an AnalyzeConfig as a TOML or JSON file (default: the defaults)")
    add_set(parser, help="override an AnalyzeConfig field (repeatable)")


def run(args: argparse.Namespace) -> int:
    inputs = {"--run": run_input(args.run), "--corpus": args.corpus, "--config": config_input(args.config)}
    check_result_out(args.out, "analysis", inputs=inputs, force=args.force)
    config = load_config(AnalyzeConfig, args.config, args.overrides)
    res = analyze(args.run, args.corpus, config, allow_older=args.allow_older)
    write_result("analyze", args.out, "analysis", res, format_analysis(res))
    return 0
