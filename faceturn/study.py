"""The study of DESIGN §1 as one resumable job: probe (step 1), vanilla LM analyses (step 2), aux model face vs
zeroed (step 3), leave-one-group-out attribution by retraining (with the labelled-invalid post-hoc table), and a
cross-corpus summary, written as results.json, report.md and a self-contained report.html.

Every step writes its result file atomically into the study folder and is skipped when that file exists, so an
interrupted study resumes where it stopped; a different configuration in the same folder is refused.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceturn.config import load_toml, named_or_path
from faceturn.eval.analyze import AnalyzeConfig
from faceturn.eval.attribution import AttributionConfig
from faceturn.eval.probe import ProbeConfig

CONFIG_DIR = Path(__file__).parent / "configs" / "study"


@dataclass(frozen=True)
class SynthSpec:
    """Generate the corpus with `faceturn synth` into the study folder (corpora/NAME)."""

    preset: str = "tight"
    conversations: int = 120
    seed: int = 0
    audio: bool = False  # waveform files; viewer pages and videos regenerate the sound of what they show
    overrides: tuple[str, ...] = ()  # preset overrides, e.g. "audio.cue_reliability=0.8"

    def __post_init__(self) -> None:
        if self.conversations < 10:
            raise ValueError(f"synth.conversations must be >= 10 (train/val/test splits), got {self.conversations}")


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus of the study: an existing corpus folder (`path`, relative to the config file) or a synthetic one."""

    name: str
    path: str = ""
    synth: SynthSpec | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"corpus name must be a non-empty folder name, got {self.name!r}")
        if bool(self.path) == (self.synth is not None):
            raise ValueError(f"corpus {self.name!r}: give exactly one of path or synth")


