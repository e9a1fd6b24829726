"""`faceturn study` end to end at micro scale (two small synthetic corpora, a few training steps): every step runs
through the CLI, results.json traces every number to a file, the report opens in a real Chromium with every figure,
a re-run does nothing and changes nothing, and the recovery checks judge planted truth correctly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from browser import open_file, png_content

from faceturn.cli import main
from faceturn.results import read_group
from faceturn.study import recovery_checks
from faceturn.synth.truth import planted_expectations

HOSTILE = "st;dy $(touch X) `touch Y` 'q\" é"  # a study folder name a shell would execute

MICRO_STUDY = """
name = "micro"
split = "test"
seed = 0
n_resamples = 200
render_conversations = 1

[[corpora]]
name = "tight"
synth = {{ preset = "tight", conversations = 12, seed = 0, audio = true, overrides = {synth} }}

[[corpora]]
name = "wide"
synth = {{ preset = "wide", conversations = 12, seed = 0, audio = true, overrides = {synth} }}

[probe]
resamples = 100
max_frames = 4000

[vanilla]
{vanilla}

[aux]
{aux}

[attribution]
groups = ["head_trans"]
seeds = [0]
audio_only = false
posthoc_norms = ["standardize"]
retrain_check_groups = []
jobs = 2

[talk]
seeds = [0]
greedy = false
max_seconds = 10.0

