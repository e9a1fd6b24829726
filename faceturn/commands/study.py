"""`faceturn study`: the whole study of DESIGN §1 on the corpora and budget a study config names, resumable.

    faceturn study --config synthetic --out study/        # a shipped config (synthetic, real) or a TOML file
    faceturn study --config my-study.toml --out study/ --jobs 4 --set n_resamples=5000

Writes study/results.json (every number with its CI, n, seed and source file), study/report.md and a self-contained
study/report.html. Re-running skips every finished step; a different config in the same folder is refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="study config: a shipped name (synthetic, real) or a TOML file")
    parser.add_argument("--out", type=Path, required=True, help="study folder (created; re-use it to resume)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time (default: attribution.jobs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study config value")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from faceturn.study import load_study_config, run_and_summarize

    cfg = load_study_config(args.config, args.set)
    print(run_and_summarize(cfg, args.out, jobs=args.jobs, progress=not args.quiet))
    return 0
