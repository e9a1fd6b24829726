"""`faceturn probe`: step 1 — a logistic probe on windows of the interlocutor's face (see faceturn.eval.probe)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (from synth or prepare)")
    parser.add_argument("--out", type=Path, help="write probe.json and probe.md into this folder")
    parser.add_argument("--no-groups", action="store_true", help="skip the per-group and leave-one-group-out probes")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a ProbeConfig field (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    from faceturn.config import apply_overrides
    from faceturn.eval.probe import ProbeConfig, format_probe, run_probe
    from faceturn.io import atomic_write_json, atomic_write_text
    from faceturn.store import Corpus

    config = apply_overrides(ProbeConfig(), args.set)
    result = run_probe(Corpus(args.corpus), config, groups=not args.no_groups)
    table = format_probe(result)
    print(table)
    if args.out:
        atomic_write_json(args.out / "probe.json", result)
        atomic_write_text(args.out / "probe.md", table + "\n")
        print(f"probe: wrote {args.out / 'probe.json'}")
    return 0
