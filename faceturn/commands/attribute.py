"""`faceturn attribute`: which face groups the turn-yield model uses, by retraining without each (plan/run/collect).

faceturn attribute plan --config synthetic --out study/     # plan.json (argv lists), plan.txt (one line per run)
faceturn attribute run study/ --jobs 2                       # resumable; here, 2 runs at a time
faceturn attribute run study/ --executor slurm --partition gpu  # resumable; a SLURM job array (docs/slurm.md)
faceturn attribute collect study/                            # results.json + results.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faceturn.commands._args import (
    add_executor,
    add_jobs,
    add_out,
    add_progress,
    add_study_config,
    config_input,
    slurm_config,
)
from faceturn.eval import attribution as att
from faceturn.io import STUDY_FOLDER, check_output_dir
from faceturn.study import ensure_corpora, load_study_config, plan_attribution


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("plan", help="write the runs of a leave-one-group-out study (plan.json, plan.txt)")
    add_study_config(p)
    add_out(p, required=True, help="study folder")
    add_progress(p)
    p = sub.add_parser("run", help="execute the plan here, N runs at a time (finished runs are skipped)")
    p.add_argument("dir", type=Path, help="study folder with plan.json")
    add_jobs(p, default=None, help="runs at a time (default: the config's attribution.jobs)")
    add_progress(p, help="no progress bar")
    add_executor(p)
    p = sub.add_parser("collect", help="ΔAUC per group and corpus with CIs, cross-corpus reading, post-hoc table")
    p.add_argument("dir", type=Path, help="study folder whose runs are finished")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default: the config's)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: the config's)")
    p.add_argument(
        "--method",
        choices=("retrain", "posthoc"),
        default="retrain",
        help="which table to print: retrain (valid) or posthoc (zeroing at evaluation only, labelled invalid); "
        "results.json always holds both",
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "plan":
        check_output_dir(args.out, kind=STUDY_FOLDER, inputs={"--config": config_input(args.config)})  # resumable
        cfg = load_study_config(args.config, args.overrides)
        corpora = ensure_corpora(cfg, args.out, progress=args.progress)
        runs = plan_attribution(cfg, args.out, corpora)
        done = sum(att.is_done(args.out, r) for r in runs)
        print(f"attribute plan: {len(runs)} runs ({done} already finished) → {args.out / 'plan.txt'}")
        return 0
    if args.action == "run":
        info = att.run_plan(args.dir, args.jobs, progress=args.progress, slurm=slurm_config(args))
        print(f"attribute run: {info['ran']} runs in {info['seconds']:.0f} s, {info['skipped']} already finished")
        return 0
    res = att.collect(args.dir, args.resamples, args.seed)
    print(att.format_attribution(res, args.method))
    print(f"\nattribute collect: {args.dir / 'results.json'}, {args.dir / 'results.md'}")
    return 0