@dataclass(frozen=True)
class RunRecipe:
    """A training recipe: a train config (preset name, TOML or JSON path) plus `key=value` overrides."""

    config: str = "aux"
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyConfig:
    """Everything the study depends on; saved as study.json in its folder."""

    name: str = "study"
    corpora: tuple[CorpusSpec, ...] = ()
    split: str = "test"  # evaluation split of every model
    seed: int = 0  # bootstrap and label-control seed
    n_resamples: int = 2000  # conversation-cluster bootstrap resamples for every CI
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    vanilla: RunRecipe = field(default_factory=lambda: RunRecipe("vanilla"))  # step 2 (yield_weight = 0)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)  # step 2's measurements (split, seed and
    #                                                                resamples are the study's)
    aux: RunRecipe = field(default_factory=lambda: RunRecipe("aux"))  # step 3, and the attribution's full model
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    render_conversations: int = 1  # viewer pages and MP4s for the first N test conversations of each corpus

    def __post_init__(self) -> None:
        if not self.corpora:
            raise ValueError("a study needs at least one [[corpora]] entry")
        names = [c.name for c in self.corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpus names must be distinct, got {names}")


def load_study_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """A shipped study (`synthetic`, `real`) or a TOML file. Relative corpus paths are made absolute: relative to a
    TOML file's folder, or to the working directory for a shipped config."""
    from dataclasses import replace

    path = named_or_path(name_or_path, CONFIG_DIR, "study config")
    cfg = load_toml(StudyConfig, path, overrides)
    base = Path.cwd() if path.parent.resolve() == CONFIG_DIR.resolve() else path.parent
    corpora = tuple(replace(c, path=str((base / c.path).resolve())) if c.path else c for c in cfg.corpora)
    return replace(cfg, corpora=corpora)


def corpus_dirs(cfg: StudyConfig, out_dir: Path) -> dict[str, Path]:
    """Where each corpus of the study lives (synthetic ones under OUT/corpora/NAME)."""
    return {c.name: Path(c.path) if c.path else Path(out_dir) / "corpora" / c.name for c in cfg.corpora}


def ensure_corpora(cfg: StudyConfig, out_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Generate the synthetic corpora that are not there yet (resumable, deterministic) and check every corpus."""
    from faceturn.store import Corpus
    from faceturn.synth import generate_corpus, load_preset

    dirs = corpus_dirs(cfg, out_dir)
    for spec in cfg.corpora:
        if spec.synth is not None:
            preset = load_preset(spec.synth.preset, spec.synth.overrides)
            generate_corpus(
                preset, dirs[spec.name], n_conversations=spec.synth.conversations, seed=spec.synth.seed,
                audio=spec.synth.audio, corpus_name=spec.name, workers=os.cpu_count() or 1, progress=progress,
            )  # fmt: skip
        elif not (dirs[spec.name] / "manifest.jsonl").is_file():
            raise ValueError(f"corpus {spec.name!r}: {dirs[spec.name]} is not a corpus folder (no manifest.jsonl)")
        if not Corpus(dirs[spec.name]).ids(cfg.split):
            raise ValueError(f"corpus {spec.name!r} ({dirs[spec.name]}) has no conversations in split {cfg.split!r}")
    return dirs


# ------------------------------------------------------------------------------------------------------ the runner
def _check_study_folder(cfg: StudyConfig, out_dir: Path) -> None:
    """Save study.json; refuse a folder that holds a study with another configuration (results would mix)."""
    from faceturn.config import to_dict
    from faceturn.io import atomic_write_json

    path = Path(out_dir) / "study.json"
    if path.exists():
        if json.loads(path.read_text()) != to_dict(cfg):
            raise ValueError(f"{path}: this folder holds a study with a different configuration; use a new --out")
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, to_dict(cfg))


def _set_flags(cfg: object) -> str:
    """`--set k=v` flags that reproduce a flat dataclass config on a command line."""
    import shlex

    from faceturn.config import to_dict

    return " ".join(f"--set {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in sorted(to_dict(cfg).items()))


def study_jobs(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> list:
    """Steps 1 and 2 as shell jobs (probe; vanilla training + analysis), plus the attribution plan's runs (whose
    full models are step 3's aux models). Longest first, so two slots stay busy to the end."""
    import shlex
    from dataclasses import replace

    from faceturn.config import save_json
    from faceturn.eval.attribution import plan_jobs, plan_runs
    from faceturn.jobs import Job
    from faceturn.train import load_train_config

    out_dir = Path(out_dir)
    q = shlex.quote
    vanilla = load_train_config(cfg.vanilla.config, cfg.vanilla.overrides)
    vanilla = replace(vanilla, progress=False)
    analyze = replace(cfg.analyze, seed=cfg.seed, resamples=cfg.n_resamples, split=cfg.split)
    first, last = [], []
    for name, path in corpora.items():
        c = q(str(Path(path).resolve()))
        cfg_rel = f"configs/vanilla/{name}.json"
        save_json(vanilla, out_dir / cfg_rel)
        run_rel = f"runs/{name}/vanilla"
        first.append(Job(
            f"step2/{name}",
            f"faceturn train --config {cfg_rel} --corpus {c} --out {run_rel} --resume && faceturn analyze --run "
            f"{run_rel} --corpus {c} --out step2/{name} {_set_flags(analyze)}",
            out_dir, (Path(f"step2/{name}/analysis.json"),),
        ))  # fmt: skip
        probe = replace(cfg.probe, seed=cfg.seed)
        last.append(Job(f"step1/{name}", f"faceturn probe --corpus {c} --out step1/{name} {_set_flags(probe)}",
                        out_dir, (Path(f"step1/{name}/probe.json"),)))  # fmt: skip
    plan_runs(cfg, out_dir / "attribution", corpora)
    return first + plan_jobs(out_dir / "attribution") + last


def run_study(cfg: StudyConfig, out_dir: Path, *, jobs: int | None = None, progress: bool = True) -> dict:
    """Run (or resume) the whole study into `out_dir`; returns the content of results.json."""
    from faceturn.eval.attribution import collect
    from faceturn.io import atomic_write_json
    from faceturn.jobs import run_jobs

    out_dir = Path(out_dir)
    _check_study_folder(cfg, out_dir)
    corpora = ensure_corpora(cfg, out_dir, progress=progress)
    _corpus_facts(cfg, out_dir, corpora)
    n_jobs = jobs or cfg.attribution.jobs
    run_jobs(study_jobs(cfg, out_dir, corpora), n_jobs, out_dir / "logs", progress=progress, desc="study runs")
    run_jobs(step3_jobs(cfg, out_dir, corpora), n_jobs, out_dir / "logs", progress=progress, desc="step 3")
    if not (out_dir / "attribution" / "results.json").is_file():
        collect(out_dir / "attribution", cfg.n_resamples, cfg.seed)
    results = _results(cfg, out_dir, corpora)
    atomic_write_json(out_dir / "results.json", results)
    from faceturn.report import write_report

    write_report(results, out_dir, progress=progress)
    return results


def _corpus_facts(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> None:
    """corpora.json: each corpus' statistics and, for synthetic ones, what the generator planted (truth.json)."""
    from faceturn.commands.inspect import corpus_statistics
    from faceturn.io import atomic_write_json
    from faceturn.store import Corpus

    path = out_dir / "corpora.json"
    if path.is_file():
        return
    facts = {}
    for spec in cfg.corpora:
        root = corpora[spec.name]
        store = Corpus(root)
        truth = root / "truth.json"
        facts[spec.name] = {
            "path": str(root.resolve()),
            "synthetic": spec.synth is not None,
            "statistics": corpus_statistics(store),
            "truth": json.loads(truth.read_text()) if truth.is_file() else None,
            "splits": {s: len(store.ids(s)) for s in ("train", "val", cfg.split)},
        }
    atomic_write_json(path, facts)


def step3_jobs(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> list:
    """Step 3 as shell jobs: `faceturn evaluate` on the aux model's predictions (the attribution's full model, first
    training seed), thresholds for the event metrics from its validation predictions."""
    import shlex

    from faceturn.eval.attribution import PRED_NAME
    from faceturn.jobs import Job

    q = shlex.quote
    jobs = []
    for name, path in corpora.items():
        run = f"attribution/runs/{name}/full-s{cfg.attribution.seeds[0]}"
        jobs.append(Job(
            f"step3/{name}",
            f"faceturn evaluate --pred {run}/{PRED_NAME.format(split=cfg.split)} --val-pred "
            f"{run}/{PRED_NAME.format(split='val')} --corpus {q(str(Path(path).resolve()))} --split {q(cfg.split)} "
            f"--out step3/{name} --resamples {cfg.n_resamples} --seed {cfg.seed}",
            out_dir, (Path(f"step3/{name}/results.json"),),
        ))  # fmt: skip
    return jobs


# ------------------------------------------------------------------------------------------------------- results
RESULTS_FORMAT = "faceturn-study-results/1"
OBSERVABLE_SNR = 2.0  # planted cue per hand-over × observation gain, over the observation noise SD, to count as seen


def _ci(value: float, ci: list[float] | tuple[float, float] | None, source: str) -> dict[str, Any]:
    """One reported number: value, 95 % CI, and the file (relative to the study folder) it was read from."""
    return {"value": float(value), "ci": None if ci is None else [float(ci[0]), float(ci[1])], "source": source}


def _read_step1(out_dir: Path, name: str) -> dict[str, Any]:
    src = f"step1/{name}/probe.json"
    probe = json.loads((out_dir / src).read_text())
    block = {
        "probe": _ci(probe["probes"]["all"]["auc"], probe["probes"]["all"]["ci"], src),
        "controls": {k: _ci(v["auc"], v["ci"], src) for k, v in probe["controls"].items()},
        "only": {}, "without": {},
        "n_frames": probe["n_frames"], "n_conversations": probe["n_conversations"],
    }  # fmt: skip
    for key, v in probe["probes"].items():
        kind, _, group = key.partition(":")
        if group:
            block[kind][group] = _ci(v["auc"], v["ci"], src)
    return block


def _read_step2(out_dir: Path, name: str) -> dict[str, Any]:
    src = f"step2/{name}/analysis.json"
    res = json.loads((out_dir / src).read_text())
    block = {k: _ci(v["value"], v["ci"], src) for k, v in res["prediction_change"].items()}
    probe = res["hidden_probe"]
    block["hidden_probe_face"] = _ci(probe["auc"]["face"], probe["ci"]["face"], src)
    block["hidden_probe_zeroed"] = _ci(probe["auc"]["zeroed"], probe["ci"]["zeroed"], src)
    block["hidden_probe_delta"] = _ci(probe["delta"], probe["delta_ci"], src)
    for readout, g in res["readout_gain_ratio"].items():
        block[f"readout_gain_{readout}"] = (
            _ci(g["value"], g["ci"], src) if g.get("value") is not None else {"value": None, "note": g["note"]}
        )
    block["n_scored_frames"] = res["n_scored_frames"]
    return block


def _read_step3(out_dir: Path, name: str) -> dict[str, Any]:
    src = f"step3/{name}/results.json"
    res = json.loads((out_dir / src).read_text())
    block: dict[str, Any] = {"prediction_file": res["predictions"]["file"]}
    for part, b in res["frames"].items():
        if "auc" not in b:
            block[part] = {"note": b["note"], "n_frames": b["n_frames"]}
            continue
        block[part] = {
            "face": _ci(b["auc"]["face"], b["ci"]["face"], src),
            "zeroed": _ci(b["auc"]["zeroed"], b["ci"]["zeroed"], src),
            "delta": _ci(b["delta"], b["delta_ci"], src),
            "n_frames": b["n_frames"], "n_conversations": b["n_clusters"],
        }  # fmt: skip
    ev = res["events"]
    for part in ("shift_hold", "shift_prediction"):
        b = ev[part]
        if "auc" in b:
            block[part] = {c: _ci(b["auc"][c], b["ci"][c], src) for c in ("face", "zeroed")}
            block[part]["n_events"] = b["n_frames"]
    for c, v in ev["shift_hold"].get("balanced_accuracy", {}).items():
        block["shift_hold"][f"balanced_accuracy_{c}"] = {"value": v["value"], "threshold_from_val":
                                                         v["threshold_from_val"], "source": src}  # fmt: skip
    return block


def _read_attribution(out_dir: Path) -> dict[str, Any]:
    src = "attribution/results.json"
    res = json.loads((out_dir / src).read_text())
    out: dict[str, Any] = {"main_norm": res["main_norm"], "default_zero_groups": res["default_zero_groups"],
                           "seeds": res["seeds"], "corpora": {},
                           "reading": res["summary"]["reading"], "ranking": res["summary"]["ranking"]}  # fmt: skip
    for corpus, b in res["corpora"].items():
        c: dict[str, Any] = {
            "full_auc": _ci(b["full_auc"]["auc"], b["full_auc"]["ci"], src),
            "groups": {g: {**_ci(v["delta"], v["delta_ci"], src), "seed_sd": v["seed_sd"],
                           "zeroed_by_default": v["zeroed_by_default"]} for g, v in b["groups"].items()},
        }  # fmt: skip
        for g, v in b["groups"].items():
            if v["zeroed_by_default"]:  # 0 by construction; the measured number is the model with it added back
                a = v["added_back"]
                c["groups"][g]["added_back"] = {**_ci(a["delta"], a["delta_ci"], src), "seed_sd": a["seed_sd"]}
        if "audio_only" in b:
            c["audio_only"] = _ci(b["audio_only"]["delta"], b["audio_only"]["delta_ci"], src)
        c["posthoc"] = {
            norm: {
                "valid": False,
                "seeds": p["seeds"],
                "groups": {g: {**_ci(v["delta"], v["delta_ci"], src), "valid": v["valid"]}
                           for g, v in p["groups"].items()},
                "retrained": {g: {**_ci(v["delta"], v["delta_ci"], src), "auc_with": v["reference_auc"],
                                  "auc_without": v["other_auc"]} for g, v in p["retrained"].items()},
            }
            for norm, p in b["posthoc"].items()
        }  # fmt: skip
        out["corpora"][corpus] = c
    return out


def planted_expectations(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per face group, what the generator planted and whether a model can see it: `strength` = expected cue
    displacement per hand-over × the framing's observation gain; `snr` = strength over the observation noise SD
    (drift included). Groups: "none" (nothing planted), "weak" (planted, snr < OBSERVABLE_SNR: no expectation either
    way), "observable" (a model that uses it should show ΔAUC > 0)."""
    out = {}
    for g, t in truth["groups"].items():
        strength = t["cue_strength"] * t["observation_gain"]
        noise = math.hypot(t["observation_noise_sd"], t["observation_drift_sd"])
        snr = strength / noise if noise > 0 else (math.inf if strength > 0 else 0.0)
        kind = "none" if t["cue_strength"] == 0 else ("observable" if snr >= OBSERVABLE_SNR else "weak")
        out[g] = {"cue_strength": t["cue_strength"], "observation_gain": t["observation_gain"],
                  "strength": strength, "snr": snr, "planted": kind}  # fmt: skip
    return out


def _measured(group: dict[str, Any]) -> dict[str, Any]:
    """A group's measured leave-one-out ΔAUC: for a group zeroed by default (0 by construction), the added-back one."""
    return group["added_back"] if group["zeroed_by_default"] else group


def recovery_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """For corpora with a planted truth (synthetic): does the study find what the generator put there? Each check
    states the claim, what was expected from truth.json, what the study found, and whether they agree."""
    checks: list[dict[str, Any]] = []
    att = results["attribution"]
    planted = {c: planted_expectations(b["truth"]) for c, b in results["corpora"].items() if b.get("truth")}

    def add(corpus: str, claim: str, expected: str, found: str, ok: bool) -> None:
        checks.append({"corpus": corpus, "claim": claim, "expected": expected, "found": found, "ok": bool(ok)})

    for c, groups in planted.items():
        b = results["corpora"][c]
        s1 = b["step1"]
        ctrl = s1["controls"]
        worst = max(v["ci"][1] for v in ctrl.values())
        add(c, "step 1: the face alone predicts hand-overs",
            "probe CI above both label controls (cues were planted)",
            f"probe {s1['probe']['value']:.3f} [{s1['probe']['ci'][0]:.3f}, {s1['probe']['ci'][1]:.3f}]; controls "
            + ", ".join(f"{k} {v['value']:.3f}" for k, v in ctrl.items()),
            s1["probe"]["ci"][0] > worst)  # fmt: skip
        add(c, "step 1: the label controls sit at chance", "both controls within 0.5 ± 0.02",
            ", ".join(f"{k} {v['value']:.3f}" for k, v in ctrl.items()),
            all(abs(v["value"] - 0.5) <= 0.02 for v in ctrl.values()))  # fmt: skip
        d = b["step3"]["all"]["delta"]
        add(c, "step 3: the aux model uses the face", "ΔAUC (face − zeroed) CI above zero",
            f"{d['value']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]", d["ci"][0] > 0)  # fmt: skip
        if c not in att["corpora"]:
            continue
        found = att["corpora"][c]["groups"]
        for g, p in groups.items():
            if g not in found or p["planted"] == "weak":
                continue
            f = _measured(found[g])
            default = found[g]["zeroed_by_default"]
            text = ("zeroed by default; added back: " if default else "") + (
                f"ΔAUC {f['value']:+.3f} [{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}]")  # fmt: skip
            how = "added-back " if default else ""
            if p["planted"] == "none":  # a model may do slightly better without a useless input: ΔAUC ≤ 0 is fine
                add(c, f"attribution: {g} carries nothing", f"nothing planted: {how}CI not above zero", text,
                    f["ci"][0] <= 0)  # fmt: skip
            else:
                add(c, f"attribution: the model uses {g}", f"planted and observable (SNR {p['snr']:.1f}): {how}CI "
                    "above zero", text, f["ci"][0] > 0)  # fmt: skip
    if len(planted) >= 2 and att["corpora"]:
        have = [c for c in planted if c in att["corpora"]]
        for g in att["reading"]:  # the same cue seen through a much lower observation gain must matter less
            gains = {c: planted[c][g]["observation_gain"] for c in have}
            if (
                min(gains.values()) > 0
                and max(gains.values()) >= 2 * min(gains.values())
                and all(planted[c][g]["cue_strength"] > 0 for c in have)
            ):
                clear, dim = max(gains, key=gains.get), min(gains, key=gains.get)
                a, b = (_measured(att["corpora"][k]["groups"][g]) for k in (clear, dim))
                add("all", f"attribution: {g} matters less where it is seen worse",
                    f"ΔAUC on {dim} (gain {gains[dim]:g}) below {clear} (gain {gains[clear]:g})",
                    f"{dim} {b['value']:+.3f}, {clear} {a['value']:+.3f}", b["value"] < a["value"])  # fmt: skip
        for g in att["reading"]:
            kinds = {c: planted[c][g]["planted"] for c in have}
            if "weak" in kinds.values():
                continue
            seen = [c for c, k in kinds.items() if k == "observable"]
            default = any(att["corpora"][c]["groups"][g]["zeroed_by_default"] for c in have)
            if default:
                expected = "zeroed by default; " + (
                    f"adding it back helps on {', '.join(seen)}" if seen else "adding it back does not help"
                )
            elif seen:
                expected = "robust" if len(seen) == len(kinds) else f"corpus-dependent (used on {', '.join(seen)} only)"
            else:
                expected = "no detectable effect"
            add("all", f"cross-corpus reading of {g}", expected, att["reading"][g], expected == att["reading"][g])
    return checks


def _results(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> dict[str, Any]:
    """results.json: every number of the study with its CI and the file it came from (paths relative to the study
    folder, so two runs of the same study in different folders write identical files)."""
    from faceturn.config import to_dict

    facts = json.loads((out_dir / "corpora.json").read_text())
    per_corpus = {}
    for name in corpora:
        f = facts[name]
        per_corpus[name] = {
            "synthetic": f["synthetic"],
            "truth": f["truth"] and {k: f["truth"][k] for k in ("preset", "framing", "seed", "groups",
                                                                "audio_cue_reliability")},
            "splits": f["splits"],
            "hours": f["statistics"].get("hours"),
            "step1": _read_step1(out_dir, name),
            "step2": _read_step2(out_dir, name),
            "step3": _read_step3(out_dir, name),
        }  # fmt: skip
    results = {
        "format": RESULTS_FORMAT,
        "study": {k: v for k, v in to_dict(cfg).items() if k != "corpora"},
        "corpora_config": [to_dict(c) for c in cfg.corpora],
        "seed": cfg.seed,
        "n_resamples": cfg.n_resamples,
        "split": cfg.split,
        "corpora": per_corpus,
        "attribution": _read_attribution(out_dir),
    }
    results["recovery"] = recovery_checks(results)
    return results


def reseed(cfg: StudyConfig, seed: int) -> StudyConfig:
    """The same study with every seed set from `seed`: synthetic corpora, the vanilla run, the bootstrap and label
    controls get `seed`; the attribution's k training seeds become seed, seed + 1, ..., seed + k − 1."""
    from dataclasses import replace

    corpora = tuple(replace(c, synth=replace(c.synth, seed=seed)) if c.synth else c for c in cfg.corpora)
    vanilla = replace(cfg.vanilla, overrides=(*cfg.vanilla.overrides, f"seed={seed}", f"data.seed={seed}"))
    seeds = tuple(seed + i for i in range(len(cfg.attribution.seeds)))
    return replace(cfg, corpora=corpora, seed=seed, vanilla=vanilla, attribution=replace(cfg.attribution, seeds=seeds))


def run_and_summarize(cfg: StudyConfig, out_dir: Path, *, jobs: int | None = None, progress: bool = True) -> str:
    """Run (or resume) the study, time it, and return what a user should read: the report's paths, the recovery
    verdict for synthetic corpora, and the headline table."""
    import time

    from faceturn.io import atomic_write_json
    from faceturn.report import format_headline

    t0 = time.perf_counter()
    results = run_study(cfg, out_dir, jobs=jobs, progress=progress)
    elapsed_s = time.perf_counter() - t0
    atomic_write_json(Path(out_dir) / "timing.json", {"seconds": elapsed_s, "jobs": jobs or cfg.attribution.jobs})
    lines = [f"study {cfg.name!r}: finished in {elapsed_s:.0f} s → {Path(out_dir) / 'report.html'} "
             f"(also report.md, results.json)"]  # fmt: skip
    checks = results.get("recovery") or []
    if checks:
        ok = sum(c["ok"] for c in checks)
        lines.append(f"planted truth recovered: {ok} of {len(checks)} checks agree" +
                     "".join(f"\n  ✘ {c['corpus']}: {c['claim']} (expected {c['expected']}; found {c['found']})"
                             for c in checks if not c["ok"]))  # fmt: skip
    lines += ["", format_headline(results)]
    return "\n".join(lines)
