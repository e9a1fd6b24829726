"""`faceturn talk`: step 4 — the model talks as self against every conversation of a split while the interlocutor's
recorded audio and face are replayed, face as given and zeroed, greedy and Moshi-sampled; `--gate` adds floor
control from the yield head (θ chosen on the validation split). Writes a talk file for `faceturn timing`."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from faceturn.checkpoint import resolve_checkpoint
from faceturn.commands._args import (
    add_config,
    add_corpus,
    add_device,
    add_force,
    add_out,
    add_progress,
    add_run,
    add_set,
    config_input,
    run_input,
)
from faceturn.config import load_config, to_dict
from faceturn.eval.talk import Talk, TalkConfig, talk
from faceturn.io import TALK_FILE, check_output_file
from faceturn.store import fingerprint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    add_corpus(parser)
    parser.add_argument("--split", default="test", help="split to talk over (default: test)")
    add_out(parser, required=True, help="talk file to write (.npz)")
    add_force(parser)
    parser.add_argument(
        "--gate", action="store_true",
        help="also talk with floor control from the yield head (θ chosen on the validation split); needs an aux run",
    )  # fmt: skip
    add_config(parser, help="a TalkConfig as a TOML or JSON file (default: the defaults)")
    add_set(parser, help="override a TalkConfig field, e.g. seeds=[0,1] or max_seconds=60 (repeatable)")
    add_device(parser)
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    inputs = {"--run": run_input(args.run), "--corpus": args.corpus, "--config": config_input(args.config)}
    config = load_config(TalkConfig, args.config, args.overrides)
    check_output_file(args.out, TALK_FILE, inputs=inputs, force=args.force, replaceable=_same_talk(args, config))
    result = talk(args.run, args.corpus, args.split, config, gate=args.gate, device=args.device,
                  progress=args.progress, allow_older=args.allow_older)  # fmt: skip
    result.save(args.out)
    a, reader = result.arrays, result.meta["reader"]
    print(f"talk: {a['voice'].shape[0]} rows ({len(result.meta['runs'])} runs × face/zeroed"
          f"{' × ungated/gated' if args.gate else ''} × {len(result.meta['conversations'])} conversations × 2 "
          f"perspectives) → {args.out}; voice reader accuracy {reader['accuracy']['value']:.3f}, AUC "
          f"{reader['auc']['value']:.3f}")  # fmt: skip
    return 0


def _same_talk(args: argparse.Namespace, config: TalkConfig):
    """Whether an existing talk file is this very talk made before (same checkpoint, corpus content, split, config
    and gate): running the same command again reproduces it, so it is replaced without --force (an interrupted study
    resumes this way). Anything else needs --force."""

    @functools.cache
    def now() -> tuple[str, str]:
        return str(resolve_checkpoint(args.run, allow_older=args.allow_older).resolve()), fingerprint(args.corpus)

    def replaceable(path: Path) -> bool:
        meta = Talk.peek_meta(path)
        if meta is None or meta.get("split") != args.split or meta.get("config") != to_dict(config):
            return False
        if (meta.get("gate") is not None) != args.gate:
            return False
        return (meta.get("checkpoint"), meta.get("corpus_fingerprint")) == now()

    return replaceable
