"""`faceturn analyze`: step 2 — does the model use the face? (prediction change, hidden-state probes, readout gain)"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder (its newest checkpoint) or a checkpoint")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder")
    parser.add_argument("--out", type=Path, help="folder for analysis.json and analysis.md")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override an AnalyzeConfig field (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    from faceturn.config import apply_overrides
    from faceturn.eval.analyze import AnalyzeConfig, analyze, format_analysis
    from faceturn.io import atomic_write_json, atomic_write_text

    res = analyze(args.run, args.corpus, apply_overrides(AnalyzeConfig(), args.set))
    table = format_analysis(res)
    print(table)
    if args.out:
        atomic_write_json(args.out / "analysis.json", res)
        atomic_write_text(args.out / "analysis.md", table + "\n")
        print(f"analyze: wrote {args.out / 'analysis.json'}")
    return 0
