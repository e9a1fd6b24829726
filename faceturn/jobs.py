"""Run jobs N at a time, resumably: a job whose declared outputs all exist is skipped.

A job is data: a list of argv lists (its steps, run in order until one fails) plus the files it leaves behind. No
shell sits between a config and a process: every step is executed as its argv list, so a corpus name or path is one
argument whatever characters it holds. `Job.shell()` renders the steps with shell quoting for humans and cluster job
arrays (plan.txt).

Locally, each of the N slots is a warm worker process: a step whose program is a Python console script of this
environment (`faceturn ...`) runs in-process through its entry point, so importing torch is paid once per slot
rather than once per command; any other program runs as a subprocess. Each job's output goes to its own log file; a
failed job names its log.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from faceturn.errors import JobError


@dataclass(frozen=True)
class Job:
    id: str  # also the log file name (<id>.log under the log folder)
    steps: tuple[tuple[str, ...], ...]  # argv lists, run in order from `cwd`; the job fails at the first failure
    cwd: Path
    outputs: tuple[Path, ...]  # files the job leaves behind (written atomically), relative to cwd; all present = done

    def done(self) -> bool:
        return all((self.cwd / o).is_file() for o in self.outputs)

    def shell(self) -> str:
        """The steps as one shell line (`a && b`), every argument quoted: for reading, and for cluster arrays."""
        return " && ".join(shlex.join(step) for step in self.steps)


@cache
def _console_script(program: str) -> Any | None:
    """The function behind a console script of this Python environment (e.g. `faceturn` → faceturn.cli.main)."""
    found = entry_points(group="console_scripts", name=program)
    return next(iter(found)).load() if found else None


def _init_worker(threads: int) -> None:
    """Runs first in a fresh worker: the thread counts must be set before numpy's BLAS and torch load, so torch (and
    numpy with it) is imported here, not at the top of this module, which the worker imports before this runs."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)


def _run_in_process(main: Any, argv: list[str]) -> int:
    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse
        return e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def _execute(steps: tuple[tuple[str, ...], ...], cwd: str, log_path: str, env: dict[str, str]) -> int:
    """Run one job's steps in this worker, stdout and stderr (Python's and the C libraries') appended to its log."""
    with open(log_path, "a") as log:
        for step in steps:
            log.write(f"$ {shlex.join(step)}\n")
            log.flush()
            main = _console_script(step[0])
            if main is None:
                code = subprocess.run(list(step), cwd=cwd, env=env, stdout=log, stderr=log).returncode
            else:
                code = _in_process(main, list(step[1:]), cwd, log)
            if code != 0:
                return code
    return 0


def _in_process(main: Any, argv: list[str], cwd: str, log: Any) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    here = os.getcwd()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        os.chdir(cwd)
        code = _run_in_process(main, argv)
        sys.stdout.flush()
        sys.stderr.flush()
        return code
    finally:
        os.chdir(here)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_jobs(jobs: Sequence[Job], n_jobs: int, log_dir: Path, *, progress: bool = True, desc: str = "jobs") -> dict:
    """Run the unfinished jobs, `n_jobs` at a time, each slot with cores / n_jobs torch threads. Raises JobError
    naming every failed job and its log after the others have finished."""
    if n_jobs < 1:
        raise JobError(f"jobs must be >= 1, got {n_jobs}")
    todo = [j for j in jobs if not j.done()]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this faceturn, not another
    failures: list[str] = []
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job", disable=not progress)
    t0 = time.perf_counter()
    if todo:
        context = get_context("spawn")  # a clean interpreter per slot (no forked threads or torch state)
        with ProcessPoolExecutor(n_jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {}
            for job in todo:
                log_path = Path(log_dir) / f"{job.id}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                futures[pool.submit(_execute, job.steps, str(job.cwd), str(log_path), env)] = (job, log_path)
            for future in as_completed(futures):
                job, log_path = futures[future]
                try:
                    code = future.result()
                except Exception as e:  # the worker died (e.g. killed for memory): the pool is broken
                    code = f"{type(e).__name__}: {e}"
                if code != 0 or not job.done():
                    failures.append(f"{job.id} (exit {code}; see {log_path})")
                bar.update(1)
    bar.close()
    if failures:
        raise JobError(f"{len(failures)} of {len(todo)} jobs failed: {'; '.join(failures)}")
    return {"jobs": len(jobs), "ran": len(todo), "skipped": len(jobs) - len(todo), "seconds": time.perf_counter() - t0}
