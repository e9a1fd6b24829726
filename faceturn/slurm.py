"""Run `faceturn.jobs.Job`s on a SLURM cluster through submitit, resumably; `execute` picks this or the local runner.

The jobs are the ones the local runner runs (argv lists with declared outputs and dependencies); only where they run
changes:

- Unfinished jobs become job arrays, one per dependency layer and kind (a job that trains gets `gpus_per_run` GPUs,
  the others none). An array whose members read earlier jobs' outputs waits on those jobs (`afterok`).
- Before anything is submitted, `sbatch --test-only` is asked about every kind of job with the same options: an
  unknown partition or a request no node can satisfy fails here, with SLURM's reason, not hours later in the queue.
- What was submitted is recorded in `<folder>/slurm/jobs.json` (job id → SLURM job id and log). Re-running the
  command skips jobs whose outputs exist, follows jobs still queued or running instead of submitting them twice,
  and resubmits the ones that ended without their outputs (failed, timed out, cancelled, out of memory).
- Each SLURM job runs its steps as the local runner does (`faceturn.jobs.run_steps`), into the same log,
  `<folder>/logs/<job id>.log`; SLURM's and submitit's own lines (time limit, kill, requeue) go to
  `<folder>/slurm/<SLURM job id>_0_log.out`. A failure names both.
- A preempted job is requeued by SLURM (`--requeue`); a job signalled before its time limit (USR2,
  `SIGNAL_DELAY_S` ahead) requeues itself through submitit's checkpoint protocol, at most `max_timeouts` times. Its
  training steps carry `--resume`, so a requeued run continues from its newest complete checkpoint.
- A training job with more than one GPU runs `faceturn train` under torchrun, one process per GPU of its node.
- The command waits, polling `squeue` (which needs no accounting database), and prints which jobs failed. Interrupting
  the wait leaves the jobs running; re-running the command follows them.

submitit hands each job its callable as a pickle it wrote into `<folder>/slurm/`: a job unpickles only what this
command wrote there a moment before. Do not copy another person's `slurm/` folder into a study.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from faceturn.errors import ClusterError, JobError
from faceturn.io import atomic_write_json
from faceturn.jobs import Job, layers, run_jobs, run_steps

SIGNAL_DELAY_S = 120  # USR2 this long before the time limit: time to requeue (a checkpoint is already on disk)
RECORD = "jobs.json"  # under the state folder: what was submitted
MAX_ARRAY = 1000  # tasks per job array (SLURM's default MaxArraySize is 1001)
# squeue states of a job that has not ended (it may still write its outputs)
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}  # fmt: skip
NEVER = "DependencyNeverSatisfied"  # a pending job whose dependency failed: it can never start
# one thread per CPU of the job, set before Python starts: numpy's BLAS and torch read them when they load (as in the
# local runner's workers; the probe's numbers depend on the BLAS thread count)
THREADS = ["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} MKL_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"]


@dataclass(frozen=True)
class SlurmConfig:
    """The resources of every job (`docs/slurm.md` sizes them per step); a study config's `[slurm]` section or the
    command's flags (`--partition`, `--gpus-per-run`, ...)."""

    partition: str = ""  # "" = the cluster's default partition
    account: str = ""  # "" = your default account
    gpus_per_run: int = 1  # GPUs of a job that trains (torchrun, one process per GPU, when > 1); other jobs get none
    cpus_per_run: int = 8  # CPUs of every job: torch threads and data-loader workers
    mem_gb: int = 64  # memory of every job (host RAM, not GPU memory)
    time_min: int = 240  # time limit of every job; a training run that reaches it requeues itself and resumes
    max_timeouts: int = 3  # requeues after reaching the time limit before the job counts as failed
    sbatch: tuple[str, ...] = ()  # extra sbatch options, "key=value" or a bare flag: "qos=high", "constraint=h100"
    poll_s: float = 30.0  # seconds between two looks at the queue while waiting

    def __post_init__(self) -> None:
        if self.gpus_per_run < 0:
            raise ValueError(f"slurm.gpus_per_run must be >= 0, got {self.gpus_per_run}")
        for key in ("cpus_per_run", "mem_gb", "time_min"):
            if getattr(self, key) < 1:
                raise ValueError(f"slurm.{key} must be >= 1, got {getattr(self, key)}")
        if self.max_timeouts < 0 or self.poll_s <= 0:
            raise ValueError("slurm.max_timeouts must be >= 0 and slurm.poll_s > 0")
        for option in self.sbatch:
            if not option.strip().lstrip("-") or option.strip().startswith(("array", "--array", "dependency")):
                raise ValueError(f"slurm.sbatch: {option!r} is not an option faceturn can pass on (arrays and "
                                 "dependencies are its own)")  # fmt: skip


