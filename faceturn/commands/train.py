"""`faceturn train`: train a dialogue LM on a corpus into a run folder (see faceturn.train for torchrun use).

faceturn train --config aux --corpus CORPUS --out runs/aux [--set optim.max_steps=2000 ...] [--resume]
"""

from __future__ import annotations

import argparse

from faceturn.commands._args import add_allow_older, add_config, add_corpus, add_out, add_set, config_input
from faceturn.errors import RunDirError
from faceturn.io import FOLDER, RUN_FOLDER, check_output_dir, path_kind
from faceturn.recipe import load_train_config
from faceturn.train import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config(parser, required=True, help="a shipped train config (vanilla: next-token losses only; aux: plus the "
               "turn-yield head; lora) or a train-config TOML (or JSON) file")  # fmt: skip
    add_corpus(parser, help="corpus folder (manifest.jsonl + conversations)")
    add_out(parser, required=True, help="run folder; must be empty unless --resume")
    add_set(parser, help="override a config field, e.g. --set optim.lr=1e-3 --set data.face_dropout=0.2 (repeatable)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest complete checkpoint"
    )
    add_allow_older(parser)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, kind=RUN_FOLDER, inputs={"--corpus": args.corpus, "--config": config_input(args.config)})
    if args.resume and path_kind(args.out) == FOLDER:
        raise RunDirError(f"{args.out}: holds files but no run (no run config.json); --resume continues a run folder")
    cfg = load_train_config(args.config, args.overrides)
    result = train(cfg, args.corpus, args.out, resume=args.resume, allow_older=args.allow_older)
    if not result.is_main:
        return 0
    auc = result.last_val.get("val_yield_auc")
    print(
        f"faceturn train: stopped at step {result.step} ({result.stop_reason}); "
        f"val loss {result.last_val.get('val_loss', float('nan')):.4f}, "
        f"val yield AUC {'n/a' if auc is None else f'{auc:.3f}'}; checkpoint {result.checkpoint}"
    )
    return 0
