"""Run shell commands N at a time, resumably: a job whose output files all exist is skipped.

The study and the attribution plan are lists of plain `faceturn ...` commands, so a cluster scheduler can run them
as well as this local runner. Locally, each of the N slots is a warm worker process that runs `faceturn` commands
in-process (`faceturn.cli.main`), so the 1–2 s of importing torch is paid once per slot, not once per command; any
other command runs in a shell. Each job's output goes to its own log file; a failed job names its log.
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
from multiprocessing import get_context
from pathlib import Path


@dataclass(frozen=True)
class Job:
    id: str  # also the log file name (logs/<id>.log under log_dir)
    command: str  # a shell command, run with `cwd` as working directory
    cwd: Path
    outputs: tuple[Path, ...]  # files the job leaves behind (written atomically); all present = done

    def done(self) -> bool:
        return all((self.cwd / o).is_file() for o in self.outputs)


def faceturn_steps(command: str) -> list[list[str]] | None:
    """The argv lists of a command made only of `faceturn ...` steps joined by `&&`; None for anything else (pipes,
    redirections, other programs, variables: those run in a shell)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    steps: list[list[str]] = [[]]
    for t in tokens:
        if t == "&&":
            steps.append([])
        elif set(t) <= set(lexer.punctuation_chars) or "$" in t or "`" in t:
            return None
        else:
            steps[-1].append(t)
    if any(not s or s[0] != "faceturn" for s in steps):
        return None
    return [s[1:] for s in steps]


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _run_in_process(argv: list[str]) -> int:
    from faceturn.cli import main

    try:
        return int(main(argv) or 0)
    except SystemExit as e:  # argparse
        return e.code if isinstance(e.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def _execute(command: str, cwd: str, log_path: str, env: dict[str, str]) -> int:
    """Run one job in this worker, stdout and stderr (Python's and the C libraries') appended to its log."""
    steps = faceturn_steps(command)
    with open(log_path, "a") as log:
        log.write(f"$ {command}\n")
        log.flush()
        if steps is None:
            return subprocess.run(command, shell=True, cwd=cwd, env=env, stdout=log, stderr=log).returncode
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        here = os.getcwd()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            os.chdir(cwd)
            for argv in steps:
                code = _run_in_process(argv)
                sys.stdout.flush()
                sys.stderr.flush()
                if code != 0:
                    return code
            return 0
        finally:
            os.chdir(here)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_jobs(jobs: Sequence[Job], n_jobs: int, log_dir: Path, *, progress: bool = True, desc: str = "jobs") -> dict:
    """Run the unfinished jobs, `n_jobs` at a time, each slot with cores / n_jobs torch threads. Raises RuntimeError
    naming every failed job and its log after the others have finished."""
    from tqdm import tqdm

    if n_jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {n_jobs}")
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
                futures[pool.submit(_execute, job.command, str(job.cwd), str(log_path), env)] = (job, log_path)
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
        raise RuntimeError(f"{len(failures)} of {len(todo)} jobs failed: {'; '.join(failures)}")
    return {"jobs": len(jobs), "ran": len(todo), "skipped": len(jobs) - len(todo), "seconds": time.perf_counter() - t0}
