"""`faceturn evaluate`: step 3 — AUC with the face vs zeroed (paired, clustered CIs) and VAP event metrics."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", type=Path, required=True, help="prediction file from `faceturn predict`")
    parser.add_argument("--val-pred", type=Path, help="validation predictions: picks the balanced-accuracy threshold")
    parser.add_argument("--corpus", type=Path, help="refuse predictions made for another corpus")
    parser.add_argument("--split", help="refuse predictions made for another split")
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    from faceturn.eval.evaluate import check_predictions, evaluate_predictions, format_results
    from faceturn.eval.predict import Predictions
    from faceturn.io import atomic_write_json, atomic_write_text

    pred = Predictions.load(args.pred)
    check_predictions(pred, corpus=args.corpus, split=args.split)
    val = Predictions.load(args.val_pred) if args.val_pred else None
    res = evaluate_predictions(pred, val=val, n_resamples=args.resamples, seed=args.seed)
    res["predictions"]["file"] = str(args.pred)
    table = format_results(res)
    print(table)
    if args.out:
        atomic_write_json(args.out / "results.json", res)
        atomic_write_text(args.out / "results.md", table + "\n")
        print(f"evaluate: wrote {args.out / 'results.json'}")
    return 0
