"""Wall-clock time of the full synthetic leave-one-group-out attribution: both corpora, every variant, every seed.

    .venv/bin/python benchmarks/attribution_time.py [--out /tmp/attribution-bench] [--jobs 2] [--set key=value ...]

Runs what a user runs, through the CLI, into a fresh folder: `faceturn attribute plan --config synthetic` (which
generates the `tight` and `wide` corpora), `faceturn attribute run --jobs N`, `faceturn attribute collect`. Prints
the seconds of each phase, the number of runs and the seconds per run, and the reading of the collected results.
The target (issue: attribution across corpora) is <= 8 minutes on 2 CPU cores for the whole thing. Nothing is
asserted; the machine's other load adds to the figures, so run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceturn.eval.attribution import group_cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="study folder (default: a new temporary folder)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="study config override")
    parser.add_argument("--keep", action="store_true", help="keep the study folder")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="attribution-bench-")) / "study"
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: the benchmark needs a fresh folder")
    faceturn = [sys.executable, "-m", "faceturn", "attribute"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    sets = [x for kv in args.set for x in ("--set", kv)]
    phases = {}
    for name, cmd in (
        ("plan (incl. corpus generation)", [*faceturn, "plan", "--config", "synthetic", "--out", str(out), *sets]),
        ("run", [*faceturn, "run", str(out), "--jobs", str(args.jobs)]),
        ("collect", [*faceturn, "collect", str(out)]),
    ):
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--no-progress"] if name != "collect" else cmd, check=True, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        phases[name] = time.perf_counter() - t0
    plan = json.loads((out / "plan.json").read_text())
    results = json.loads((out / "results.json").read_text())
    total = sum(phases.values())
    n_runs = len(plan["runs"])
    print(f"full synthetic attribution: {n_runs} runs ({len(results['corpora'])} corpora, seeds {results['seeds']}), "
          f"{args.jobs} at a time, {os.cpu_count()} CPUs")  # fmt: skip
    for name, s in phases.items():
        print(f"  {name:32s} {s:7.1f} s")
    print(f"  {'total':32s} {total:7.1f} s = {total / 60:.2f} min (target <= 8 min); "
          f"{phases['run'] * args.jobs / n_runs:.1f} s per run per slot")  # fmt: skip
    for g, reading in results["summary"]["reading"].items():
        cells = ", ".join(f"{c} {group_cell(b['groups'][g])}" for c, b in results["corpora"].items())
        print(f"  {g:11s} {cells}: {reading}")
    if args.out is None and not args.keep:
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