def sbatch_options(cfg: SlurmConfig, gpu: bool) -> dict[str, Any]:
    """The sbatch options (long names, without dashes) of a job that trains (`gpu`) or of any other job."""
    opts: dict[str, Any] = {"time": cfg.time_min, "cpus-per-task": cfg.cpus_per_run, "mem": f"{cfg.mem_gb}G",
                            "requeue": True}  # fmt: skip
    if cfg.partition:
        opts["partition"] = cfg.partition
    if cfg.account:
        opts["account"] = cfg.account
    if gpu and cfg.gpus_per_run:
        opts["gpus-per-node"] = cfg.gpus_per_run
    for option in cfg.sbatch:
        key, sep, value = option.strip().lstrip("-").partition("=")
        opts[key.strip()] = value.strip() if sep else True
    return opts


def _flags(opts: dict[str, Any]) -> list[str]:
    return [f"--{k}" if v is True else f"--{k}={v}" for k, v in opts.items()]


def _require_slurm() -> Any:
    """submitit, imported; SLURM's client commands on PATH. Otherwise a one-line error that says how to get them."""
    try:
        import submitit
    except ImportError:
        raise ClusterError(
            "--executor slurm needs the submitit package: pip install 'faceturn[slurm]' (or pip install submitit)"
        ) from None
    missing = [c for c in ("sbatch", "squeue", "scancel", "srun") if shutil.which(c) is None]
    if missing:
        raise ClusterError(
            f"--executor slurm needs SLURM's commands on PATH ({', '.join(missing)} not found): run faceturn on the "
            "cluster's login node, or install the client (Debian/Ubuntu: apt-get install slurm-client)"
        )
    return submitit


def _slurm_reason(stderr: str) -> str:
    """SLURM's words, without the program prefixes: 'invalid partition specified: x; Invalid partition name ...'."""
    lines = []
    for line in stderr.strip().splitlines():
        line = line.strip()
        for prefix in ("sbatch: error: ", "sbatch: ", "srun: error: ", "error: "):
            line = line.removeprefix(prefix)
        if line and line not in lines:
            lines.append(line)
    return "; ".join(lines) or "no reason given"


def check_request(opts: dict[str, Any], what: str) -> None:
    """`sbatch --test-only` with these options: a request SLURM can never satisfy is refused now, with its reason."""
    argv = ["sbatch", "--test-only", *_flags(opts), "--wrap", "true"]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError(
            f"SLURM refuses the {what} jobs ({shlex.join(_flags(opts))}): {_slurm_reason(result.stderr)}"
        )


def queue_states(slurm_ids: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """SLURM job id (`123` or array task `123_4`) → (state, reason, job name) for the jobs slurmctld still knows."""
    if not slurm_ids:
        return {}
    bases = sorted({i.split("_")[0] for i in slurm_ids})
    argv = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%r|%j", f"--jobs={','.join(bases)}"]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:  # every one of them has ended and been forgotten
            return {}
        raise ClusterError(f"squeue failed: {_slurm_reason(result.stderr)}")
    states = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) == 4:
            states[parts[0]] = (parts[1], parts[2], parts[3])
    return states


def launch_steps(steps: tuple[tuple[str, ...], ...], gpus: int) -> tuple[tuple[str, ...], ...]:
    """With more than one GPU, each `faceturn train` step runs under torchrun, one process per GPU of this node
    (`faceturn.dist` joins the process group); every other step runs as it is."""
    if gpus <= 1:
        return steps
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}")
    return tuple((*torchrun, "-m", "faceturn", *s[1:]) if s[:2] == ("faceturn", "train") else s for s in steps)


