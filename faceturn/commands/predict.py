"""`faceturn predict`: per-frame P(yield) with the face and with it zeroed, for every conversation of a split."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from faceturn.checkpoint import resolve_checkpoint
from faceturn.commands._args import add_corpus, add_device, add_force, add_out, add_run, positive_int, run_input
from faceturn.eval.predict import Predictions, predict_zero_sets
from faceturn.io import PREDICTION_FILE, check_output_file
from faceturn.schema import GROUP_NAMES, group_indices
from faceturn.store import fingerprint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    add_corpus(parser)
    parser.add_argument("--split", default="test", help="split to predict (default: test)")
    add_out(parser, required=True, help="prediction file to write (.npz)")
    add_force(parser)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="windows per forward pass (default: 16)")
    parser.add_argument("--hidden", action="store_true", help="also store the temporal hidden states (for probes)")
    add_device(parser)
    parser.add_argument(
        "--no-zeroed",
        action="store_true",
        help="skip P(yield) with the face zeroed (half the time; the file then serves attribution, not `evaluate`)",
    )
    parser.add_argument(
        "--posthoc-zero",
        default="",
        metavar="GROUPS",
        help="comma-separated face groups zeroed at evaluation only (post-hoc zeroing; the file is marked "
        "valid: false unless the checkpoint was trained with exactly that zero set)",
    )
    parser.add_argument(
        "--posthoc-each",
        default="",
        metavar="GROUPS",
        help="comma-separated face groups (or 'all'): also write OUT with suffix .posthoc-GROUP.npz for each one "
        "zeroed post hoc (for the attribution study's labelled-invalid table)",
    )


def run(args: argparse.Namespace) -> int:
    def groups(text: str) -> list[str]:
        names = list(GROUP_NAMES) if text.strip() == "all" else [g.strip() for g in text.split(",") if g.strip()]
        group_indices(names)  # unknown names: an error listing the valid ones
        return names

    outs = [args.out] + [args.out.with_name(f"{args.out.stem}.posthoc-{g}.npz") for g in groups(args.posthoc_each)]
    zero_sets = [groups(args.posthoc_zero)] + [[g] for g in groups(args.posthoc_each)]
    inputs = {"--run": run_input(args.run), "--corpus": args.corpus}
    for out in outs:
        check_output_file(out, PREDICTION_FILE, inputs=inputs, force=args.force, replaceable=_same_prediction(args))
    preds = predict_zero_sets(
        args.run, args.corpus, args.split, zero_sets, batch_size=args.batch_size, hidden=args.hidden,
        device=args.device, zeroed=not args.no_zeroed, allow_older=args.allow_older,
    )  # fmt: skip
    for out, zero, pred in zip(outs, zero_sets, preds, strict=True):
        pred.save(out)
        n_conv = len(pred.meta["conversations"])
        note = "" if pred.meta["valid"] else f" (post hoc zeroed {zero}: marked invalid)"
        print(f"predict: {pred.p_face.size} frames of {n_conv} conversations (both perspectives) → {out}{note}")
    return 0


def _same_prediction(args: argparse.Namespace):
    """Whether an existing prediction file is this very prediction made before (same checkpoint, corpus content and
    split): running the same command again reproduces it, so it is replaced without --force (an interrupted study
    resumes this way). Anything else needs --force."""

    @functools.cache
    def now() -> tuple[str, str]:
        return str(resolve_checkpoint(args.run, allow_older=args.allow_older).resolve()), fingerprint(args.corpus)

    def replaceable(path: Path) -> bool:
        meta = Predictions.peek_meta(path)
        if meta is None or meta.get("split") != args.split:
            return False
        return (meta.get("checkpoint"), meta.get("corpus_fingerprint")) == now()

    return replaceable
