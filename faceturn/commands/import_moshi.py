"""`faceturn import-moshi`: kyutai's Moshi weights → a faceturn run folder (see faceturn.moshi_import).

faceturn import-moshi --weights model.safetensors [--config config.json] --out runs/moshi [--dtype bf16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from faceturn.commands._args import add_config, add_out, add_set
from faceturn.errors import RunDirError
from faceturn.io import EMPTY_FOLDER, RUN_FOLDER, check_output_dir, path_kind
from faceturn.moshi_import import import_moshi, write_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True, help="kyutai's LM model.safetensors (e.g. moshiko's)")
    add_config(parser, help="kyutai's config.json (LMModel kwargs); default: the released 7B shape (faceturn's "
               "moshi-7b config)")  # fmt: skip
    add_out(parser, required=True, help="new run folder (checkpoint step 0)")
    parser.add_argument(
        "--dtype", choices=("bf16", "fp32"), default="bf16", help="stored precision of the weights (default bf16)"
    )
    add_set(parser, help="new-part options: face_norm, zero_groups, face_hidden, yield_hidden (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation of the new face encoder and yield head")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, kind=RUN_FOLDER, inputs={"--weights": args.weights, "--config": args.config})
    if path_kind(args.out) not in (None, EMPTY_FOLDER):  # before reading gigabytes of weights
        raise RunDirError(f"{args.out}: exists and is not an empty folder; choose a new --out")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    model = import_moshi(args.weights, args.config, dtype, args.overrides, args.seed)
    source = {"weights": str(args.weights), "config": None if args.config is None else str(args.config)}
    ckpt = write_run(model, args.out, {**source, "dtype": args.dtype, "seed": args.seed})
    n = model.num_parameters(backbone_only=True)
    print(f"faceturn import-moshi: {n / 1e9:.4f} B backbone parameters from {args.weights} -> {ckpt}")
    return 0
