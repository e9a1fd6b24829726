"""Run jobs N at a time, resumably: a job whose declared outputs all exist is skipped.

A job is data: a list of argv lists (its steps, run in order until one fails), the files it leaves behind, the jobs
whose outputs it reads (it starts once they are done) and whether it trains a model (on a cluster it gets the GPUs
of a run; `faceturn.slurm` runs the same jobs as SLURM job arrays). No
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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
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
    after: tuple[str, ...] = ()  # ids of jobs (of the same run) whose outputs this one reads
    gpu: bool = False  # it trains a model (or runs Mimi on a GPU): on a cluster it gets the GPUs of a run

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


def run_steps(steps: tuple[tuple[str, ...], ...], cwd: str, log_path: str, env: dict[str, str]) -> int:
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


def layers(jobs: Sequence[Job]) -> list[list[Job]]:
    """The jobs in dependency layers: layer 0 waits on nothing, layer k on jobs of layers < k. Refuses repeated ids,
    an `after` that names no job of the list, and a cycle."""
    ids = [j.id for j in jobs]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise JobError(f"job ids must be distinct, got {repeated} more than once")
    for job in jobs:
        missing = [d for d in job.after if d not in ids]
        if missing:
            raise JobError(f"job {job.id} waits on {missing}, which are not jobs of this run")
    out: list[list[Job]] = []
    placed: set[str] = set()
    pending = list(jobs)
    while pending:
        ready = [j for j in pending if placed.issuperset(j.after)]
        if not ready:
            raise JobError(f"jobs wait on each other in a cycle: {[j.id for j in pending]}")
        out.append(ready)
        placed.update(j.id for j in ready)
        pending = [j for j in pending if j.id not in placed]
    return out


def run_jobs(jobs: Sequence[Job], n_jobs: int, log_dir: Path, *, progress: bool = True, desc: str = "jobs") -> dict:
    """Run the unfinished jobs, `n_jobs` at a time (each slot with cores / n_jobs torch threads), a job only once the
    jobs it waits on are done. Raises JobError naming every failed job and its log after the others have finished
    (a job waiting on a failed one is named as not run)."""
    if n_jobs < 1:
        raise JobError(f"jobs must be >= 1, got {n_jobs}")
    layers(jobs)  # refuse a dependency that names nothing, or a cycle, before any work
    todo = [j for j in jobs if not j.done()]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this faceturn, not another
    failures: list[str] = []
    failed: set[str] = set()
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job", disable=not progress)
    t0 = time.perf_counter()
    if todo:
        context = get_context("spawn")  # a clean interpreter per slot (no forked threads or torch state)
        with ProcessPoolExecutor(n_jobs, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
            waiting = list(todo)  # in the given order (longest first), each started once its inputs are done
            running: dict[Future, tuple[Job, Path]] = {}
            unfinished = {j.id for j in todo}
            while waiting or running:
                for job in [j for j in waiting if not unfinished.intersection(j.after)]:
                    waiting.remove(job)
                    log_path = Path(log_dir) / f"{job.id}.log"
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        running[pool.submit(run_steps, job.steps, str(job.cwd), str(log_path), env)] = (job, log_path)
                    except BrokenProcessPool as e:  # a worker died earlier (e.g. killed for memory)
                        failures.append(f"{job.id} (not run: {e})")
                        failed.add(job.id)
                if not running:  # the rest wait on failed jobs
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job, log_path = running.pop(future)
                    try:
                        code = future.result()
                    except Exception as e:  # the worker died (e.g. killed for memory): the pool is broken
                        code = f"{type(e).__name__}: {e}"
                    if code != 0 or not job.done():
                        failures.append(f"{job.id} (exit {code}; see {log_path})")
                        failed.add(job.id)
                    else:
                        unfinished.discard(job.id)
                    bar.update(1)
            failures += [f"{j.id} (not run: waits on {', '.join(sorted(failed & set(j.after)) or j.after)})"
                         for j in waiting]  # fmt: skip
    bar.close()
    if failures:
        raise JobError(f"{len(failures)} of {len(todo)} jobs failed: {'; '.join(failures)}")
    return {"jobs": len(jobs), "ran": len(todo), "skipped": len(jobs) - len(todo), "seconds": time.perf_counter() - t0}
