"""Run shell commands N at a time, resumably: a job whose output files all exist is skipped.

The study and the attribution plan are lists of plain `faceturn ...` commands, so a cluster scheduler can run them
as well as this local runner. Each job's output goes to its own log file; a failed job names its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    id: str  # also the log file name (logs/<id>.log under log_dir)
    command: str  # a shell command, run with `cwd` as working directory
    cwd: Path
    outputs: tuple[Path, ...]  # files the job leaves behind (written atomically); all present = done

    def done(self) -> bool:
        return all((self.cwd / o).is_file() for o in self.outputs)


def run_jobs(jobs: Sequence[Job], n_jobs: int, log_dir: Path, *, progress: bool = True, desc: str = "jobs") -> dict:
    """Run the unfinished jobs, `n_jobs` at a time, each with cores / n_jobs torch threads. Raises RuntimeError
    naming every failed job and its log after the others have finished."""
    from tqdm import tqdm

    if n_jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {n_jobs}")
    todo = [j for j in jobs if not j.done()]
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this faceturn, not another
    failures: list[str] = []
    lock = threading.Lock()
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job", disable=not progress)
    t0 = time.perf_counter()

    def execute(job: Job) -> None:
        log_path = Path(log_dir) / f"{job.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            log.write(f"$ {job.command}\n")
            log.flush()
            proc = subprocess.run(job.command, shell=True, cwd=job.cwd, env=env, stdout=log, stderr=log)
        with lock:
            if proc.returncode != 0 or not job.done():
                failures.append(f"{job.id} (exit {proc.returncode}; see {log_path})")
            bar.update(1)

    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        list(pool.map(execute, todo))
    bar.close()
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(todo)} jobs failed: {'; '.join(failures)}")
    return {"jobs": len(jobs), "ran": len(todo), "skipped": len(jobs) - len(todo), "seconds": time.perf_counter() - t0}