[analyze]
max_windows = 32
"""
SYNTH = ["conversations_per_group=2", "floor.duration_min_s=40.0", "floor.duration_max_s=50.0"]
TRAIN = """eval_every_steps = 0
progress = false
checkpoint_every_steps = 2
data = { window_s = 5, batch_size = 2 }"""


def write_micro_study(path: Path) -> Path:
    aux = f'inherit = "aux"\n{TRAIN}\noptim = {{ max_steps = 4, warmup_steps = 1 }}\nloss = {{ audio_weight = 0 }}\n'
    aux += 'model = { face_norm = "standardize" }'
    vanilla = f'inherit = "vanilla"\n{TRAIN}\noptim = {{ max_steps = 2, warmup_steps = 1 }}'
    path.write_text(MICRO_STUDY.format(synth=json.dumps(SYNTH), vanilla=vanilla, aux=aux))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    config = write_micro_study(root / "micro.toml")
    # every path of the study holds shell syntax, quotes and unicode: the jobs are argv lists, nothing is executed
    out = root / HOSTILE
    before = sorted(p.name for p in root.iterdir())
    assert main(["study", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in root.iterdir()) == sorted([*before, HOSTILE])  # nothing else appeared
    assert not any((root / x).exists() or (out / x).exists() for x in ("PWNED", "X", "Y"))
    return config, out


def _numbers(obj, path=""):
    """Every reported number (a dict with value and ci) with its key path."""
    if isinstance(obj, dict):
        if "value" in obj and "source" in obj:
            yield path, obj
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def test_results_trace_every_number_to_a_file(study):
    _, out = study
    res = json.loads((out / "results.json").read_text())
    assert set(res["corpora"]) == {"tight", "wide"} and res["seed"] == 0 and res["n_resamples"] == 200
    numbers = list(_numbers(res))
    assert len(numbers) > 40
    for path, block in numbers:
        assert (out / block["source"]).is_file(), path
        if block["value"] is not None and block.get("ci") is not None:
            lo, hi = block["ci"]
            assert math.isfinite(block["value"]) and lo <= hi, path
    for c in ("tight", "wide"):
        b = res["corpora"][c]
        assert b["synthetic"] and b["truth"]["preset"] == c
        assert set(b["step1"]["controls"]) == {"shuffled", "circular_shift"}
        assert {"delta_nll_semantic", "kl_semantic", "hidden_probe_delta", "readout_gain_audio"} <= set(b["step2"])
        s3 = b["step3"]["all"]
        assert s3["n_conversations"] == b["splits"]["test"] and s3["n_frames"] > 0
        pred = json.loads((out / s3["face"]["source"]).read_text())["frames"]["all"]
        assert s3["delta"]["value"] == pred["delta"]  # the same number as the step's own file
        assert (out / b["step3"]["prediction_file"]).is_file()
        assert set(b["step2"]["implicit_yield"]) == {"vanilla", "aux-lm"}  # step 2's implicit signal of both talkers
        s4 = b["step4"]
        assert set(s4["models"]) == {"vanilla", "aux-lm"} and set(s4["models"]["aux-lm"]["policies"]) == {
            "moshi", "moshi+gate"} and s4["models"]["vanilla"]["gate"] is None  # fmt: skip
        assert s4["reader"]["accuracy"]["value"] >= 0.95 and (out / s4["reader"]["accuracy"]["source"]).is_file()
        assert "pause_takeover_rate" in s4["models"]["vanilla"]["policies"]["moshi"]["metrics"]
        att = res["attribution"]["corpora"][c]
        assert set(att["groups"]) == {"head_trans"}
        assert att["posthoc"]["standardize"]["valid"] is False
    assert res["attribution"]["reading"]["head_trans"]["reading"].startswith("zeroed by default; adding it back")
    assert {c["corpus"] for c in res["recovery"]} == {"tight", "wide", "all"}


def test_report_says_what_is_synthetic_and_labels_post_hoc_invalid(study):
    _, out = study
    md = (out / "report.md").read_text()
    assert "are synthetic" in md and "What was planted" in md and "Did the study recover the planted truth?" in md
    assert "INVALID: post-hoc zeroing" in md and "post hoc (INVALID)" in md
    res = json.loads((out / "results.json").read_text())
    d = res["corpora"]["tight"]["step3"]["all"]["delta"]
    assert f"{d['value']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" in md  # the headline shows results.json
    for stem in ("probe", "auc", "roc", "attribution", "takeover", "timeline-tight", "timeline-wide"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 1000 and (out / "figures" / f"{stem}.svg").is_file()
    media = sorted(p.name for p in (out / "media").iterdir())
    assert len(media) == 4 and {Path(m).suffix for m in media} == {".html", ".mp4"}


def test_report_opens_in_chromium_with_every_figure(study, chromium, tmp_path):
    _, out = study
    html = (out / "report.html").read_text()
    assert 'src="data:image/png;base64,' in html and "<img" in html
    page = open_file(chromium, out / "report.html")
    n_figures = html.count("<figure")
    assert n_figures == 7
    page.wait_for_function(f"[...document.images].filter(i => i.complete && i.naturalWidth > 0).length == {n_figures}")
    sizes = page.evaluate("[...document.images].map(i => [i.naturalWidth, i.getBoundingClientRect().width])")
    assert all(w > 300 and shown > 300 for w, shown in sizes), sizes
    links = page.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert links and all((out / h).is_file() for h in links)
    shot = tmp_path / "report.png"
    page.locator("figure").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shot))  # the first screen with a figure: a whole-page shot costs ~15 s of rasterising
    colours, ink = png_content(shot)
    assert colours > 100 and ink > 0.05, (colours, ink)  # a rendered figure; a blank screen has a handful


def test_rerun_skips_everything_and_reproduces_results(study):
    config, out = study
    before = (out / "results.json").read_text()
    logs = {p: p.read_text() for p in (out / "logs").rglob("*.log")}
    assert main(["study", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    assert (out / "results.json").read_text() == before
    assert {p: p.read_text() for p in (out / "logs").rglob("*.log")} == logs  # no job ran again


def test_a_different_study_in_the_same_folder_is_refused(study, tmp_path, capsys):
    config, out = study
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("n_resamples = 200", "n_resamples = 300"))
    assert main(["study", "--config", str(other), "--out", str(out), "--no-progress"]) == 2
    assert "holds a study with a different configuration" in capsys.readouterr().err


def test_bad_study_configs_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    assert main(["study", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "at least one [[corpora]]" in capsys.readouterr().err
    bad.write_text('[[corpora]]\nname = "a"\npath = "nowhere"\n')
    assert main(["study", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not a corpus folder" in capsys.readouterr().err
    bad.write_text('[[corpora]]\nname = "a"\npath = "nowhere"\n[vanilla]\ninherit = "vanilla"\n'
                   "loss = { audio_weight = 0 }\n")  # fmt: skip
    assert main(["study", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "vanilla.loss.audio_weight is 0, but step 4 lets the vanilla model talk" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- recovery, by hand-made data
def _truth(gaze_gain: float) -> dict:
    def group(strength: float, gain: float = 1.0, noise: float = 0.02) -> dict:
        return {"cue_strength": strength, "observation_gain": gain, "observation_noise_sd": noise,
                "observation_drift_sd": 0.0, "cues": []}  # fmt: skip

    return {"groups": {"eye_gaze": group(0.27, gaze_gain), "head_rot": group(0.15), "jaw_mouth": group(0.01, 1.0, 0.1),
                       "head_trans": group(0.0, 1.0, 0.0)}}  # fmt: skip


def _block(value: float, lo: float, hi: float) -> dict:
    return {"value": value, "ci": [lo, hi], "source": "x"}


def _results(groups: dict[str, dict[str, tuple]], reading: dict[str, tuple[str, ...]]) -> dict:
    """`reading`: per group, the corpora where its (added-back) CI is above zero."""
    corpora = {}
    for c, gaze_gain in (("tight", 1.0), ("wide", 0.1)):
        corpora[c] = {
            "truth": _truth(gaze_gain),
            "step1": {"probe": _block(0.7, 0.68, 0.72), "controls": {"shuffled": _block(0.5, 0.49, 0.51),
                                                                     "circular_shift": _block(0.51, 0.5, 0.52)}},
            "step3": {"all": {"delta": _block(0.05, 0.04, 0.06)}},
        }  # fmt: skip

    def group(g: str, v: tuple) -> dict:  # head_trans is zeroed by default: 0 by construction, measured added back
        if g == "head_trans":
            return {**_block(0.0, 0.0, 0.0), "zeroed_by_default": True, "added_back": _block(*v)}
        return {**_block(*v), "zeroed_by_default": False}

    att = {c: {"groups": {g: group(g, v) for g, v in gs.items()}} for c, gs in groups.items()}
    readings = {
        g: read_group({c: c in where for c in corpora}, g == "head_trans").to_json() for g, where in reading.items()
    }
    return {"corpora": corpora, "attribution": {"corpora": att, "reading": readings}}


def test_planted_expectations_classify_groups():
    exp = planted_expectations(_truth(1.0))
    assert exp["head_trans"]["planted"] == "none" and exp["head_rot"]["planted"] == "observable"
    assert exp["jaw_mouth"]["planted"] == "weak"  # 0.01 over noise 0.1: SNR 0.1
    assert exp["eye_gaze"]["snr"] == pytest.approx(13.5) and exp["eye_gaze"]["planted"] == "observable"
    degraded = planted_expectations(_truth(0.1))["eye_gaze"]  # the same cue seen through a tenth of the gain
    assert degraded["strength"] == pytest.approx(0.027) and degraded["planted"] == "weak"


def test_recovery_checks_agree_only_with_what_was_planted():
    found = {
        "tight": {"eye_gaze": (0.05, 0.03, 0.07), "head_rot": (0.02, 0.01, 0.03), "head_trans": (0.0, -0.01, 0.01)},
        "wide": {
            "eye_gaze": (0.004, 0.001, 0.008),
            "head_rot": (0.03, 0.02, 0.04),
            "head_trans": (-0.003, -0.005, -0.001),
        },
    }
    reading = {"eye_gaze": ("tight", "wide"), "head_rot": ("tight", "wide"), "head_trans": ()}
    checks = recovery_checks(_results(found, reading))
    assert all(c["ok"] for c in checks), [c for c in checks if not c["ok"]]  # doing better without noise is fine
    assert "attribution: eye_gaze matters less where it is seen worse" in [c["claim"] for c in checks]
    # head translation "found" where nothing was planted, and gaze mattering more where it is barely seen, are flagged
    found["tight"]["head_trans"] = (0.08, 0.05, 0.1)
    found["wide"]["eye_gaze"] = (0.09, 0.08, 0.1)
    bad = [c["claim"] for c in recovery_checks(_results(found, reading)) if not c["ok"]]
    assert bad == ["attribution: head_trans carries nothing",
                   "attribution: eye_gaze matters less where it is seen worse"]  # fmt: skip


def test_demo_seed_sets_every_seed_of_the_shipped_study():
    from faceturn.study import load_study_config, reseed

    cfg = load_study_config("synthetic")
    k = len(cfg.attribution.seeds)
    moved = reseed(cfg, 5)
    assert moved.seed == 5 and all(c.synth.seed == 5 for c in moved.corpora)
    assert moved.attribution.seeds == tuple(range(5, 5 + k))
    assert moved.vanilla.seed == moved.vanilla.data.seed == 5 and moved.aux == cfg.aux
    assert reseed(cfg, 0).attribution.seeds == cfg.attribution.seeds  # the shipped config is the demo's seed 0


def test_corpus_names_that_become_folders_are_identifiers_and_reports_need_posthoc(tmp_path, capsys):
    """A corpus name names folders and run ids: shell syntax there is refused with the key named, before any work; a
    study without any post-hoc encoder could not write its report, so it is refused before any work too."""
    for bad in ("c;cd ..;touch PWNED;echo", "c$(touch X)", "a b", "../up", "é"):
        config = write_micro_study(tmp_path / "bad.toml")
        config.write_text(config.read_text().replace('name = "tight"', f"name = {json.dumps(bad)}"))
        assert main(["study", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
        assert "must be letters, digits" in capsys.readouterr().err
    config = write_micro_study(tmp_path / "no-posthoc.toml")
    config.write_text(config.read_text().replace('posthoc_norms = ["standardize"]', "posthoc_norms = []"))
    assert main(["study", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "attribution.posthoc_norms is empty" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "PWNED").exists()
