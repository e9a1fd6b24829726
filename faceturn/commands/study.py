"""`faceturn study`: the whole study (step 1: face probe; step 2: does a vanilla LM use the face; step 3: face vs
zeroed AUC of the aux model; leave-one-group-out attribution; report) on the corpora and budget a study config names,
resumable.

    faceturn study --config synthetic --out study/        # a shipped config (synthetic, real) or a TOML file
    faceturn study --config my-study.toml --out study/ --jobs 4 --set n_resamples=5000
    faceturn study --config real --out study/ --executor slurm --partition gpu --time-min 240   # docs/slurm.md

Writes study/results.json (every number with its CI, n, seed and source file), study/report.md and a self-contained
study/report.html. Re-running skips every finished step; a different config in the same folder is refused. With
`--executor slurm` the runs are SLURM job arrays (resources from the config's [slurm] section and the flags); the
command waits for them, then writes the results as above.
"""

from __future__ import annotations

import argparse

from faceturn.commands._args import (
    add_executor,
    add_jobs,
    add_out,
    add_progress,
    add_study_config,
    config_input,
    slurm_config,
)
from faceturn.io import STUDY_FOLDER, check_output_dir
from faceturn.study import load_study_config, run_and_summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_config(parser)
    add_out(parser, required=True, help="study folder (created; re-use it to resume)")
    add_jobs(parser, default=None, help="runs at a time (default: attribution.jobs)")
    add_progress(parser)
    add_executor(parser)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, kind=STUDY_FOLDER, inputs={"--config": config_input(args.config)})  # resumable
    cfg = load_study_config(args.config, args.overrides)
    slurm = slurm_config(args, cfg.slurm)
    print(run_and_summarize(cfg, args.out, jobs=args.jobs, slurm=slurm, progress=args.progress))
    return 0
