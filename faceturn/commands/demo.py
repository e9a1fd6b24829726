"""`faceturn demo`: the main job. Generates the two synthetic corpora (`tight`, MultiDialog-like face crops; `wide`,
Seamless-like full-body framing; without waveform files: the viewer pages and videos regenerate the sound of what
they show from the generator's seed) and runs the whole study on them at `tiny` scale on the CPU: step 1
(face probe), step 2 (vanilla LM analyses), step 3 (aux model, face vs zeroed), leave-one-group-out attribution by
retraining with the labelled-invalid post-hoc table, step 4 (the talking models' turn timing; `--skip-step4` leaves
it and its aux twin out), the cross-corpus summary, figures, viewer pages and videos.

It ends by printing the report's path and the headline table. The study config is `faceturn/configs/study/
synthetic.toml`; `--seed` changes every seed of it (corpora, training, bootstrap). Re-running resumes; the same seed
in a new folder reproduces every number of results.json exactly.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from faceturn.commands._args import add_jobs, add_out, add_progress
from faceturn.io import STUDY_FOLDER, check_output_dir
from faceturn.study import load_study_config, reseed, run_and_summarize


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out(parser, default=Path("demo-out"), help="output folder (default: demo-out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpora, the training runs and the bootstrap")
    add_jobs(parser, default=None, help="runs at a time (default: 2)")
    parser.add_argument("--skip-step4", action="store_true", help="leave out step 4 (the talking models' turn "
                        "timing and the aux twin it trains): a shorter demo")  # fmt: skip
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, kind=STUDY_FOLDER)  # a study folder: re-running resumes
    cfg = reseed(load_study_config("synthetic"), args.seed)
    if args.skip_step4:
        cfg = replace(cfg, step4=False)
    print(run_and_summarize(cfg, args.out, jobs=args.jobs, progress=args.progress))
    return 0
