"""`faceturn train`: train a dialogue LM on a corpus into a run folder (see faceturn.train for torchrun use).

faceturn train --config aux --corpus CORPUS --out runs/aux [--set optim.max_steps=2000 ...] [--resume]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="a preset (vanilla: next-token losses only; aux: plus the turn-yield head) "
        "or a train-config TOML file",
    )  # fmt: skip
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (manifest.jsonl + conversations)")
    parser.add_argument("--out", type=Path, required=True, help="run folder; must be empty unless --resume")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=1e-3 --set data.face_dropout=0.2 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest complete checkpoint"
    )


def run(args: argparse.Namespace) -> int:
    from faceturn.checkpoint import CheckpointError
    from faceturn.config import ConfigError
    from faceturn.store import CorpusError
    from faceturn.train import RunDirError, load_train_config, train

    try:
        cfg = load_train_config(args.config, args.overrides)
        result = train(cfg, args.corpus, args.out, resume=args.resume)
    except (ConfigError, CheckpointError, CorpusError, RunDirError) as e:
        print(f"faceturn train: error: {e}", file=sys.stderr)
        return 2
    if not result.is_main:
        return 0
    auc = result.last_val.get("val_yield_auc")
    print(
        f"faceturn train: stopped at step {result.step} ({result.stop_reason}); "
        f"val loss {result.last_val.get('val_loss', float('nan')):.4f}, "
        f"val yield AUC {'n/a' if auc is None else f'{auc:.3f}'}; checkpoint {result.checkpoint}"
    )
    return 0
