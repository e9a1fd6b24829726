"""`faceturn evaluate`: step 3 — AUC with the face vs zeroed (paired, clustered CIs) and VAP event metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceturn.commands._args import add_corpus, add_out, write_result
from faceturn.eval.evaluate import check_predictions, evaluate_predictions, format_results
from faceturn.eval.predict import Predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", type=Path, required=True, help="prediction file from `faceturn predict`")
    parser.add_argument("--val-pred", type=Path, help="validation predictions: picks the balanced-accuracy threshold")
    add_corpus(parser, required=False, help="refuse predictions made for another corpus")
    parser.add_argument("--split", help="refuse predictions made for another split")
    add_out(parser, help="folder for results.json and results.md")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")


def run(args: argparse.Namespace) -> int:
    pred = Predictions.load(args.pred)
    check_predictions(pred, corpus=args.corpus, split=args.split)
    val = Predictions.load(args.val_pred) if args.val_pred else None
    res = evaluate_predictions(pred, val=val, n_resamples=args.resamples, seed=args.seed)
    res["predictions"]["file"] = str(args.pred)
    write_result("evaluate", args.out, "results", res, format_results(res))
    return 0
