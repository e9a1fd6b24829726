"""faceturn.jobs: a job is argv lists run without a shell (console scripts in warm workers, other programs as
subprocesses); outputs decide what is done; a failure names its log."""

from __future__ import annotations

import shlex
import sys

import pytest

from faceturn.errors import JobError
from faceturn.jobs import Job, run_jobs

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
