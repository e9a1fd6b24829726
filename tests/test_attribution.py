"""`faceturn attribute plan / run / collect` at micro scale: the plan is argv lists with identical budgets,
killing `run` half-way and re-running finishes without retraining finished runs, collect pairs identical frames and
keeps post-hoc zeroing apart and labelled invalid."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceturn.cli import main
from faceturn.eval.attribution import is_done, load_plan

STUDY = """
name = "micro-attribution"
split = "test"
seed = 0
n_resamples = 200

[[corpora]]
name = "tight"
path = "{corpus}"

[aux]
{aux}

[attribution]
groups = ["eye_gaze", "head_trans"]
seeds = [0]
audio_only = true
posthoc_norms = ["layernorm", "standardize"]
retrain_check_groups = ["head_trans"]
jobs = 2
"""
AUX = """inherit = "aux"
eval_every_steps = 0
progress = false
checkpoint_every_steps = 2
data = { window_s = 5, batch_size = 2 }
optim = { max_steps = 4, warmup_steps = 1 }
loss = { audio_weight = 0 }
model = { face_norm = "standardize" }"""
# head_trans is zeroed by default (the model config), so it is retrained *added back* rather than left out
VARIANTS = {"full", "no-eye_gaze", "with-head_trans", "audio-only", "full-layernorm", "with-head_trans-layernorm"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from faceturn.synth import generate_corpus, load_preset

    out = tmp_path_factory.mktemp("att") / "tight"
    cfg = load_preset("tight", ["conversations_per_group=2", "floor.duration_min_s=40.0", "floor.duration_max_s=50.0"])
    generate_corpus(cfg, out, n_conversations=12, seed=3, progress=False)
    return out


def write_study(path: Path, corpus: Path, aux: str = AUX) -> Path:
    path.write_text(STUDY.format(corpus=corpus, aux=aux))
    return path


@pytest.fixture(scope="module")
def planned(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    config = write_study(root / "study.toml", corpus)
    out = root / "study"
    assert main(["attribute", "plan", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    return config, out


def test_plan_is_argv_lists_with_identical_budgets(planned):
    config, out = planned
    _, runs = load_plan(out)
    assert {r.variant for r in runs} == VARIANTS and all(r.id == f"tight/{r.variant}-s0" for r in runs)
    lines = [x for x in (out / "plan.txt").read_text().splitlines() if not x.startswith("#")]
    assert lines == [" && ".join(shlex.join(step) for step in r.steps) for r in runs]
    assert all(line.startswith("faceturn train --config configs/tight/") and "--resume && faceturn predict" in line
               for line in lines)  # fmt: skip
    configs = {r.variant: json.loads((out / f"configs/{r.id}.json").read_text()) for r in runs}
    zero = {v: sorted(c["model"]["zero_groups"]) for v, c in configs.items()}
    assert zero["full"] == zero["full-layernorm"] == ["head_trans"] and zero["no-eye_gaze"] == [
        "eye_gaze",
        "head_trans",
    ]
    assert zero["with-head_trans"] == zero["with-head_trans-layernorm"] == []
    assert len(zero["audio-only"]) == 6
    norm = {v: c["model"]["face_norm"] for v, c in configs.items()}
    assert norm["full-layernorm"] == "layernorm" and norm["no-eye_gaze"] == "standardize"
    strip = [{k: v for k, v in c.items() if k != "model"} for c in configs.values()]
    shapes = [{k: v for k, v in c["model"].items() if k not in ("zero_groups", "face_norm")} for c in configs.values()]
    assert all(m == shapes[0] for m in shapes)
    assert all(s == strip[0] for s in strip)  # same data, budget, seeds; only the face settings differ
    posthoc = {r.variant: r.posthoc_groups for r in runs if r.posthoc_groups}  # only on models that saw the group
    assert posthoc == {"full": ("eye_gaze",), "full-layernorm": ("eye_gaze",), "with-head_trans": ("head_trans",),
                       "with-head_trans-layernorm": ("head_trans",)}  # fmt: skip
    before = (out / "plan.json").read_text()
    assert main(["attribute", "plan", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert (out / "plan.json").read_text() == before  # re-planning is idempotent


def test_without_default_zeroing_every_group_is_left_out(corpus, tmp_path):
    """A model config that zeroes nothing (the paper's first setup): head_trans is retrained left out like any group,
    and the layernorm retrain check trains it left out as well."""
    model = 'model = { face_norm = "standardize", zero_groups = [] }'
    config = write_study(tmp_path / "study.toml", corpus, AUX.replace('model = { face_norm = "standardize" }', model))
    out = tmp_path / "study"
    assert main(["attribute", "plan", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    data, runs = load_plan(out)
    assert data["default_zero_groups"] == []
    assert {r.variant: list(r.zero_groups) for r in runs if r.variant != "audio-only"} == {
        "full": [], "no-eye_gaze": ["eye_gaze"], "no-head_trans": ["head_trans"], "full-layernorm": [],
        "no-head_trans-layernorm": ["head_trans"]}  # fmt: skip
    assert [r.posthoc_groups for r in runs if r.variant.startswith("full")] == [("eye_gaze", "head_trans")] * 2


def test_a_plan_for_another_study_is_refused(planned, corpus, tmp_path, capsys):
    _, out = planned
    other = write_study(tmp_path / "other.toml", corpus, AUX.replace("max_steps = 4", "max_steps = 5"))
    assert main(["attribute", "plan", "--config", str(other), "--out", str(out), "--no-progress"]) == 2
    assert "plan for a different study configuration" in capsys.readouterr().err


def _dollar_lines(log: Path) -> int:
    """How many times the job started: its first step (training) is logged once per start."""
    return sum(line.startswith("$ faceturn train ") for line in log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture(scope="module")
def finished(planned):
    """Kill `attribute run` once the first run has finished, then re-run it to the end."""
    _, out = planned
    _, runs = load_plan(out)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "faceturn", "attribute", "run", str(out), "--jobs", "1", "--no-progress"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, **quiet)
    try:
        deadline = time.monotonic() + 300
        while not any(is_done(out, r) for r in runs):
            assert proc.poll() is None and time.monotonic() < deadline, "attribute run ended or stalled"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_first = [r for r in runs if is_done(out, r)]
    assert 0 < len(done_first) < len(runs)
    before = {r.id: _dollar_lines(out / "logs" / f"{r.id}.log") for r in runs}
    assert main(["attribute", "run", str(out), "--no-progress"]) == 0
    return out, runs, done_first, before


def test_killed_run_resumes_without_retraining_finished_runs(finished):
    out, runs, done_first, before = finished
    assert all(is_done(out, r) for r in runs)
    for r in runs:
        log = out / "logs" / f"{r.id}.log"
        if r in done_first:
            assert _dollar_lines(log) == before[r.id] == 1, r.id  # not started again
        else:
            assert _dollar_lines(log) == before[r.id] + 1, r.id
    assert main(["attribute", "run", str(out), "--no-progress"]) == 0  # nothing left: nothing runs
    assert all(_dollar_lines(out / "logs" / f"{r.id}.log") == before[r.id] + (r not in done_first) for r in runs)


def test_collect_pairs_frames_and_labels_post_hoc_invalid(finished, capsys):
    out, *_ = finished
    assert main(["attribute", "collect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| group | tight | reading |" in printed and "INVALID" not in printed
    res = json.loads((out / "results.json").read_text())
    block = res["corpora"]["tight"]
    assert set(block["groups"]) == {"eye_gaze", "head_trans"}
    gaze, trans = block["groups"]["eye_gaze"], block["groups"]["head_trans"]
    for b in (gaze, trans["added_back"]):
        assert b["valid"] and b["method"] == "retrain" and b["n_resamples"] == 200
        assert b["delta_ci"][0] <= b["delta_ci"][1] and np.isfinite(b["delta"])
    assert not gaze["zeroed_by_default"] and gaze["delta"] == gaze["reference_auc"] - gaze["other_auc"]
    # zeroed by default: leaving it out is the full model itself; the measured number is the model with it put back
    assert trans["zeroed_by_default"] and trans["delta"] == 0.0 and trans["delta_ci"] == [0.0, 0.0]
    assert trans["added_back"]["other_auc"] == gaze["reference_auc"] == block["full_auc"]["auc"]
    assert trans["added_back"]["reference_auc"] != block["full_auc"]["auc"]  # a different, retrained model
    assert "| head_trans | 0 (zeroed by default); added back: " in printed
    assert res["summary"]["reading"]["head_trans"]["reading"].startswith("zeroed by default; adding it back")
    assert set(block["posthoc"]) == {"layernorm", "standardize"}
    for norm, p in block["posthoc"].items():
        assert all(not row["valid"] and row["method"] == "posthoc" for row in p["groups"].values()), norm
    assert set(block["posthoc"]["layernorm"]["retrained"]) == {"head_trans"}
    assert block["posthoc"]["layernorm"]["reference"] == {"eye_gaze": "full-layernorm",
                                                          "head_trans": "with-head_trans-layernorm"}  # fmt: skip
    assert set(res["summary"]["reading"]) == {"eye_gaze", "head_trans"}
    md = (out / "results.md").read_text()
    assert "### INVALID — post-hoc zeroing, layernorm encoder" in md and "(invalid)" in md
    assert main(["attribute", "collect", str(out), "--method", "posthoc"]) == 0
    assert capsys.readouterr().out.startswith("### INVALID")


def test_collect_refuses_unfinished_or_mismatched_runs(finished, tmp_path, capsys):
    import shutil

    out, runs, *_ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / next(r.outputs[0] for r in runs if r.variant == "no-eye_gaze")
    val = copy / next(r.outputs[-1] for r in runs if r.variant == "full")
    shutil.copy(val, target)  # validation-split predictions where test ones belong
    assert main(["attribute", "collect", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "no-eye_gaze: predictions" in err and ("not over the same frames" in err or "different conversations" in err)
    target.unlink()
    assert main(["attribute", "collect", str(copy)]) == 2
    assert "1 runs are not finished" in capsys.readouterr().err
