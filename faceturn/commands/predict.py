"""`faceturn predict`: per-frame P(yield) with the face and with it zeroed, for every conversation of a split."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder (its newest checkpoint) or a checkpoint")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder")
    parser.add_argument("--split", default="test", help="split to predict (default: test)")
    parser.add_argument("--out", type=Path, required=True, help="prediction file to write (.npz)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default: 16)")
    parser.add_argument("--hidden", action="store_true", help="also store the temporal hidden states (for probes)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def run(args: argparse.Namespace) -> int:
    from faceturn.eval.predict import predict

    pred = predict(
        args.run, args.corpus, args.split, batch_size=args.batch_size, hidden=args.hidden, device=args.device
    )
    pred.save(args.out)
    n_conv = len(pred.meta["conversations"])
    print(f"predict: {pred.p_face.size} frames of {n_conv} conversations (both perspectives) → {args.out}")
    return 0
