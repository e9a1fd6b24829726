"""`faceturn plot`: figures from prediction files (PNG and SVG), e.g. the demo timeline of one conversation."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceturn.commands._args import add_force, add_out, add_window
from faceturn.errors import FaceturnError
from faceturn.eval.predict import Predictions
from faceturn.io import PNG_IMAGE, SVG_IMAGE, check_output_dir
from faceturn.viz.figures import load_timeline, roc_figure, timeline_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    p = sub.add_parser("timeline", help="voice activity, P(yield) with face and zeroed, the interlocutor's face")
    add_window(p)
    add_out(p, default=Path("."), help="output folder (default: .)")
    add_force(p)
    p = sub.add_parser("roc", help="ROC curves with the face and zeroed, one colour per prediction file")
    p.add_argument("--pred", type=Path, required=True, action="append",
                   help="prediction file; repeat to compare (e.g. one per corpus)")  # fmt: skip
    p.add_argument("--label", action="append", help="legend label per --pred (default: the file's corpus folder)")
    add_out(p, default=Path("."), help="output folder (default: .)")
    add_force(p)


def run(args: argparse.Namespace) -> int:
    stem = f"timeline_{args.conversation}_p{args.perspective}" if args.figure == "timeline" else "roc"
    inputs = {"--pred": args.pred, "--corpus": getattr(args, "corpus", None)}
    check_output_dir(args.out, files={f"{stem}.png": PNG_IMAGE, f"{stem}.svg": SVG_IMAGE}, inputs=inputs,
                     force=args.force)  # fmt: skip
    if args.figure == "timeline":
        data = load_timeline(args.pred, args.conversation, perspective=args.perspective, start_s=args.start,
                             end_s=args.end, corpus=args.corpus)  # fmt: skip
        paths = timeline_figure(data, args.out / stem)
    else:
        labels = args.label or []
        if labels and len(labels) != len(args.pred):
            raise FaceturnError(f"give one --label per --pred ({len(args.pred)} files, {len(labels)} labels)")
        preds = [Predictions.load(p) for p in args.pred]
        labels = labels or [Path(p.meta["corpus"]).name for p in preds]
        if len(set(labels)) != len(labels):
            raise FaceturnError(f"labels repeat ({labels}); name each file with --label")
        paths = roc_figure(dict(zip(labels, preds, strict=True)), args.out / stem)
    for path in paths:
        print(f"plot: wrote {path}")
    return 0