class SlurmRun:
    """What one SLURM job executes: a job's steps, logged as the local runner logs them. It is checkpointable in
    submitit's sense: signalled before its time limit or preempted, it requeues itself unchanged and its steps
    resume (training steps carry --resume)."""

    def __init__(self, job: Job, log_path: Path, gpus: int):
        self.job = job
        self.log_path = Path(log_path)
        self.gpus = gpus

    def __call__(self) -> str:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        steps = launch_steps(self.job.steps, self.gpus)
        code = run_steps(steps, str(self.job.cwd), str(self.log_path), env)
        if code != 0 or not self.job.done():
            raise JobError(f"{self.job.id}: exit {code}; see {self.log_path}")
        return self.job.id

    def checkpoint(self) -> Any:
        """submitit calls this on the signal before the time limit (or preemption): run the same job again."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _load_record(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ClusterError(
            f"{path}: not a record of submitted jobs ({e}); remove it to submit every unfinished job again"
        ) from None
    return data if isinstance(data, dict) else {}


def run_on_slurm(
    jobs: Sequence[Job],
    cfg: SlurmConfig,
    log_dir: Path,
    state_dir: Path,
    *,
    name: str = "faceturn",
    progress: bool = True,
    desc: str = "jobs",
) -> dict:
    """Submit the unfinished jobs (see the module docstring), wait for them, and raise JobError naming every job
    that ended without its outputs, with its logs."""
    submitit = _require_slurm()
    job_layers = layers(jobs)
    layer_of = {j.id: k for k, layer in enumerate(job_layers) for j in layer}
    todo = [j for j in jobs if not j.done()]
    t0 = time.perf_counter()
    state_dir, log_dir = Path(state_dir), Path(log_dir)
    record_path = state_dir / RECORD
    record = _load_record(record_path)
    known = queue_states([record[j.id]["slurm_id"] for j in todo if j.id in record])

    def ours(job: Job) -> tuple[str, str, str] | None:  # its SLURM job, if the queue still knows it (by id and name)
        rec = record.get(job.id, {})
        state = known.get(rec.get("slurm_id", ""))
        return state if state is not None and state[2] == rec.get("name") else None

    def following(job: Job) -> bool:  # submitted earlier and still queued or running (and able to start)
        state = ours(job)
        return state is not None and state[0] in ACTIVE and state[1] != NEVER

    never = [j for j in todo if (state := ours(j)) is not None and state[0] in ACTIVE and not following(j)]
    _cancel([record[j.id]["slurm_id"] for j in never])  # pending forever on a failed dependency: resubmitted below
    submit = [j for j in todo if not following(j)]
    if submit:
        requests = {json.dumps(sbatch_options(cfg, j.gpu)): sbatch_options(cfg, j.gpu) for j in submit}
        for opts in requests.values():
            check_request(opts, "GPU" if "gpus-per-node" in opts else "CPU")
        state_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=state_dir, max_num_timeout=cfg.max_timeouts)
        unfinished = {j.id for j in todo}
        submitted = 0
        for k in range(len(job_layers)):
            for gpu in (True, False):
                members = [j for j in submit if layer_of[j.id] == k and j.gpu == gpu]
                for group in (members[i : i + MAX_ARRAY] for i in range(0, len(members), MAX_ARRAY)):
                    waits = sorted({record[d]["slurm_id"] for j in group for d in j.after if d in unfinished})
                    job_name = f"{name}-{k}{'-gpu' if gpu else ''}"
                    try:
                        handles = _submit_array(executor, group, cfg, gpu, waits, job_name, log_dir)
                    except submitit.core.utils.FailedJobError as e:
                        kept = f" ({submitted} jobs submitted before keep running)" if submitted else ""
                        raise ClusterError(
                            f"sbatch refused {len(group)} jobs of {desc}: {_slurm_reason(str(e))}{kept}"
                        ) from None
                    for job, handle in zip(group, handles, strict=True):
                        record[job.id] = {"slurm_id": str(handle.job_id), "name": job_name,
                                          "slurm_log": str(handle.paths.stdout)}  # fmt: skip
                    submitted += len(group)
                    atomic_write_json(record_path, record)
    _wait(todo, record, cfg, log_dir, progress=progress, desc=desc, total=len(jobs))
    return {
        "jobs": len(jobs),
        "ran": len(todo),
        "skipped": len(jobs) - len(todo),
        "submitted": len(submit),
        "seconds": time.perf_counter() - t0,
    }


def _submit_array(
    executor: Any, group: list[Job], cfg: SlurmConfig, gpu: bool, waits: list[str], job_name: str, log_dir: Path
) -> list[Any]:
    """One sbatch call: the group as a job array (one job alone), waiting on `waits` (afterok)."""
    opts = sbatch_options(cfg, gpu)
    if waits:
        opts["dependency"] = "afterok:" + ":".join(waits)
    executor.update_parameters(
        job_name=job_name, time=cfg.time_min, signal_delay_s=SIGNAL_DELAY_S, stderr_to_stdout=True,
        array_parallelism=len(group), additional_parameters=opts, setup=THREADS,
    )  # fmt: skip
    gpus = cfg.gpus_per_run if gpu else 0
    with executor.batch():
        return [executor.submit(SlurmRun(j, log_dir / f"{j.id}.log", gpus)) for j in group]


def _cancel(slurm_ids: Sequence[str]) -> None:
    if slurm_ids:
        subprocess.run(["scancel", *slurm_ids], capture_output=True, text=True)


def _wait(
    todo: Sequence[Job], record: dict, cfg: SlurmConfig, log_dir: Path, *, progress: bool, desc: str, total: int
) -> None:
    """Poll the queue until none of `todo` is queued or running; raise JobError naming those without outputs."""
    ids = {j.id: record[j.id]["slurm_id"] for j in todo}
    last: dict[str, tuple[str, str, str]] = {}
    never: set[str] = set()  # jobs cancelled because a job they wait on failed
    bar = tqdm(total=total, initial=total - len(todo), desc=desc, unit="job", disable=not progress)
    errors = 0
    try:
        while True:
            try:
                states = queue_states(list(ids.values()))
                errors = 0
            except ClusterError:
                errors += 1  # slurmctld busy or restarting: look again, give up after a few minutes
                if errors > 10:
                    raise
                time.sleep(cfg.poll_s)
                continue
            last.update({j: states[s] for j, s in ids.items() if s in states})
            stuck = {j for j, s in ids.items() if s in states and states[s][0] == "PENDING" and states[s][1] == NEVER}
            _cancel([ids[j] for j in stuck - never])
            never |= stuck
            active = [j for j, s in ids.items() if s in states and states[s][0] in ACTIVE and states[s][1] != NEVER]
            bar.n = total - len(todo) + sum(j.done() for j in todo)
            running = sum(states[ids[j]][0] == "RUNNING" for j in active)
            why = sorted({states[ids[j]][1] for j in active if states[ids[j]][0] == "PENDING"} - {"None", ""})
            bar.set_postfix_str(
                f"{running} running, {len(active) - running} queued" + (f" ({', '.join(why)})" if why else "")
            )
            if not active:
                break
            time.sleep(cfg.poll_s)
    except KeyboardInterrupt:
        print(f"\n{desc}: the SLURM jobs keep running; run the same command again to follow them", file=sys.stderr)
        raise
    finally:
        bar.close()
    failures = []
    for job in todo:
        if job.done():
            continue
        slurm_id = ids[job.id]
        state = last.get(job.id, ("ENDED",))[0]
        if job.id in never:
            failures.append(f"{job.id} (not run: waits on {', '.join(job.after)}, which failed)")
            continue
        logs = f"{log_dir / (job.id + '.log')} and {record[job.id]['slurm_log']}"
        failures.append(f"{job.id} (SLURM job {slurm_id} {state} without its outputs; see {logs})")
    if failures:
        raise JobError(
            f"{len(failures)} of {len(todo)} jobs failed on SLURM: {'; '.join(failures)}. Run the same command "
            "again to resubmit them (finished jobs are kept)"
        )


def execute(
    jobs: Sequence[Job],
    log_dir: Path,
    *,
    n_jobs: int = 1,
    slurm: SlurmConfig | None = None,
    name: str = "faceturn",
    progress: bool = True,
    desc: str = "jobs",
) -> dict:
    """Run the jobs here, `n_jobs` at a time (`slurm` None), or on SLURM with `slurm`'s resources; SLURM's state
    goes beside the logs (`<log_dir>/../slurm`)."""
    if slurm is None:
        return run_jobs(jobs, n_jobs, log_dir, progress=progress, desc=desc)
    return run_on_slurm(jobs, slurm, log_dir, Path(log_dir).parent / "slurm", name=name, progress=progress, desc=desc)
