"""The study (docs/design.md, "The study") as one resumable job: probe (step 1), vanilla LM analyses (step 2), aux
model face vs zeroed (step 3), leave-one-group-out attribution by retraining (with the labelled-invalid post-hoc
table), turn timing of the talking models (step 4), and a cross-corpus summary, written as results.json, report.md
and a self-contained report.html.

Every step is a job (argv lists, configs as JSON files in the study folder) that writes its result file atomically
and is skipped when that file exists, so an interrupted study resumes where it stopped; a different configuration in
the same folder is refused.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from faceturn.config import load_toml, named_or_path, save_json, to_dict
from faceturn.errors import CorpusError, FaceturnError
from faceturn.eval.analyze import AnalyzeConfig
from faceturn.eval.attribution import PRED_NAME, AttributionConfig, collect, plan_jobs, plan_runs
from faceturn.eval.corpus import corpus_statistics
from faceturn.eval.probe import ProbeConfig
from faceturn.eval.talk import TalkConfig
from faceturn.eval.timing import TimingConfig
from faceturn.io import atomic_write_json
from faceturn.jobs import Job
from faceturn.recipe import TrainConfig, load_train_config
from faceturn.report import format_headline, write_report
from faceturn.results import Estimate, GroupReading, format_estimate, format_reading, read_group
from faceturn.slurm import SlurmConfig, execute
from faceturn.stats import MIN_CONVERSATIONS
from faceturn.store import Corpus
from faceturn.synth import generate_corpus, load_preset
from faceturn.synth.truth import planted_expectations

CONFIG_DIR = Path(__file__).parent / "configs" / "study"
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a corpus name becomes a folder name and part of run ids


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
        if not SAFE_NAME.fullmatch(self.name):
            raise ValueError(
                f"corpus name {self.name!r} must be letters, digits, '_', '-' or '.' (it names folders and run ids), "
                "starting with a letter or digit"
            )
        if bool(self.path) == (self.synth is not None):
            raise ValueError(f"corpus {self.name!r}: give exactly one of path or synth")


@dataclass(frozen=True)
class StudyConfig:
    """Everything the study depends on; saved as study.json in its folder."""

    name: str = "study"
    corpora: tuple[CorpusSpec, ...] = ()
    split: str = "test"  # evaluation split of every model
    seed: int = 0  # bootstrap and label-control seed
    n_resamples: int = 2000  # conversation-cluster bootstrap resamples for every CI
    min_conversations: int = MIN_CONVERSATIONS  # every CI from fewer conversations carries a warning
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    # step 2's model (yield_weight = 0): a whole train config, e.g. `[vanilla] inherit = "vanilla"` plus any fields
    vanilla: TrainConfig = field(default_factory=lambda: load_train_config("vanilla"))
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)  # step 2's measurements (split, seed and
    #                                                                resamples are the study's)
    # step 3's model and the attribution's full model; its zero_groups and face_norm are the study's defaults
    aux: TrainConfig = field(default_factory=lambda: load_train_config("aux"))
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    render_conversations: int = 1  # viewer pages and MP4s for the first N test conversations of each corpus
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # resources with --executor slurm; no part of the results
    # step 4: the vanilla model and its aux twin (`aux_lm`) talk against the evaluation split; False skips step 4
    # (and the twin, so step 2's implicit yield signal then covers the vanilla model only)
    step4: bool = True
    talk: TalkConfig = field(default_factory=TalkConfig)  # its resamples and seed are the study's
    timing: TimingConfig = field(default_factory=TimingConfig)  # its resamples, seed and minimum are the study's

    def __post_init__(self) -> None:
        if not self.corpora:
            raise ValueError("a study needs at least one [[corpora]] entry")
        if self.vanilla.loss.yield_weight != 0:
            raise ValueError(
                f"vanilla.loss.yield_weight must be 0 (step 2's model), got {self.vanilla.loss.yield_weight}"
            )
        if not self.attribution.posthoc_norms:
            raise ValueError(
                "attribution.posthoc_norms is empty, but a study's report compares post-hoc zeroing with retraining; "
                "name at least one encoder (layernorm, standardize)"
            )
        if self.aux.loss.yield_weight <= 0:
            raise ValueError(f"aux.loss.yield_weight must be > 0 (step 3's model), got {self.aux.loss.yield_weight}")
        if self.step4 and self.vanilla.loss.audio_weight == 0:
            raise ValueError(
                "vanilla.loss.audio_weight is 0, but step 4 lets the vanilla model talk: train it with the audio loss "
                "or set step4 = false"
            )
        names = [c.name for c in self.corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpus names must be distinct, got {names}")

    @property
    def aux_lm(self) -> TrainConfig:
        """Step 4's aux model: the vanilla recipe plus the aux model's yield loss, so the two talking models differ
        in the auxiliary head alone and both have trained audio heads (step 3's aux model may be trained without
        the audio loss, which leaves it unable to talk)."""
        return replace(self.vanilla, loss=replace(self.vanilla.loss, yield_weight=self.aux.loss.yield_weight))


def load_study_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """A shipped study (`synthetic`, `real`) or a TOML file. Relative corpus paths are made absolute: relative to a
    TOML file's folder, or to the working directory for a shipped config."""
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
    dirs = corpus_dirs(cfg, out_dir)
    for spec in cfg.corpora:
        if spec.synth is not None:
            preset = load_preset(spec.synth.preset, spec.synth.overrides)
            generate_corpus(
                preset, dirs[spec.name], n_conversations=spec.synth.conversations, seed=spec.synth.seed,
                audio=spec.synth.audio, corpus_name=spec.name, workers=os.cpu_count() or 1, progress=progress,
            )  # fmt: skip
        elif not (dirs[spec.name] / "manifest.jsonl").is_file():
            raise CorpusError(f"corpus {spec.name!r}: {dirs[spec.name]} is not a corpus folder (no manifest.jsonl)")
        if not Corpus(dirs[spec.name]).ids(cfg.split):
            raise CorpusError(f"corpus {spec.name!r} ({dirs[spec.name]}) has no conversations in split {cfg.split!r}")
    return dirs


