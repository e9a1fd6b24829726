"""faceturn.jobs: a job is argv lists run without a shell (console scripts in warm workers, other programs as
subprocesses); outputs decide what is done; a job starts once the jobs it waits on are done; a failure names its
log."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from faceturn.errors import JobError
from faceturn.jobs import Job, layers, run_jobs

HOSTILE = "c;cd ..;touch PWNED;echo $(touch X) `touch Y` 'q\" é"


def test_arguments_reach_the_program_unchanged_and_nothing_is_executed(tmp_path):
    write = "import pathlib, sys; pathlib.Path('got.txt').write_text(sys.argv[1])"
    job = Job("hostile", ((sys.executable, "-c", write, HOSTILE),), tmp_path, ("got.txt",))
    assert shlex.split(job.shell()) == list(job.steps[0])  # plan.txt's rendering quotes every argument
    run_jobs([job], 1, tmp_path / "logs", progress=False)
    assert (tmp_path / "got.txt").read_text() == HOSTILE
    for name in ("PWNED", "X", "Y"):
        assert not (tmp_path / name).exists() and not (tmp_path.parent / name).exists()


def test_jobs_run_skip_when_done_and_name_the_failed_log(tmp_path):
    write = "import faceturn, pathlib; pathlib.Path('version.txt').write_text('faceturn ' + faceturn.__version__)"
    ok = Job("a/ok", ((sys.executable, "-c", write),), tmp_path, ("version.txt",))  # a subprocess
    synth = ("faceturn", "synth", "--preset", "tight", "--conversations", "10", "--out", "corpus")
    sizes = ("--set", "floor.duration_max_s=25", "--set", "floor.duration_min_s=20")
    inproc = Job("b", ((*synth, *sizes),), tmp_path, ("corpus/manifest.jsonl",))  # in the warm worker
    failing = Job("c", (("faceturn", "inspect", "nowhere"), ("faceturn", "--version")), tmp_path, ("never.txt",))
    info = run_jobs([ok, inproc], 2, tmp_path / "logs", progress=False)
    assert info["ran"] == 2 and (tmp_path / "version.txt").read_text().startswith("faceturn ")
    assert "synth: 10 conversations" in (tmp_path / "logs" / "b.log").read_text()  # the worker's stdout went there
    assert run_jobs([ok], 1, tmp_path / "logs", progress=False)["skipped"] == 1
    with pytest.raises(JobError, match=r"1 of 1 jobs failed: c \(exit [12]; see .*c\.log\)"):
        run_jobs([failing], 1, tmp_path / "logs", progress=False)
    log = (tmp_path / "logs" / "c.log").read_text()
    assert "nowhere" in log and "$ faceturn --version" not in log  # the first failing step ends the job


def test_a_job_starts_once_the_jobs_it_waits_on_are_done(tmp_path):
    slow = "import pathlib, time; time.sleep(0.5); pathlib.Path('a.txt').write_text('from a')"
    copy = "import pathlib; pathlib.Path('b.txt').write_text(pathlib.Path('a.txt').read_text() + ', then b')"
    a = Job("a", ((sys.executable, "-c", slow),), tmp_path, ("a.txt",))
    b = Job("b", ((sys.executable, "-c", copy),), tmp_path, ("b.txt",), after=("a",))
    fails = Job("f", ((sys.executable, "-c", "raise SystemExit(3)"),), tmp_path, ("f.txt",))
    after = Job("g", ((sys.executable, "-c", "open('g.txt', 'w')"),), tmp_path, ("g.txt",), after=("f",))
    with pytest.raises(JobError, match=r"2 of 4 jobs failed: f \(exit 3; see .*f\.log\); g \(not run: waits on f\)"):
        run_jobs([b, a, fails, after], 2, tmp_path / "logs", progress=False)  # two slots, yet b waits for a
    assert (tmp_path / "b.txt").read_text() == "from a, then b"
    assert not (tmp_path / "g.txt").exists()


def test_dependencies_that_name_nothing_or_go_round_are_refused():
    job = Job("a", (("true",),), Path("."), ("x",), after=("nowhere",))
    with pytest.raises(JobError, match=r"job a waits on \['nowhere'\], which are not jobs of this run"):
        layers([job])
    a = Job("a", (("true",),), Path("."), ("x",), after=("b",))
    b = Job("b", (("true",),), Path("."), ("y",), after=("a",))
    with pytest.raises(JobError, match="in a cycle"):
        layers([a, b])
    c = Job("c", (("true",),), Path("."), ("z",), after=("b",))
    assert [[j.id for j in layer] for layer in layers([c, replace(b, after=())])] == [["b"], ["c"]]
