"""`faceturn inspect CORPUS`: validate every file of a corpus, then summarise its turn-taking and face statistics.

Invalid files are all listed (each "path: problem") and the command exits 1, so a broken corpus never reaches
training. The statistics are `faceturn.eval.corpus.corpus_statistics`: labels recomputed from `va` with the default
`EventConfig`, exactly as training and evaluation will see them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceturn.commands._args import add_progress
from faceturn.eval.corpus import corpus_statistics, format_summary
from faceturn.store import Corpus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", type=Path, help="corpus folder (manifest.jsonl, one .safetensors per conversation)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the readable summary")
    parser.add_argument(
        "--no-validate",
        action="store_true",
        help="skip the full value scan (ranges, finiteness); headers, shapes and dtypes are still checked",
    )
    add_progress(parser, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    corpus = Corpus(args.corpus, validate=False)
    stats = corpus_statistics(corpus, validate=not args.no_validate, progress=args.progress)
    problems = stats["problems"]
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s): {corpus.root} is not a valid corpus", file=sys.stderr)
        if args.json:
            print(json.dumps({"corpus": str(corpus.root), "valid": False, "problems": problems}, indent=2))
        return 1
    print(json.dumps({**stats, "valid": True}, indent=2, sort_keys=True) if args.json else format_summary(stats))
    return 0