# ------------------------------------------------------------------------------------------------------ the runner
def study_identity(cfg: StudyConfig | dict[str, Any]) -> dict[str, Any]:
    """The configuration the results depend on: all of it but where the jobs ran ([slurm])."""
    return {k: v for k, v in (cfg if isinstance(cfg, dict) else to_dict(cfg)).items() if k != "slurm"}


def _check_study_folder(cfg: StudyConfig, out_dir: Path) -> None:
    """Save study.json; refuse a folder that holds a study with another configuration (results would mix)."""
    path = Path(out_dir) / "study.json"
    if path.exists():
        if study_identity(json.loads(path.read_text())) != study_identity(cfg):
            raise FaceturnError(f"{path}: this folder holds a study with a different configuration; use a new --out")
        return
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, to_dict(cfg))


def plan_attribution(cfg: StudyConfig, plan_dir: Path, corpora: dict[str, Path]) -> list:
    """The attribution plan of this study (its full model is the study's aux model) into `plan_dir`."""
    return plan_runs(cfg.aux, cfg.attribution, cfg.split, plan_dir, corpora, study=study_identity(cfg))


def study_jobs(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> list[Job]:
    """Steps 1 and 2 as jobs (probe; vanilla training + analysis, and with step 4 its aux twin's), every config a
    JSON file under configs/, plus the attribution plan's runs (whose full models are step 3's aux models). Longest
    first, so two slots stay busy to the end."""
    out_dir = Path(out_dir)
    vanilla = replace(cfg.vanilla, progress=False)
    analyze = replace(cfg.analyze, seed=cfg.seed, resamples=cfg.n_resamples, split=cfg.split,
                      min_conversations=cfg.min_conversations)  # fmt: skip
    probe = replace(cfg.probe, seed=cfg.seed, min_conversations=cfg.min_conversations)
    save_json(analyze, out_dir / "configs/analyze.json")
    save_json(probe, out_dir / "configs/probe.json")
    models = {"vanilla": vanilla} | ({"aux-lm": replace(cfg.aux_lm, progress=False)} if cfg.step4 else {})
    first, last = [], []
    for name, path in corpora.items():
        c = str(Path(path).resolve())
        for model, train_cfg in models.items():
            cfg_rel = f"configs/{model}/{name}.json"
            save_json(train_cfg, out_dir / cfg_rel)
            run_rel, step2 = f"runs/{name}/{model}", STEP2_DIRS[model].format(name=name)
            first.append(Job(f"{step2}", (
                ("faceturn", "train", "--config", cfg_rel, "--corpus", c, "--out", run_rel, "--resume"),
                ("faceturn", "analyze", "--run", run_rel, "--corpus", c, "--out", step2, "--config",
                 "configs/analyze.json"),
            ), out_dir, (Path(f"{step2}/analysis.json"),), gpu=True))  # fmt: skip
        last.append(Job(f"step1/{name}", (
            ("faceturn", "probe", "--corpus", c, "--out", f"step1/{name}", "--config", "configs/probe.json"),
        ), out_dir, (Path(f"step1/{name}/probe.json"),)))  # fmt: skip
    plan_attribution(cfg, out_dir / "attribution", corpora)
    return first + plan_jobs(out_dir / "attribution") + last


STEP2_DIRS = {"vanilla": "step2/{name}", "aux-lm": "step2/{name}/aux-lm"}  # where each model's analysis goes
TALKERS = {"vanilla": (), "aux-lm": ("--gate",)}  # step 4's models and how they talk


def step4_jobs(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> list[Job]:
    """Step 4 as jobs: `faceturn talk` (the aux twin also gated) and `faceturn timing` per corpus and model."""
    if not cfg.step4:
        return []
    talk = replace(cfg.talk, resamples=cfg.n_resamples, seed=cfg.seed)
    timing = replace(cfg.timing, resamples=cfg.n_resamples, seed=cfg.seed, min_conversations=cfg.min_conversations)
    save_json(talk, out_dir / "configs/talk.json")
    save_json(timing, out_dir / "configs/timing.json")
    jobs = []
    for name, path in corpora.items():
        c = str(Path(path).resolve())
        for model, flags in TALKERS.items():
            folder = f"step4/{name}/{model}"
            jobs.append(Job(folder, (
                ("faceturn", "talk", "--run", f"runs/{name}/{model}", "--corpus", c, "--split", cfg.split, "--out",
                 f"{folder}/talk.npz", "--config", "configs/talk.json", "--no-progress", *flags),
                ("faceturn", "timing", "--talk", f"{folder}/talk.npz", "--corpus", c, "--split", cfg.split, "--out",
                 folder, "--config", "configs/timing.json"),
            ), out_dir, (Path(f"{folder}/timing.json"),), after=(STEP2_DIRS[model].format(name=name),),
                gpu=True))  # fmt: skip
    return jobs


def run_study(
    cfg: StudyConfig, out_dir: Path, *, jobs: int | None = None, slurm: SlurmConfig | None = None, progress: bool = True
) -> dict:
    """Run (or resume) the whole study into `out_dir`, its jobs here (`jobs` at a time) or on SLURM (`slurm`'s
    resources); returns the content of results.json."""
    out_dir = Path(out_dir)
    _check_study_folder(cfg, out_dir)
    corpora = ensure_corpora(cfg, out_dir, progress=progress)
    _corpus_facts(cfg, out_dir, corpora)
    n_jobs = jobs or cfg.attribution.jobs
    runs = study_jobs(cfg, out_dir, corpora) + step4_jobs(cfg, out_dir, corpora) + step3_jobs(cfg, out_dir, corpora)
    execute(runs, out_dir / "logs", n_jobs=n_jobs, slurm=slurm, name=f"faceturn-{cfg.name}", progress=progress,
            desc="study runs")  # fmt: skip
    if not (out_dir / "attribution" / "results.json").is_file():
        collect(out_dir / "attribution", cfg.n_resamples, cfg.seed)
    results = _results(cfg, out_dir, corpora)
    atomic_write_json(out_dir / "results.json", results)
    write_report(results, out_dir, progress=progress)
    return results


def _corpus_facts(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> None:
    """corpora.json: each corpus' statistics and, for synthetic ones, what the generator planted (truth.json)."""
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


def step3_jobs(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> list[Job]:
    """Step 3 as jobs: `faceturn evaluate` on the aux model's predictions (the attribution's full model, first
    training seed), thresholds for the event metrics from its validation predictions; each waits on that run."""
    jobs = []
    for name, path in corpora.items():
        full = f"{name}/full-s{cfg.attribution.seeds[0]}"  # the attribution run's id
        run = f"attribution/runs/{full}"
        jobs.append(Job(f"step3/{name}", ((
            "faceturn", "evaluate", "--pred", f"{run}/{PRED_NAME.format(split=cfg.split)}",
            "--val-pred", f"{run}/{PRED_NAME.format(split='val')}", "--corpus", str(Path(path).resolve()),
            "--split", cfg.split, "--out", f"step3/{name}", "--resamples", str(cfg.n_resamples),
            "--seed", str(cfg.seed), "--min-conversations", str(cfg.min_conversations),
        ),), out_dir, (Path(f"step3/{name}/results.json"),), after=(full,)))  # fmt: skip
    return jobs


# ------------------------------------------------------------------------------------------------------- results
RESULTS_FORMAT = "faceturn-study-results/3"


def _ci(value: float, ci: list[float] | None, source: str, block: dict[str, Any]) -> dict[str, Any]:
    """One reported number as results.json holds it (`faceturn.results.Estimate`): value, 95 % CI, conversations
    behind the CI and the step's warning (both from the step's `block`), and the file (relative to the study folder)
    it was read from."""
    ci_pair = None if ci is None else (ci[0], ci[1])
    return Estimate(value, ci_pair, block.get("n_clusters"), source, block.get("warning")).to_json()


def _read_step1(out_dir: Path, name: str) -> dict[str, Any]:
    src = f"step1/{name}/probe.json"
    probe = json.loads((out_dir / src).read_text())
    block = {
        "probe": _ci(probe["probes"]["all"]["auc"], probe["probes"]["all"]["ci"], src, probe["probes"]["all"]),
        "controls": {k: _ci(v["auc"], v["ci"], src, v) for k, v in probe["controls"].items()},
        "only": {}, "without": {},
        "n_frames": probe["n_frames"], "n_conversations": probe["n_conversations"],
    }  # fmt: skip
    for key, v in probe["probes"].items():
        kind, _, group = key.partition(":")
        if group:
            block[kind][group] = _ci(v["auc"], v["ci"], src, v)
    return block


def _read_reader(reader: dict[str, Any], src: str) -> dict[str, Any]:
    """The voice reader's scores as reported numbers (every result that uses the reader carries them)."""

    def number(b: dict[str, Any]) -> dict[str, Any]:
        return _ci(b["value"], b["ci"], src, b) if b.get("value") is not None else {"value": None, "note": b["note"]}

    return {"accuracy": number(reader["accuracy"]), "auc": number(reader["auc"]),
            "fit_split": reader["config"]["fit_split"], "split": reader["split"]}  # fmt: skip


def _read_implicit(out_dir: Path, src: str) -> dict[str, Any]:
    """Step 2's implicit yield signal of one model: AUC face, zeroed and Δ per floor holder, and the reader."""
    imp = json.loads((out_dir / src).read_text())["implicit_yield"]
    block: dict[str, Any] = {"reader": _read_reader(imp["reader"], src)}
    if "note" in imp:
        block["note"] = imp["note"]
    for signal in ("audio", "text"):
        for part, b in imp.get(signal, {}).items():
            block.setdefault(signal, {})[part] = {"note": b["note"]} if "auc" not in b else {
                "face": _ci(b["auc"]["face"], b["ci"]["face"], src, b),
                "zeroed": _ci(b["auc"]["zeroed"], b["ci"]["zeroed"], src, b),
                "delta": _ci(b["delta"], b["delta_ci"], src, b),
            }  # fmt: skip
    return block


def _read_step2(out_dir: Path, name: str, step4: bool = False) -> dict[str, Any]:
    src = f"step2/{name}/analysis.json"
    res = json.loads((out_dir / src).read_text())
    block = {k: _ci(v["value"], v["ci"], src, v) for k, v in res["prediction_change"].items()}
    probe = res["hidden_probe"]
    block["hidden_probe_face"] = _ci(probe["auc"]["face"], probe["ci"]["face"], src, probe)
    block["hidden_probe_zeroed"] = _ci(probe["auc"]["zeroed"], probe["ci"]["zeroed"], src, probe)
    block["hidden_probe_delta"] = _ci(probe["delta"], probe["delta_ci"], src, probe)
    for readout, g in res["readout_gain_ratio"].items():
        block[f"readout_gain_{readout}"] = (
            _ci(g["value"], g["ci"], src, g) if g.get("value") is not None else {"value": None, "note": g["note"]}
        )
    block["n_scored_frames"] = res["n_scored_frames"]
    models = ("vanilla", "aux-lm") if step4 else ("vanilla",)
    block["implicit_yield"] = {m: _read_implicit(out_dir, f"{STEP2_DIRS[m].format(name=name)}/analysis.json")
                               for m in models}  # fmt: skip
    return block


def _read_step4(out_dir: Path, name: str) -> dict[str, Any]:
    """Step 4 of one corpus: per talking model and policy every timing metric (face, zeroed, Δ), the recording's
    own human reference, the gate's thresholds and the voice reader."""
    block: dict[str, Any] = {"models": {}}
    for model in TALKERS:
        src = f"step4/{name}/{model}/timing.json"
        res = json.loads((out_dir / src).read_text())
        block["reader"] = _read_reader(res["reader"], src)
        block["corpus_reference"] = {
            metric: _ci(b["value"]["corpus"], b["ci"]["corpus"], src, b)
            for metric, b in res["corpus_reference"].items() if "value" in b and b["value"]["corpus"] is not None
        }  # fmt: skip
        policies = {}
        for policy, p in res["policies"].items():
            metrics = {}
            for metric, b in p["metrics"].items():
                if "value" not in b:
                    metrics[metric] = {"note": b["note"]}
                    continue
                metrics[metric] = {
                    c: (_ci(b["value"][c], b["ci"][c], src, b) if b["value"][c] is not None else
                        {"value": None, "note": "undefined (no event to measure)"}) for c in ("face", "zeroed")
                }  # fmt: skip
                metrics[metric]["delta"] = (_ci(b["delta"], b["delta_ci"], src, b) if b.get("delta") is not None
                                            else {"value": None, "note": "undefined"})  # fmt: skip
            policies[policy] = {"metrics": metrics, "events": p["events"]}
        block["models"][model] = {"gate": res["talk"]["gate"], "policies": policies, "source": src}
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
            "face": _ci(b["auc"]["face"], b["ci"]["face"], src, b),
            "zeroed": _ci(b["auc"]["zeroed"], b["ci"]["zeroed"], src, b),
            "delta": _ci(b["delta"], b["delta_ci"], src, b),
            "n_frames": b["n_frames"], "n_conversations": b["n_clusters"],
        }  # fmt: skip
    ev = res["events"]
    for part in ("shift_hold", "shift_prediction"):
        b = ev[part]
        if "auc" in b:
            block[part] = {c: _ci(b["auc"][c], b["ci"][c], src, b) for c in ("face", "zeroed")}
        else:  # too few events or conversations for an AUC: say so instead of a number
            block[part] = {"note": b["note"]}
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
            "full_auc": _ci(b["full_auc"]["auc"], b["full_auc"]["ci"], src, b["full_auc"]),
            "groups": {g: {**_ci(v["delta"], v["delta_ci"], src, v), "seed_sd": v["seed_sd"],
                           "zeroed_by_default": v["zeroed_by_default"]} for g, v in b["groups"].items()},
        }  # fmt: skip
        for g, v in b["groups"].items():
            if v["zeroed_by_default"]:  # 0 by construction; the measured number is the model with it added back
                a = v["added_back"]
                c["groups"][g]["added_back"] = {**_ci(a["delta"], a["delta_ci"], src, a),
                                                "seed_sd": a["seed_sd"]}  # fmt: skip
        if "audio_only" in b:
            c["audio_only"] = _ci(b["audio_only"]["delta"], b["audio_only"]["delta_ci"], src, b["audio_only"])
        c["posthoc"] = {
            norm: {
                "valid": False,
                "seeds": p["seeds"],
                "groups": {g: {**_ci(v["delta"], v["delta_ci"], src, v), "valid": v["valid"]}
                           for g, v in p["groups"].items()},
                "retrained": {g: {**_ci(v["delta"], v["delta_ci"], src, v), "auc_with": v["reference_auc"],
                                  "auc_without": v["other_auc"]} for g, v in p["retrained"].items()},
            }
            for norm, p in b["posthoc"].items()
        }  # fmt: skip
        out["corpora"][corpus] = c
    return out


def _measured(group: dict[str, Any]) -> dict[str, Any]:
    """A group's measured leave-one-out ΔAUC: for a group zeroed by default (0 by construction), the added-back one."""
    return group["added_back"] if group["zeroed_by_default"] else group


READER_MIN_ACCURACY = 0.95  # a synthetic corpus's codes determine its voice activity: the reader must read it


def step4_checks(block: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The step-2 implicit-signal and step-4 checks a synthetic corpus's truth implies, as (claim, expected, found,
    ok); see docs/design.md, "Step 4: turn timing", for why these directions and no others."""
    checks = []
    s4 = block.get("step4")
    if s4:
        acc = s4["reader"]["accuracy"]
        checks.append(("step 4: the voice reader reads the synthetic audio", f"frame accuracy ≥ {READER_MIN_ACCURACY} "
                       "(the semantic codebook's silence vocabulary marks exactly the unvoiced frames)",
                       format_estimate(acc), acc["value"] >= READER_MIN_ACCURACY))  # fmt: skip
    for model, imp in block.get("step2", {}).get("implicit_yield", {}).items():
        e = imp.get("audio", {}).get("self_holds", {}).get("face")
        if e is not None:
            checks.append((f"step 2: {model}'s implicit yield signal hears its own turn ends", "AUC of P(self silent "
                           "next) where self holds the floor, CI above 0.5 (the audio turn-end cue is planted in "
                           "self's speech)", format_estimate(e), e["ci"][0] > 0.5))  # fmt: skip
    gated = (s4 or {}).get("models", {}).get("aux-lm", {}).get("policies", {}).get("moshi+gate")
    if gated:
        d = gated["metrics"]["takeover_margin"]["delta"]
        found = format_estimate(d, signed=True) if d.get("value") is not None else "undefined"
        checks.append(("step 4: with the gate, the face helps the aux model tell turn ends from pauses",
                       "Δ take-over margin (shifts − pauses; face − zeroed) CI above zero (face cues precede "
                       "hand-overs, so the gate's P(yield) separates them better with the face)", found,
                       d.get("ci") is not None and d["ci"][0] > 0))  # fmt: skip
    return checks


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
            f"probe {format_estimate(s1['probe'])}; controls "
            + ", ".join(f"{k} {v['value']:.3f}" for k, v in ctrl.items()),
            s1["probe"]["ci"][0] > worst)  # fmt: skip
        add(c, "step 1: the label controls sit at chance", "both controls within 0.5 ± 0.02",
            ", ".join(f"{k} {v['value']:.3f}" for k, v in ctrl.items()),
            all(abs(v["value"] - 0.5) <= 0.02 for v in ctrl.values()))  # fmt: skip
        d = b["step3"]["all"]["delta"]
        add(c, "step 3: the aux model uses the face", "ΔAUC (face − zeroed) CI above zero",
            format_estimate(d, signed=True), d["ci"][0] > 0)  # fmt: skip
        for check in step4_checks(b):
            add(c, *check)
        if c not in att["corpora"]:
            continue
        found = att["corpora"][c]["groups"]
        for g, p in groups.items():
            if g not in found or p["planted"] == "weak":
                continue
            f = _measured(found[g])
            default = found[g]["zeroed_by_default"]
            text = ("zeroed by default; added back: " if default else "") + f"ΔAUC {format_estimate(f, signed=True)}"
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
            default = any(att["corpora"][c]["groups"][g]["zeroed_by_default"] for c in have)
            expected = read_group({c: k == "observable" for c, k in kinds.items()}, default)
            found = GroupReading.from_json(att["reading"][g])
            add(
                "all",
                f"cross-corpus reading of {g}",
                format_reading(expected),
                format_reading(found),
                expected == found,
            )
    return checks


def _results(cfg: StudyConfig, out_dir: Path, corpora: dict[str, Path]) -> dict[str, Any]:
    """results.json: every number of the study with its CI and the file it came from (paths relative to the study
    folder, so two runs of the same study in different folders write identical files)."""
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
            "step2": _read_step2(out_dir, name, cfg.step4),
            "step3": _read_step3(out_dir, name),
        }  # fmt: skip
        if cfg.step4:
            per_corpus[name]["step4"] = _read_step4(out_dir, name)
    results = {
        "format": RESULTS_FORMAT,
        "study": {k: v for k, v in study_identity(cfg).items() if k != "corpora"},
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
    """The same study with every seed set from `seed`: synthetic corpora, the vanilla run (and its aux twin), the
    bootstrap and label controls get `seed`; the attribution's k training seeds and step 4's k sampling seeds become
    seed, seed + 1, ..., seed + k − 1."""
    corpora = tuple(replace(c, synth=replace(c.synth, seed=seed)) if c.synth else c for c in cfg.corpora)
    vanilla = replace(cfg.vanilla, seed=seed, data=replace(cfg.vanilla.data, seed=seed))
    seeds = tuple(seed + i for i in range(len(cfg.attribution.seeds)))
    talk = replace(cfg.talk, seeds=tuple(seed + i for i in range(len(cfg.talk.seeds))))
    return replace(cfg, corpora=corpora, seed=seed, vanilla=vanilla, attribution=replace(cfg.attribution, seeds=seeds),
                   talk=talk)  # fmt: skip


def run_and_summarize(
    cfg: StudyConfig, out_dir: Path, *, jobs: int | None = None, slurm: SlurmConfig | None = None, progress: bool = True
) -> str:
    """Run (or resume) the study, time it, and return what a user should read: the report's paths, the recovery
    verdict for synthetic corpora, and the headline table."""
    t0 = time.perf_counter()
    results = run_study(cfg, out_dir, jobs=jobs, slurm=slurm, progress=progress)
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
