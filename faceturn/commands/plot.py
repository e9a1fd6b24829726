"""`faceturn plot`: figures from prediction files (PNG and SVG), e.g. the demo timeline of one conversation."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """--pred, --conversation, --perspective, --start, --end, --corpus: one conversation window of a prediction file."""
    parser.add_argument("--pred", type=Path, required=True, help="prediction file from `faceturn predict`")
    parser.add_argument("--conversation", required=True, help="conversation id")
    parser.add_argument(
        "--perspective", type=int, default=0, choices=(0, 1),
        help="the participant the model speaks as; the face shown is the other's (default: 0)",
    )  # fmt: skip
    parser.add_argument("--start", type=float, help="window start in seconds (default: the conversation's start)")
    parser.add_argument("--end", type=float, help="window end in seconds (default: the conversation's end)")
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: the one the prediction file names)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    p = sub.add_parser("timeline", help="voice activity, P(yield) with face and zeroed, the interlocutor's face")
    add_window_arguments(p)
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    p = sub.add_parser("roc", help="ROC curves with the face and zeroed, one colour per prediction file")
    p.add_argument("--pred", type=Path, required=True, action="append",
                   help="prediction file; repeat to compare (e.g. one per corpus)")  # fmt: skip
    p.add_argument("--label", action="append", help="legend label per --pred (default: the file's corpus folder)")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")


def run(args: argparse.Namespace) -> int:
    if args.figure == "timeline":
        from faceturn.viz.figures import load_timeline, timeline_figure

        data = load_timeline(args.pred, args.conversation, perspective=args.perspective, start_s=args.start,
                             end_s=args.end, corpus=args.corpus)  # fmt: skip
        paths = timeline_figure(data, args.out / f"timeline_{args.conversation}_p{args.perspective}")
    else:
        from faceturn.eval.predict import Predictions
        from faceturn.viz.figures import roc_figure

        labels = args.label or []
        if labels and len(labels) != len(args.pred):
            raise ValueError(f"give one --label per --pred ({len(args.pred)} files, {len(labels)} labels)")
        preds = [Predictions.load(p) for p in args.pred]
        labels = labels or [Path(p.meta["corpus"]).name for p in preds]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels repeat ({labels}); name each file with --label")
        paths = roc_figure(dict(zip(labels, preds, strict=True)), args.out / "roc")
    for path in paths:
        print(f"plot: wrote {path}")
    return 0
