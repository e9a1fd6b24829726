"""`--executor slurm` against a real one-node SLURM on localhost (slurm_cluster.py: munged, slurmctld, slurmd; 2 CPUs,
no GPUs), never a mock: a small synthetic study gives a results.json byte-identical to the local executor's; a job
cancelled mid-run is resubmitted by the same command while finished runs are kept; a job signalled before its time
limit requeues itself and finishes; impossible requests fail at submission with SLURM's reason. Preparation by
shards: tests/prep/test_prep_slurm.py. Without SLURM or root the cluster tests skip with the reason, except under CI
(FACETURN_REQUIRE_SLURM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_study import write_micro_study

from faceturn.cli import main
from faceturn.errors import JobError
from faceturn.jobs import Job
from faceturn.slurm import SlurmConfig, execute, launch_steps, sbatch_options

pytestmark = pytest.mark.xdist_group("slurm")  # one test cluster: its tests run in one pytest worker

# the micro study of test_study.py with one corpus of 10 short conversations, no media and lighter measurements:
# every SLURM job is a fresh Python process, so fewer, shorter jobs keep each study run below half a minute (step 4,
# whose jobs are like step 3's for the executor, is left out)
FAST = ["--set", "analyze.max_windows=16", "--set", "probe.max_frames=1500", "--set", "n_resamples=50",
        "--set", "probe.resamples=50", "--set", "step4=false", "--no-progress"]  # fmt: skip
# resources from the study config: what the test cluster has (1 of its 2 CPUs per job, so two run at once)
SLURM_SECTION = """
[slurm]
gpus_per_run = 0
cpus_per_run = 1
mem_gb = 1
time_min = 30
poll_s = 0.3
"""


def write_small_study(path: Path) -> Path:
    text = write_micro_study(path).read_text()
    head, found, tail = text.partition('[[corpora]]\nname = "wide"\n')
    assert found, "test_study's micro study changed: drop its second corpus here some other way"
    text = head + tail.split("\n", 1)[1]  # without the second corpus
    for long, short in (("render_conversations = 1", "render_conversations = 0"), ("conversations = 12",
                        "conversations = 10"), ("duration_min_s=40.0", "duration_min_s=20.0"),
                        ("duration_max_s=50.0", "duration_max_s=25.0")):  # fmt: skip
        text = text.replace(long, short)
    path.write_text(text + SLURM_SECTION)
    return path


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    """The study run here: one job per core, so each has one thread, as each SLURM job (cpus_per_run = 1) has."""
    root = tmp_path_factory.mktemp("local")
    config = write_small_study(root / "small.toml")
    out = root / "study"
    jobs = str(os.cpu_count() or 1)
    assert main(["study", "--config", str(config), "--out", str(out), "--jobs", jobs, *FAST]) == 0
    return config, out


def _study(config: Path, out: Path, *extra: str) -> list[str]:
    return ["study", "--config", str(config), "--out", str(out), "--executor", "slurm", *FAST, *extra]


def test_study_on_slurm_survives_a_cancelled_job_and_gives_the_local_results_byte_for_byte(
    slurm_cluster, local_study, tmp_path, capsys
):
    """The study through --executor slurm: a job cancelled mid-run is named and the study stops; the same command
    resubmits it and keeps the finished runs; the results are byte-identical to the local executor's."""
    config, local = local_study
    out = tmp_path / "study"
    driver = subprocess.Popen([sys.executable, "-m", "faceturn", *_study(config, out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    victim = None
    seen: dict[str, float] = {}  # when each job was first seen training
    t0 = time.monotonic()
    while victim is None and time.monotonic() - t0 < 120 and driver.poll() is None:
        record_path = out / "slurm" / "jobs.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        states = {job_id: state for job_id, _, state, _ in slurm_cluster.squeue()}
        for j in record:  # a job training for a second (SLURM tracks its processes by then) while another finished
            if states.get(record[j]["slurm_id"]) == "RUNNING" and _training(out, j):
                seen.setdefault(j, time.monotonic())
                if time.monotonic() - seen[j] > 1.0 and "COMPLETED" in states.values():
                    victim = j
                    _cancel(record[j]["slurm_id"])
                    break
        time.sleep(0.05)
    assert victim is not None, "no job was running while another had finished"
    _, err = driver.communicate(timeout=180)
    assert driver.returncode == 2, f"{victim} was cancelled, yet: {err}\n{(out / 'logs' / f'{victim}.log').read_text()}"
    slurm_id = record[victim]["slurm_id"]
    assert f"{victim} (SLURM job {slurm_id} CANCELLED without its outputs; see {out / 'logs' / victim}.log and" in err
    assert "Run the same command again to resubmit them" in err
    record = json.loads((out / "slurm" / "jobs.json").read_text())
    assert set(record) == {"step1/tight", "step2/tight", "tight/full-s0", "tight/with-head_trans-s0", "step3/tight"}
    training = {
        record[k]["slurm_id"].split("_")[0] for k in ("step2/tight", "tight/full-s0", "tight/with-head_trans-s0")
    }
    assert len(training) == 1 and "_" in record["step2/tight"]["slurm_id"]  # the training runs: one job array
    step3 = (out / "slurm" / f"{record['step3/tight']['slurm_id']}_submission.sh").read_text()
    assert f"#SBATCH --dependency=afterok:{record['tight/full-s0']['slurm_id']}\n" in step3  # waits on its model
    assert "#SBATCH --cpus-per-task=1\n" in step3 and "#SBATCH --partition" not in step3  # the config's resources
    finished = {j for j in record if all((out / o).is_file() for o in _declared(out, j))}
    assert victim not in finished and finished
    kept = {j: (_mtimes(out, j), (out / "logs" / f"{j}.log").read_text()) for j in finished}
    assert main(_study(config, out)) == 0
    again = json.loads((out / "slurm" / "jobs.json").read_text())
    assert again[victim]["slurm_id"] != slurm_id  # resubmitted...
    assert {j: again[j] for j in finished} == {j: record[j] for j in finished}  # ...the finished ones were not
    assert {j: (_mtimes(out, j), (out / "logs" / f"{j}.log").read_text()) for j in finished} == kept
    assert (out / "results.json").read_bytes() == (local / "results.json").read_bytes()
    for job, rec in again.items():
        assert "$ faceturn" in (out / "logs" / f"{job}.log").read_text()  # the steps' output, as locally
        assert "Job completed successfully" in Path(rec["slurm_log"]).read_text()  # SLURM's side of the job
    capsys.readouterr()  # the attribution's runs again, on their own: all finished, so nothing is submitted or asked
    assert main(["attribute", "run", str(out / "attribution"), "--executor", "slurm", "--partition", "nope"]) == 0
    assert "0 runs in 0 s, 2 already finished" in capsys.readouterr().out
    assert json.loads((out / "slurm" / "jobs.json").read_text()) == again


def _cancel(slurm_id: str) -> None:
    """`scancel`, then SIGKILL to the job's processes (found by their SLURM environment). This test cluster tracks
    processes without cgroups, and its slurmstepd did not always follow SIGTERM (which submitit ignores) with SIGKILL:
    a cancelled job could finish anyway (seen here). On a cluster with cgroups the kill is SLURM's own."""
    job, _, task = slurm_id.partition("_")
    wanted = {f"SLURM_ARRAY_JOB_ID={job}", f"SLURM_ARRAY_TASK_ID={task}"} if task else {f"SLURM_JOB_ID={job}"}
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if wanted <= set(environ.read_bytes().decode(errors="replace").split("\0")):
                pids.append(int(environ.parent.name))
        except OSError:
            continue
    subprocess.run(["scancel", slurm_id], check=True)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _training(out: Path, job_id: str) -> bool:
    try:
        steps = [line for line in (out / "logs" / f"{job_id}.log").read_text().splitlines() if line.startswith("$ ")]
    except FileNotFoundError:
        return False
    return (
        steps == [steps[0]]
        and steps[0].startswith("$ faceturn train")
        and not any((out / o).is_file() for o in _declared(out, job_id))
    )


def _declared(out: Path, job_id: str) -> list[str]:
    """The outputs a job of the study declares (the same files the executor checks)."""
    plan = json.loads((out / "attribution" / "plan.json").read_text())
    runs = {r["id"]: [f"attribution/{o}" for o in r["outputs"]] for r in plan["runs"]}
    step, _, corpus = job_id.partition("/")
    fixed = {"step1": f"step1/{corpus}/probe.json", "step2": f"step2/{corpus}/analysis.json",
             "step3": f"step3/{corpus}/results.json"}  # fmt: skip
    return runs.get(job_id) or [fixed[step]]


def _mtimes(out: Path, job_id: str) -> list[int]:
    return [(out / o).stat().st_mtime_ns for o in _declared(out, job_id)]


REQUEUED = """
import pathlib, time
if not pathlib.Path('attempt').exists():  # the first attempt: starts, then is signalled before its time limit
    pathlib.Path('attempt').write_text('1')
    time.sleep(120)
pathlib.Path('out.txt').write_text('finished after the requeue')
"""


def test_a_job_signalled_before_its_time_limit_requeues_itself_and_finishes(slurm_cluster, tmp_path):
    """SLURM sends USR2 `signal_delay_s` before the limit (and on preemption); submitit's handler calls the job's
    checkpoint() and requeues it; the same job runs again (a training step would resume from its checkpoint)."""
    job = Job("train", ((sys.executable, "-c", REQUEUED),), tmp_path, ("out.txt",), gpu=True)

    def signal_once_started() -> None:
        while not (tmp_path / "attempt").exists():
            time.sleep(0.1)
        slurm_id = json.loads((tmp_path / "slurm" / "jobs.json").read_text())["train"]["slurm_id"]
        subprocess.run(["scancel", "--signal=USR2", slurm_id], check=True)
        t0 = time.monotonic()  # SLURM holds a requeued job ~2 min before it may start again: skip that wait here
        while time.monotonic() - t0 < 30:
            if any(j == slurm_id and s == "PENDING" for j, _, s, _ in slurm_cluster.squeue()):
                subprocess.run(["scontrol", "update", f"JobId={slurm_id}", "StartTime=now"], check=True)
                return
            time.sleep(0.1)

    helper = threading.Thread(target=signal_once_started, daemon=True)
    helper.start()
    cfg = SlurmConfig(gpus_per_run=0, cpus_per_run=1, mem_gb=1, time_min=30, poll_s=0.3)
    info = execute([job], tmp_path / "logs", slurm=cfg, progress=False)
    helper.join(timeout=5)
    assert info["submitted"] == 1 and (tmp_path / "out.txt").read_text() == "finished after the requeue"
    slurm_log = Path(json.loads((tmp_path / "slurm" / "jobs.json").read_text())["train"]["slurm_log"]).read_text()
    assert "Calling checkpoint method" in slurm_log and "Requeued job" in slurm_log
    assert "Job completed successfully" in slurm_log
    assert (tmp_path / "logs" / "train.log").read_text().count("$ ") == 2  # the step ran twice, into the same log


def test_a_failed_job_is_named_with_its_logs_and_what_waits_on_it_is_not_run(slurm_cluster, tmp_path):
    fails = Job("a", ((sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"),), tmp_path, ("a.txt",))
    after = Job("b", ((sys.executable, "-c", "open('b.txt', 'w')"),), tmp_path, ("b.txt",), after=("a",))
    cfg = SlurmConfig(gpus_per_run=0, cpus_per_run=1, mem_gb=1, time_min=30, poll_s=0.3)
    with pytest.raises(JobError) as failed:
        execute([fails, after], tmp_path / "logs", slurm=cfg, progress=False)
    record = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    slurm_log = record["a"]["slurm_log"]
    assert (
        f"2 of 2 jobs failed on SLURM: a (SLURM job {record['a']['slurm_id']} FAILED without its outputs; see "
        f"{tmp_path / 'logs' / 'a.log'} and {slurm_log}); b (not run: waits on a, which failed)" in str(failed.value)
    )
    assert "about to fail" in (tmp_path / "logs" / "a.log").read_text()
    assert "JobError: a: exit 3" in Path(slurm_log).read_text()  # SLURM's side: submitit's traceback
    assert not any(j == record["b"]["slurm_id"] and s == "PENDING" for j, _, s, _ in slurm_cluster.squeue())


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--partition", "nope"], "Invalid partition name specified"),
        (["--cpus-per-run", "64"], "Requested node configuration is not available"),
        (["--mem-gb", "100"], "Requested node configuration is not available"),
        (["--gpus-per-run", "1"], "Invalid generic resource (gres) specification"),
    ],
)
def test_impossible_requests_fail_at_submission_with_slurms_reason(slurm_cluster, tmp_path, capsys, flags, reason):
    root = tmp_path / "takes"
    root.mkdir()
    argv = ["prepare", "livelink", "--root", str(root), "--out", str(tmp_path / "corpus"), "--executor", "slurm",
            "--shards", "2", "--cpus-per-run", "1", "--mem-gb", "1", "--gpus-per-run", "0", *flags]  # fmt: skip
    queued = len(slurm_cluster.squeue())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceturn prepare: error: SLURM refuses the ") and len(err.splitlines()) == 1
    assert reason in err and flags[1] in err  # SLURM's words, and the request they are about
    assert len(slurm_cluster.squeue()) == queued  # nothing was submitted


# --------------------------------------------------------------------------------------- without a cluster
def test_missing_submitit_or_sbatch_is_one_line_saying_how_to_install(tmp_path, capsys, monkeypatch):
    (tmp_path / "takes").mkdir()
    argv = ["prepare", "livelink", "--root", str(tmp_path / "takes"), "--out", str(tmp_path / "c"), "--executor",
            "slurm"]  # fmt: skip
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch here
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sbatch" in err and "apt-get install slurm-client" in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'faceturn[slurm]'" in err


def test_slurm_resources_need_the_slurm_executor(tmp_path, capsys):
    (tmp_path / "takes").mkdir()
    base = ["prepare", "livelink", "--root", str(tmp_path / "takes"), "--out", str(tmp_path / "c")]
    assert main([*base, "--partition", "gpu"]) == 2
    assert "--partition is a SLURM resource: add --executor slurm" in capsys.readouterr().err
    assert main([*base, "--shards", "4"]) == 2
    assert "--shards N splits the preparation into SLURM jobs" in capsys.readouterr().err
    assert main([*base, "--executor", "slurm", "--shard", "0/2"]) == 2
    assert "give --shards N instead" in capsys.readouterr().err


def test_requests_are_what_the_config_says():
    cfg = SlurmConfig(partition="gpu", account="lab", gpus_per_run=4, cpus_per_run=16, mem_gb=128, time_min=300,
                      sbatch=("qos=high", "--exclusive"))  # fmt: skip
    train = sbatch_options(cfg, gpu=True)
    assert train == {"time": 300, "cpus-per-task": 16, "mem": "128G", "requeue": True, "partition": "gpu",
                     "account": "lab", "gpus-per-node": 4, "qos": "high", "exclusive": True}  # fmt: skip
    assert "gpus-per-node" not in sbatch_options(cfg, gpu=False)  # a probe or an evaluation gets no GPU
    with pytest.raises(ValueError, match="dependencies are its own"):
        SlurmConfig(sbatch=("dependency=afterok:1",))


def test_several_gpus_run_training_under_torchrun_and_nothing_else():
    steps = (
        ("faceturn", "train", "--config", "c.json", "--out", "r", "--resume"),
        ("faceturn", "predict", "--run", "r"),
    )
    assert launch_steps(steps, 1) == steps
    train, predict = launch_steps(steps, 4)
    assert train == (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m",
                     "faceturn", "train", "--config", "c.json", "--out", "r", "--resume")  # fmt: skip
    assert predict == steps[1]
