"""`faceturn evaluate`: step 3 — AUC with the face vs zeroed (paired, clustered CIs) and VAP event metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceturn.commands._args import add_corpus, add_force, add_out, check_result_out, write_result
from faceturn.eval.evaluate import check_predictions, check_validation, evaluate_predictions, format_results
from faceturn.eval.predict import Predictions
from faceturn.stats import MIN_CONVERSATIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", type=Path, required=True, help="prediction file from `faceturn predict`")
    parser.add_argument("--val-pred", type=Path, help="validation predictions of the same model and corpus: pick "
                        "the balanced-accuracy threshold")  # fmt: skip
    add_corpus(parser, required=False, help="the corpus the predictions were made from (default: the one they name; "
               "another corpus is refused)")  # fmt: skip
    parser.add_argument("--split", help="refuse predictions made for another split")
    add_out(parser, help="folder for results.json and results.md")
    add_force(parser)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument(
        "--min-conversations", type=int, default=MIN_CONVERSATIONS,
        help=f"CIs from fewer conversations carry a warning (default: {MIN_CONVERSATIONS})",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    inputs = {"--pred": args.pred, "--val-pred": args.val_pred, "--corpus": args.corpus}
    check_result_out(args.out, "results", inputs=inputs, force=args.force)
    pred = Predictions.load(args.pred)
    check_predictions(pred, corpus=args.corpus, split=args.split)
    val = Predictions.load(args.val_pred) if args.val_pred else None
    if val is not None:
        check_validation(val, pred)
    res = evaluate_predictions(
        pred, val=val, n_resamples=args.resamples, seed=args.seed, min_conversations=args.min_conversations,
        corpus=args.corpus,
    )  # fmt: skip
    res["predictions"]["file"] = str(args.pred)
    write_result("evaluate", args.out, "results", res, format_results(res))
    return 0
