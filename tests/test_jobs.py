"""faceturn.jobs: `faceturn` commands run in warm worker processes, anything else in a shell; outputs decide what is
done; a failure names its log."""

from __future__ import annotations

import pytest

from faceturn.jobs import Job, faceturn_steps, run_jobs


def test_only_plain_faceturn_chains_run_in_process():
    assert faceturn_steps("faceturn train --config 'a b.json' --resume && faceturn predict --out x.npz") == [
        ["train", "--config", "a b.json", "--resume"],
        ["predict", "--out", "x.npz"],
    ]
    for shell in ("echo hi", "faceturn train | tee log", "faceturn a > out", "faceturn a; rm x", "faceturn a && ls",
                  "faceturn a --out $HOME/x", "faceturn a || faceturn b", "faceturn 'unclosed"):  # fmt: skip
        assert faceturn_steps(shell) is None, shell


def test_jobs_run_skip_when_done_and_name_the_failed_log(tmp_path):
    ok = Job("a/ok", "faceturn --version > version.txt", tmp_path, ("version.txt",))  # a shell: redirection
    synth = "faceturn synth --preset tight --conversations 10 --out corpus --set floor.duration_max_s=25"
    inproc = Job("b", f"{synth} --set floor.duration_min_s=20", tmp_path, ("corpus/manifest.jsonl",))
    failing = Job("c", "faceturn inspect nowhere", tmp_path, ("never.txt",))
    info = run_jobs([ok, inproc], 2, tmp_path / "logs", progress=False)
    assert info["ran"] == 2 and (tmp_path / "version.txt").read_text().startswith("faceturn ")
    assert "synth: 10 conversations" in (tmp_path / "logs" / "b.log").read_text()  # the worker's stdout went there
    assert run_jobs([ok], 1, tmp_path / "logs", progress=False)["skipped"] == 1
    with pytest.raises(RuntimeError, match=r"1 of 1 jobs failed: c \(exit [12]; see .*c\.log\)"):
        run_jobs([failing], 1, tmp_path / "logs", progress=False)
    assert "nowhere: corpus folder not found" in (tmp_path / "logs" / "c.log").read_text()
