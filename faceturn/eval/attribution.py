"""Which face groups does the turn-yield model use? Leave-one-group-out by retraining, across corpora.

The valid method retrains the model once per face group with that group zeroed at train *and* evaluation (stored
in the checkpoint), with the same data, budget and seeds as the full model, and compares per-frame AUC on identical
test frames: ΔAUC(g) = AUC(full) − AUC(without g), paired over frames, with a conversation-cluster bootstrap CI.
An audio-only model (every group zeroed) bounds the whole face's contribution.

Groups the model zeroes by default (`zero_groups`, e.g. head translation, a camera-setup constant) are already
absent from the full model, so leaving one out changes nothing: its ΔAUC is 0 by construction, as in the paper. The
plan instead retrains the full model *with* such a group added back (`with-<group>`), and reports that measured
ΔAUC = AUC(with it) − AUC(full) beside the zero, so the default is checked rather than assumed.

Post-hoc zeroing (zero a group at evaluation only, on a model trained with it) is also computed, because it is what
many studies do, and always reported apart, labelled invalid: through an encoder that normalizes across all 61
channels (`layernorm`), zeroing three large per-clip-constant channels (head translation, tens of cm) rescales
every other channel, so AUC drops although the group carries no information. The plan therefore also trains full
models with each encoder of `posthoc_norms` (and their `with-<group>` variants), and retrains the groups of
`retrain_check_groups` with them, so the report shows the artifact next to the retrained truth.

`plan` writes one train config (JSON) per run, `plan.json` (every run's argv lists and declared outputs) and
`plan.txt` (the same, one shell-quoted line per run, runnable from the study folder by a cluster job array); `run`
executes the plan locally N at a time, skipping finished runs and resuming interrupted ones from their last
checkpoint; `collect` writes `results.json` and `results.md`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.config import from_dict, save_json, to_dict
from faceturn.errors import FaceturnError
from faceturn.eval.predict import Predictions
from faceturn.io import atomic_write_json, atomic_write_text
from faceturn.jobs import Job
from faceturn.recipe import TrainConfig
from faceturn.results import (
    Estimate,
    GroupReading,
    Reading,
    format_estimate,
    format_reading,
    groups_reading,
    read_group,
    robust_groups,
    warning_lines,
)
from faceturn.schema import GROUP_NAMES, group_indices
from faceturn.slurm import SlurmConfig, execute
from faceturn.stats import MIN_CONVERSATIONS, flag_few_conversations, paired_delta_over_seeds

PLAN_FORMAT = "faceturn-attribution-plan/3"
PRED_NAME = "pred-{split}.npz"  # inside each run folder; post-hoc files add `.posthoc-GROUP`


@dataclass(frozen=True)
class AttributionConfig:
    """Which variants to train per corpus (every variant shares the study's aux recipe, data and seeds)."""

    groups: tuple[str, ...] = GROUP_NAMES  # one retrained model per group left out
    seeds: tuple[int, ...] = (0,)  # k seeds per variant: mean ΔAUC, seed SD, CI over conversations and seeds
    audio_only: bool = True  # also a model with every group zeroed (no face at all)
    posthoc_norms: tuple[str, ...] = ("layernorm", "standardize")  # full models whose post-hoc zeroing is reported
    retrain_check_groups: tuple[str, ...] = ("head_trans",)  # also retrained without, with each post-hoc-only encoder
    posthoc_seeds: int = 1  # the post-hoc (invalid) comparison uses the first N seeds: the artifact needs no more
    jobs: int = 2  # runs at a time for `attribute run` (each gets cores / jobs threads)

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("attribution.groups is empty; name at least one face group")
        group_indices(self.groups)
        group_indices(self.retrain_check_groups)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"attribution.seeds must be distinct and non-empty, got {list(self.seeds)}")
        bad = [n for n in self.posthoc_norms if n not in ("layernorm", "standardize")]
        if bad:
            raise ValueError(f"attribution.posthoc_norms: unknown encoders {bad}; valid: layernorm, standardize")
        if self.jobs < 1:
            raise ValueError(f"attribution.jobs must be >= 1, got {self.jobs}")
        if not 1 <= self.posthoc_seeds <= len(self.seeds):
            raise ValueError(f"attribution.posthoc_seeds must be in 1..{len(self.seeds)}, got {self.posthoc_seeds}")


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the plan and the prediction files it must leave behind."""

    id: str  # "<corpus>/<variant>-s<seed>", also its folder under runs/
    corpus: str
    corpus_path: str
    variant: str  # full, no-<group>, with-<group>, audio-only; full-, no-, with-...-<norm> for other encoders
    seed: int
    face_norm: str
    zero_groups: tuple[str, ...]
    posthoc_groups: tuple[str, ...]  # groups zeroed post hoc on this (full) model, one prediction file each
    steps: tuple[tuple[str, ...], ...]  # argv lists, run from the study folder
    outputs: tuple[str, ...] = field(default_factory=tuple)  # relative to the study folder


def _variants(
    cfg: AttributionConfig, main_norm: str, default_zero: tuple[str, ...], seed_index: int
) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """(variant, face_norm, zero_groups, post-hoc groups) for one corpus and its `seed_index`-th seed.

    The full model zeroes `default_zero` (the model config's `zero_groups`); `no-<g>` zeroes g as well, `with-<g>`
    puts a default-zeroed g back. Post-hoc zeroing of a group runs on a model trained with that group present."""
    posthoc = seed_index < cfg.posthoc_seeds

    def zero_set(add: Sequence[str] = (), drop: Sequence[str] = ()) -> tuple[str, ...]:
        return tuple(g for g in GROUP_NAMES if (g in default_zero or g in add) and g not in drop)

    present = tuple(g for g in cfg.groups if g not in default_zero)  # groups the full model sees
    absent = tuple(g for g in cfg.groups if g in default_zero)
    main_posthoc = posthoc and main_norm in cfg.posthoc_norms
    out = [("full", main_norm, zero_set(), present if main_posthoc else ())]
    out += [(f"no-{g}", main_norm, zero_set(add=[g]), ()) for g in present]
    out += [(f"with-{g}", main_norm, zero_set(drop=[g]), (g,) if main_posthoc else ()) for g in absent]
    if cfg.audio_only:
        out.append(("audio-only", main_norm, GROUP_NAMES, ()))
    for norm in cfg.posthoc_norms if posthoc else ():
        if norm != main_norm:
            out.append((f"full-{norm}", norm, zero_set(), present))
            out += [(f"no-{g}-{norm}", norm, zero_set(add=[g]), ()) for g in cfg.retrain_check_groups if g in present]
            out += [(f"with-{g}-{norm}", norm, zero_set(drop=[g]), (g,)) for g in absent]
    return out


def plan_runs(
    aux: TrainConfig,
    cfg: AttributionConfig,
    split: str,
    out_dir: Path,
    corpora: dict[str, Path],
    study: dict[str, Any] | None = None,
) -> list[PlannedRun]:
    """Write one train config per run under `configs/` (JSON), and `plan.json` + `plan.txt` into `out_dir`.

    Every run is `aux` with its seed, zero set and face encoder set through `dataclasses.replace`; `corpora` maps
    each corpus name to its folder; `study` (the whole study config, as JSON) is recorded for `collect`. Re-planning
    the same study gives the same files; a different one in a folder that has a plan is refused (its runs would mix).
    """
    main_norm, default_zero = aux.model.face_norm, tuple(aux.model.zero_groups)
    out_dir = Path(out_dir)
    plan_path = out_dir / "plan.json"
    fingerprint = {"aux": to_dict(aux), "attribution": to_dict(cfg), "split": split,
                   "corpora": {k: str(Path(v).resolve()) for k, v in corpora.items()}}  # fmt: skip
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old.get("format") != PLAN_FORMAT:
            raise FaceturnError(
                f"{plan_path}: a plan of format {old.get('format')!r} (an older faceturn); its runs differ from this "
                f"version's ({PLAN_FORMAT}), so use a new --out folder"
            )
        if old.get("fingerprint") != fingerprint:
            raise FaceturnError(
                f"{plan_path}: this folder holds a plan for a different study configuration; use a new --out folder"
            )
    runs: list[PlannedRun] = []
    for name, path in corpora.items():
        corpus_path = str(Path(path).resolve())
        for seed_index, seed in enumerate(cfg.seeds):
            for variant, norm, zero, posthoc in _variants(cfg, main_norm, default_zero, seed_index):
                run_id = f"{name}/{variant}-s{seed}"
                train_cfg = replace(aux, seed=seed, data=replace(aux.data, seed=seed), progress=False,
                                    model=replace(aux.model, zero_groups=zero, face_norm=norm))  # fmt: skip
                cfg_rel = f"configs/{run_id}.json"
                save_json(train_cfg, out_dir / cfg_rel)
                run_rel = f"runs/{run_id}"
                pred_rel = f"{run_rel}/{PRED_NAME.format(split=split)}"
                # only the study's step-3 model (full, first seed) needs P(yield) with the face zeroed and validation
                # predictions (event thresholds); the others skip both
                step3 = variant == "full" and seed_index == 0
                predict = ("faceturn", "predict", "--run", run_rel, "--corpus", corpus_path)
                steps = [
                    ("faceturn", "train", "--config", cfg_rel, "--corpus", corpus_path, "--out", run_rel, "--resume"),
                    (*predict, "--split", split, "--out", pred_rel,
                     *(("--posthoc-each", ",".join(posthoc)) if posthoc else ()), *(() if step3 else ("--no-zeroed",))),
                ]  # fmt: skip
                outputs = (pred_rel, *(posthoc_path(pred_rel, g) for g in posthoc))
                if step3:
                    val_rel = f"{run_rel}/{PRED_NAME.format(split='val')}"
                    steps.append((*predict, "--split", "val", "--out", val_rel))
                    outputs += (val_rel,)
                runs.append(PlannedRun(run_id, name, corpus_path, variant, seed, norm, zero, posthoc, tuple(steps),
                                       outputs))  # fmt: skip
    atomic_write_json(
        plan_path,
        {"format": PLAN_FORMAT, "fingerprint": fingerprint, "main_norm": main_norm,
         "default_zero_groups": list(default_zero), "split": split,
         "study": study if study is not None else fingerprint, "runs": [to_dict(r) for r in runs]},
    )  # fmt: skip
    header = [
        "# faceturn attribution plan: one run per line; run each from this folder (e.g. a job array:",
        '#   cd STUDY && sed -n "$((SLURM_ARRAY_TASK_ID + 4))p" plan.txt | bash). `faceturn attribute run` runs',
        "#   them here. Every command resumes a partial run and is a no-op once its outputs exist.",
    ]
    jobs = _jobs(out_dir, runs)
    atomic_write_text(out_dir / "plan.txt", "\n".join([*header, *(j.shell() for j in jobs)]) + "\n")
    return runs


def _jobs(study_dir: Path, runs: Sequence[PlannedRun]) -> list[Job]:
    return [Job(r.id, r.steps, Path(study_dir), tuple(Path(o) for o in r.outputs), gpu=True) for r in runs]


def posthoc_path(pred_rel: str, group: str) -> str:
    p = Path(pred_rel)
    return str(p.with_name(f"{p.stem}.posthoc-{group}.npz"))


def load_plan(study_dir: Path) -> tuple[dict[str, Any], list[PlannedRun]]:
    path = Path(study_dir) / "plan.json"
    if not path.is_file():
        raise FaceturnError(f"{path}: no attribution plan here; run `faceturn attribute plan` first")
    data = json.loads(path.read_text())
    if data.get("format") != PLAN_FORMAT:
        raise FaceturnError(f"{path}: format {data.get('format')!r}, expected {PLAN_FORMAT!r}; use a new --out folder")
    return data, [from_dict(PlannedRun, r) for r in data["runs"]]


def is_done(study_dir: Path, run: PlannedRun) -> bool:
    """A run is finished when all its prediction files exist (each is written atomically after training)."""
    return all((Path(study_dir) / o).is_file() for o in run.outputs)


def plan_jobs(study_dir: Path) -> list[Job]:
    """The plan's runs as `faceturn.jobs.Job`s (run from the study folder, logs under logs/)."""
    _, runs = load_plan(study_dir)
    return _jobs(study_dir, runs)


def run_plan(
    study_dir: Path, jobs: int | None = None, progress: bool = True, slurm: SlurmConfig | None = None
) -> dict[str, Any]:
    """Execute every unfinished run of the plan, here `jobs` at a time or on SLURM (`slurm`'s resources, one job
    array); logs go to logs/<run>.log. Interrupting is safe: finished runs are skipped next time and interrupted ones
    resume from their newest complete checkpoint."""
    data, _ = load_plan(study_dir)
    n = jobs or data["study"]["attribution"]["jobs"]
    return execute(plan_jobs(study_dir), Path(study_dir) / "logs", n_jobs=n, slurm=slurm, name="faceturn-attribution",
                   progress=progress, desc="attribution runs")  # fmt: skip


# --------------------------------------------------------------------------------------------------------- collect
def _scored(pred: Any, reference: Any, what: str) -> None:
    """Refuse to pair two prediction files that are not over identical frames."""
    for k in ("conversation", "perspective", "frame", "y", "m"):
        a, b = getattr(pred, k), getattr(reference, k)
        if a.shape != b.shape or not np.array_equal(a, b):
            raise FaceturnError(f"{what}: predictions are not over the same frames as the full model ({k} differs)")
    if pred.meta["conversations"] != reference.meta["conversations"]:
        raise FaceturnError(f"{what}: predictions cover different conversations than the full model")


def _delta(reference: list[Any], other: list[Any], n_resamples: int, seed: int) -> dict[str, Any]:
    """ΔAUC(reference − other) on scored frames, seeds paired (seed i with seed i), CI over conversations."""

    m = reference[0].m
    return paired_delta_over_seeds(
        reference[0].y[m],
        [p.p_face[m] for p in reference],
        [p.p_face[m] for p in other],
        reference[0].conversation[m],
        n_resamples=n_resamples,
        seed=seed,
    )


def collect(study_dir: Path, n_resamples: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Per corpus: ΔAUC per group (retrained), audio-only, post-hoc (invalid) per encoder; cross-corpus reading."""
    study_dir = Path(study_dir)
    data, runs = load_plan(study_dir)
    study = data["study"]
    n_resamples = n_resamples or study["n_resamples"]
    seed = study["seed"] if seed is None else seed
    missing = [r.id for r in runs if not is_done(study_dir, r)]
    if missing:
        raise FaceturnError(
            f"{study_dir}: {len(missing)} runs are not finished ({missing[:4]}...); `attribute run` first"
        )
    att = study["attribution"]
    main_norm, split = data["main_norm"], data["split"]
    seeds = att["seeds"]
    posthoc_seeds = seeds[: att["posthoc_seeds"]]

    loaded: dict[str, Any] = {}  # each file is read once, though the post-hoc tables reuse the retrained ones

    def preds(corpus: str, variant: str, posthoc: str | None = None, only: list[int] | None = None) -> list[Any]:
        out = []
        for s in seeds if only is None else only:
            rel = f"runs/{corpus}/{variant}-s{s}/{PRED_NAME.format(split=split)}"
            rel = posthoc_path(rel, posthoc) if posthoc else rel
            if rel not in loaded:
                loaded[rel] = Predictions.load(study_dir / rel)
            out.append(loaded[rel])
        return out

    default_zero = data["default_zero_groups"]

    def trained(corpus: str, variant: str, expected: Sequence[str], reference: Any, only: list[int] | None = None):
        """The variant's predictions, checked: same frames as `reference`, trained with exactly `expected` zeroed."""
        out = preds(corpus, variant, only=only)
        for p in out:
            _scored(p, reference, f"{corpus} {variant}")
            if sorted(p.meta["zero_groups"]) != sorted(expected) or not p.meta["valid"]:
                raise FaceturnError(f"{corpus} {variant}: checkpoint zero_groups {p.meta['zero_groups']}, expected "
                                 f"{sorted(expected)}")  # fmt: skip
        return out

    def with_without(corpus: str, g: str, suffix: str, ref: Any, only: list[int] | None = None) -> tuple[Any, Any]:
        """(models trained with g present, the same retrained without g) for one encoder (`suffix` "" or "-norm")."""
        full = trained(corpus, f"full{suffix}", default_zero, ref, only)
        if g in default_zero:
            return trained(corpus, f"with-{g}{suffix}", [z for z in default_zero if z != g], ref, only), full
        return full, trained(corpus, f"no-{g}{suffix}", [*default_zero, g], ref, only)

    corpora = list(dict.fromkeys(r.corpus for r in runs))
    per_corpus: dict[str, Any] = {}
    for corpus in corpora:
        ref = preds(corpus, "full")[0]
        full = trained(corpus, "full", default_zero, ref)
        block: dict[str, Any] = {"default_zero_groups": default_zero, "groups": {}}
        for g in att["groups"]:
            present, absent = with_without(corpus, g, "", ref)
            measured = {**_delta(present, absent, n_resamples, seed), "method": "retrain", "valid": True}
            if g in default_zero:  # already absent from the full model: leaving it out changes nothing
                block["groups"][g] = {"delta": 0.0, "delta_ci": [0.0, 0.0], "seed_sd": 0.0, "method": "retrain",
                                      "valid": True, "zeroed_by_default": True, "added_back": measured}  # fmt: skip
            else:
                block["groups"][g] = {**measured, "zeroed_by_default": False}
        if att["audio_only"]:
            other = trained(corpus, "audio-only", GROUP_NAMES, ref)
            block["audio_only"] = {**_delta(full, other, n_resamples, seed), "method": "retrain", "valid": True}
        auc = _delta(full, full, n_resamples, seed)  # only its reference side: the full model's AUC and CI
        block["full_auc"] = {"auc": auc["reference_auc"], "ci": auc["reference_ci"], "n_frames": auc["n_frames"]}
        block["posthoc"] = {}
        for norm in att["posthoc_norms"]:  # on the first `posthoc_seeds` seeds, retrained column included
            suffix = "" if norm == main_norm else f"-{norm}"
            rows: dict[str, Any] = {}
            retrained: dict[str, Any] = {}
            references: dict[str, str] = {}
            for g in att["groups"]:
                present_variant = f"with-{g}{suffix}" if g in default_zero else f"full{suffix}"
                present = preds(corpus, present_variant, only=posthoc_seeds)
                other = preds(corpus, present_variant, posthoc=g, only=posthoc_seeds)
                for p in other:
                    _scored(p, ref, f"{corpus} {present_variant} post hoc {g}")
                rows[g] = {**_delta(present, other, n_resamples, seed), "method": "posthoc",
                           "valid": all(p.meta["valid"] for p in other)}  # fmt: skip
                references[g] = present_variant
                if norm == main_norm or g in default_zero or g in att["retrain_check_groups"]:
                    retrained[g] = _delta(*with_without(corpus, g, suffix, ref, posthoc_seeds), n_resamples, seed)
            block["posthoc"][norm] = {"reference": references, "seeds": posthoc_seeds, "groups": rows,
                                      "retrained": retrained}  # fmt: skip
        per_corpus[corpus] = block
    warnings = flag_few_conversations(per_corpus, study.get("min_conversations", MIN_CONVERSATIONS))
    summary = _cross_corpus(per_corpus, att["groups"])
    results = {
        "format": "faceturn-attribution-results/1",
        "split": split,
        "main_norm": main_norm,
        "default_zero_groups": default_zero,
        "n_resamples": n_resamples,
        "seed": seed,
        "seeds": seeds,
        "corpora": per_corpus,
        "summary": summary,
        "warnings": warnings,
        "study": study,
    }
    atomic_write_json(study_dir / "results.json", results)
    atomic_write_text(study_dir / "results.md", format_attribution(results) + "\n")
    return results


def _cross_corpus(per_corpus: dict[str, Any], groups: Sequence[str]) -> dict[str, Any]:
    """Rank groups per corpus, and read each group across corpora (`faceturn.results.read_group`: robust = CI above
    zero on every corpus). A group zeroed by default is read from its added-back model."""
    ranks = {
        c: [g for g, _ in sorted(b["groups"].items(), key=lambda kv: -kv[1]["delta"])] for c, b in per_corpus.items()
    }
    reading = {}
    for g in groups:
        default = any(b["groups"][g]["zeroed_by_default"] for b in per_corpus.values())
        blocks = {c: b["groups"][g]["added_back"] if default else b["groups"][g] for c, b in per_corpus.items()}
        reading[g] = read_group({c: _as_estimate(x).above_zero for c, x in blocks.items()}, default).to_json()
    return {"ranking": ranks, "reading": reading}


def _as_estimate(block: dict[str, Any]) -> Estimate:
    return Estimate(block["delta"], tuple(block["delta_ci"]), warning=block.get("warning"))


def _ci(block: dict[str, Any]) -> str:
    return format_estimate(_as_estimate(block), signed=True, seed_sd=block.get("seed_sd"))


def group_cell(block: dict[str, Any]) -> str:
    """One group's ΔAUC as the tables show it; a group zeroed by default: its 0 and the added-back measurement."""
    if block.get("zeroed_by_default"):
        return f"0 (zeroed by default); added back: {_ci(block['added_back'])}"
    return _ci(block)


def format_attribution(res: dict[str, Any], part: str = "all") -> str:
    """Markdown: the group × corpus table with a reading column (`part` "retrain"), then the labelled-invalid
    post-hoc tables (`part` "posthoc"); "all" gives both."""
    if part not in ("all", "retrain", "posthoc"):
        raise FaceturnError(f"part must be all, retrain or posthoc, got {part!r}")
    corpora = list(res["corpora"])
    groups = list(res["summary"]["reading"])
    default = res.get("default_zero_groups", [])
    lines = [
        f"Leave-one-group-out by retraining ({res['main_norm']} face encoder): ΔAUC = AUC(full) − AUC(group "
        f"zeroed at train and eval), paired over identical {res['split']} frames; 95% CIs from {res['n_resamples']} "
        f"conversation-cluster bootstrap resamples (seed {res['seed']}); training seeds {res['seeds']}. "
        + (
            "The CIs also resample the training seeds, so they cover training noise."
            if len(res["seeds"]) > 1
            else "With one training seed the CIs cover the test conversations only, not training noise (two seeds "
            "of the same model typically differ by a few thousandths of AUC): read |ΔAUC| of that size with care, or "
            "plan k > 1 seeds."
        )
        + (
            f" The full model zeroes {', '.join(default)} by default (the model config's `zero_groups`), so leaving "
            "it out changes nothing (0 by construction); the model retrained with it added back gives the measured "
            "ΔAUC = AUC(with it) − AUC(full)."
            if default
            else ""
        ),
        "",
        "| group | " + " | ".join(corpora) + " | reading |",
        "|---|" + "---|" * len(corpora) + "---|",
    ]
    for g in groups:
        cells = [group_cell(res["corpora"][c]["groups"][g]) for c in corpora]
        reading = format_reading(GroupReading.from_json(res["summary"]["reading"][g]))
        lines.append(f"| {g} | " + " | ".join(cells) + f" | {reading} |")
    if all("audio_only" in res["corpora"][c] for c in corpora):
        cells = [_ci(res["corpora"][c]["audio_only"]) for c in corpora]
        lines.append("| whole face (audio-only model) | " + " | ".join(cells) + " | |")
    cells = [f"{res['corpora'][c]['full_auc']['auc']:.3f}" for c in corpora]
    lines.append("| *AUC of the full model* | " + " | ".join(cells) + " | |")
    lines += ["", "Ranking per corpus: " + "; ".join(f"{c}: {' > '.join(r)}" for c, r in
                                                     res["summary"]["ranking"].items())]  # fmt: skip
    lines += ["", _verdict_sentences(res), *warning_lines(res.get("warnings", []))]
    retrain, posthoc = lines, []
    first = next(iter(res["corpora"].values()))
    for norm in first["posthoc"]:
        posthoc += [
            "",
            f"### INVALID — post-hoc zeroing, {norm} encoder, training seeds {first['posthoc'][norm]['seeds']} (for "
            "comparison only)",
            "",
            "These models were trained with the group present and evaluated with it zeroed (`valid: false`): the "
            "drop mixes what the group tells the model with the shock of an input never seen in training. With a "
            "`layernorm` encoder, zeroing a few large channels rescales all the others, so a group that carries no "
            "information can show a large drop. Read the retrained column instead: AUC(trained with the group) − "
            "AUC(retrained without it).",
            "",
            "| group | " + " | ".join(f"{c} post hoc | {c} retrained" for c in corpora) + " |",
            "|---|" + "---|---|" * len(corpora),
        ]
        for g in groups:
            cells = []
            for c in corpora:
                b = res["corpora"][c]["posthoc"][norm]
                cells.append(_ci(b["groups"][g]) + ("" if b["groups"][g]["valid"] else " (invalid)"))
                cells.append(_ci(b["retrained"][g]) if g in b["retrained"] else "—")
            posthoc.append(f"| {g} | " + " | ".join(cells) + " |")
    if part == "retrain":
        return "\n".join(retrain)
    if part == "posthoc":
        return "\n".join(posthoc[1:])
    return "\n".join(retrain + posthoc)


def _verdict_sentences(res: dict[str, Any]) -> str:
    readings = {g: GroupReading.from_json(r) for g, r in res["summary"]["reading"].items()}
    default = groups_reading(readings, Reading.DEFAULT_HELPS, Reading.DEFAULT_NO_HELP)
    top = "; ".join(f"on {c} the largest ΔAUC is {r[0]}" for c, r in res["summary"]["ranking"].items())
    return (
        f"Reading: {top}. Robust across corpora (CI above zero on every corpus): "
        f"{', '.join(robust_groups(readings)) or 'none'}. Corpus-dependent: "
        f"{', '.join(groups_reading(readings, Reading.CORPUS_DEPENDENT)) or 'none'}. No detectable effect on any "
        f"corpus: {', '.join(groups_reading(readings, Reading.NO_EFFECT)) or 'none'}."
        + "".join(
            f" {g}: {format_reading(readings[g]).removeprefix('zeroed by default; ')} (it is zeroed by default)."
            for g in default
        )
    )
