"""Step 3 and the VAP-comparable metrics: pure functions of prediction files (see faceturn.eval.predict).

- Per-frame ROC-AUC of P(yield) with the face as given vs with the face zeroed, paired over identical scored frames,
  with a conversation-clustered bootstrap CI on ΔAUC; overall and by who holds the floor (self / interlocutor).
- Events as the VAP papers (Ekstedt & Skantze) define them, recomputed from the corpus' voice activity: shift vs
  hold at silences (event score = mean P(yield) over the silence; AUC, and balanced accuracy at the threshold chosen
  on the validation predictions), shift prediction (mean P(yield) over the 0.5 s before the silence), and shift/hold
  AUC by silence-duration bin. Each event is scored from both perspectives; CIs cluster by conversation.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.config import from_dict
from faceturn.errors import FaceturnError
from faceturn.eval.predict import Predictions
from faceturn.labels import EventConfig, turn_labels
from faceturn.results import Estimate, format_estimate, warning_lines
from faceturn.stats import (
    MIN_CONVERSATIONS,
    balanced_accuracy_at,
    best_threshold,
    flag_few_conversations,
    paired_cluster_bootstrap,
)
from faceturn.store import Corpus

CONDITIONS = ("face", "zeroed")


def check_predictions(pred: Predictions, *, corpus: str | Path | None = None, split: str | None = None) -> None:
    """Refuse a file made for another corpus or split, one that lacks conversations of the split, or one written
    without the face-zeroed predictions."""
    meta = pred.meta
    pred.require_zeroed("evaluate (face vs zeroed)")
    if corpus is not None:
        pred.corpus_root(corpus)  # the corpus it was made from (same manifest fingerprint), wherever it is now
    if split is not None and meta["split"] != split:
        raise FaceturnError(f"predictions are for split {meta['split']!r}, not {split!r}")
    if corpus is not None:
        expected = set(Corpus(corpus).ids(meta["split"]))
        have = {meta["conversations"][i] for i in np.unique(pred.conversation)}
        missing = sorted(expected - have)
        if missing:
            raise FaceturnError(
                f"predictions lack {len(missing)} conversations of split {meta['split']!r}: {missing[:5]}"
            )


def check_validation(val: Predictions, pred: Predictions) -> None:
    """The event metrics' threshold is chosen on `val`: predictions of the same checkpoint on the same corpus, of the
    run's validation split (never the split being evaluated). Anything else is refused naming both files."""
    val_split = pred.meta.get("train_config", {}).get("data", {}).get("val_split", "val")
    vs, ps = val.meta["split"], pred.meta["split"]
    if vs == ps or vs != val_split:
        raise FaceturnError(
            f"{val.label}: --val-pred holds the {vs!r} split, not the run's validation split {val_split!r} "
            f"({pred.label} is the {ps!r} split): the threshold must be chosen on validation predictions"
        )
    if val.meta["corpus_fingerprint"] != pred.meta["corpus_fingerprint"]:
        raise FaceturnError(
            f"{val.label}: --val-pred was made from corpus {val.meta['corpus']}, {pred.label} from "
            f"{pred.meta['corpus']} (their manifests differ)"
        )
    if val.meta.get("checkpoint") != pred.meta.get("checkpoint"):
        raise FaceturnError(
            f"{val.label}: --val-pred was made by checkpoint {val.meta.get('checkpoint')}, {pred.label} by "
            f"{pred.meta.get('checkpoint')}: the threshold must come from the same model"
        )


def _auc_block(y, scores: dict[str, np.ndarray], clusters, n_resamples: int, seed: int) -> dict[str, Any]:
    if y.size == 0 or y.min() == y.max():
        return {"n_frames": int(y.size), "n_positive": int(y.sum()), "note": "no positives or no negatives"}
    if np.unique(clusters).size < 2:  # a conversation-cluster CI needs at least two conversations
        return {"n_frames": int(y.size), "n_positive": int(y.sum()), "note": "events from fewer than 2 conversations"}
    return paired_cluster_bootstrap(y, scores, clusters, n_resamples=n_resamples, seed=seed).to_dict()


def frame_metrics(pred: Predictions, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Face vs zeroed AUC with paired ΔAUC CI, overall and by floor holder, on scored frames."""
    scored = pred.m.astype(bool)
    if not scored.any() or pred.y[scored].min() == pred.y[scored].max():
        raise FaceturnError(
            f"split {pred.meta['split']!r} has no scored frames with both classes "
            f"({int(pred.y[scored].sum())} positive of {int(scored.sum())}): AUC is undefined"
        )
    out = {}
    for name, sel in (
        ("all", scored),
        ("self_holds", scored & (pred.holder == 1)),
        ("interlocutor_holds", scored & (pred.holder == 0)),
    ):
        scores = {"face": pred.p_face[sel], "zeroed": pred.require_zeroed("face vs zeroed AUC")[sel]}
        out[name] = _auc_block(pred.y[sel], scores, pred.conversation[sel], n_resamples, seed)
    return out


def _event_config(pred: Predictions) -> EventConfig:
    """The turn-label settings the model was trained with: events are cut exactly as its targets were."""
    return from_dict(EventConfig, pred.meta["train_config"]["labels"])


def event_scores(pred: Predictions, corpus: str | Path | None = None) -> dict[str, np.ndarray]:
    """Per (event, perspective) scores of the VAP events of every conversation in the prediction file, from the
    voice activity of the corpus it was made from (`corpus`, default: the one it names; checked by fingerprint)."""
    cfg = _event_config(pred)
    store = Corpus(pred.corpus_root(corpus))
    rows: dict[str, list] = {k: [] for k in ("conversation", "is_shift", "balanced", "bin", "spred", "spred_balanced")}
    rows.update({f"{kind}_{c}": [] for kind in ("sh", "spred") for c in CONDITIONS})
    order = np.lexsort((pred.frame, pred.perspective, pred.conversation))
    conv, persp, frame = pred.conversation[order], pred.perspective[order], pred.frame[order]
    p = {"face": pred.p_face[order], "zeroed": pred.require_zeroed("event metrics")[order]}
    bounds = np.flatnonzero(np.r_[True, (conv[1:] != conv[:-1]) | (persp[1:] != persp[:-1]), True])
    for a, b in itertools.pairwise(bounds):
        ci, n = int(conv[a]), b - a
        if not np.array_equal(frame[a:b], np.arange(n)):
            raise FaceturnError(
                f"predictions of conversation {pred.meta['conversations'][ci]!r} do not cover every frame"
            )
        va = np.asarray(store.load(pred.meta["conversations"][ci]).va, dtype=np.float32)
        ev = turn_labels(va, cfg).events
        for i in range(ev.is_shift.size):
            s0, s1 = int(ev.silence_start[i]), int(ev.silence_stop[i])
            w0 = int(ev.spred_start[i])
            for c in CONDITIONS:
                rows[f"sh_{c}"].append(p[c][a + s0 : a + s1].mean())
                rows[f"spred_{c}"].append(p[c][a + w0 : a + s0].mean() if ev.spred[i] else np.nan)
            rows["conversation"].append(ci)
            rows["is_shift"].append(bool(ev.is_shift[i]))
            rows["balanced"].append(bool(ev.balanced[i]))
            rows["bin"].append(int(ev.silence_bin[i]))
            rows["spred"].append(bool(ev.spred[i]))
            rows["spred_balanced"].append(bool(ev.spred_balanced[i]))
    return {k: np.asarray(v) for k, v in rows.items()}


def event_metrics(
    pred: Predictions,
    corpus: str | Path | None,
    val: Predictions | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Shift/hold AUC and balanced accuracy (threshold from `val`, which `check_validation` vets), S-pred AUC,
    shift/hold AUC per silence bin."""
    if val is not None:
        check_validation(val, pred)
    ev = event_scores(pred, corpus)
    out: dict[str, Any] = {}
    sel = ev["balanced"]
    y = ev["is_shift"][sel]
    out["shift_hold"] = _auc_block(
        y, {c: ev[f"sh_{c}"][sel] for c in CONDITIONS}, ev["conversation"][sel], n_resamples, seed
    )
    if val is not None and y.size and y.min() != y.max():
        ev_val = event_scores(val, corpus)  # the same corpus (check_validation)
        vsel = ev_val["balanced"]
        out["shift_hold"]["balanced_accuracy"] = {}
        for c in CONDITIONS:
            if ev_val["is_shift"][vsel].min() == ev_val["is_shift"][vsel].max():
                break
            thr = best_threshold(ev_val["is_shift"][vsel], ev_val[f"sh_{c}"][vsel])
            out["shift_hold"]["balanced_accuracy"][c] = {
                "threshold_from_val": thr,
                "value": balanced_accuracy_at(y, ev[f"sh_{c}"][sel], thr),
            }
    sp = ev["spred_balanced"]
    out["shift_prediction"] = _auc_block(
        ev["is_shift"][sp], {c: ev[f"spred_{c}"][sp] for c in CONDITIONS}, ev["conversation"][sp], n_resamples, seed
    )
    bins = _event_config(pred).silence_bins_s
    out["shift_hold_by_silence_s"] = {}
    for bi, lo in enumerate(bins):
        hi = bins[bi + 1] if bi + 1 < len(bins) else None
        b = sel & (ev["bin"] == bi)
        label = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        out["shift_hold_by_silence_s"][label] = _auc_block(
            ev["is_shift"][b], {c: ev[f"sh_{c}"][b] for c in CONDITIONS}, ev["conversation"][b], n_resamples, seed
        )
    return out


def evaluate_predictions(
    pred: Predictions,
    *,
    val: Predictions | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    min_conversations: int = MIN_CONVERSATIONS,
    corpus: str | Path | None = None,
) -> dict[str, Any]:
    """results.json content: frame metrics, event metrics, provenance. A CI over fewer than `min_conversations`
    conversations carries a warning (in its block, in `warnings` and in the tables). The events are read from
    `corpus` (default: the one the file names), which must be the corpus the predictions were made from."""
    keys = ("corpus", "split", "checkpoint", "zero_groups", "eval_zero_groups", "valid", "yield_weight")
    res = {
        "predictions": {k: pred.meta.get(k) for k in keys},
        "valid": pred.meta.get("valid", True),  # False: groups zeroed post hoc, never seen zeroed in training
        "n_resamples": n_resamples,
        "seed": seed,
        "frames": frame_metrics(pred, n_resamples, seed),
        "events": event_metrics(pred, corpus, val, n_resamples, seed),
        "train_config": pred.meta["train_config"],
    }
    res["warnings"] = flag_few_conversations(res, min_conversations)
    return res


def _fmt(block: dict[str, Any], cond: str) -> str:
    if "auc" not in block:
        return "n/a"
    return format_estimate(Estimate(block["auc"][cond], tuple(block["ci"][cond]), warning=block.get("warning")))


def _fmt_delta(block: dict[str, Any]) -> str:
    if block.get("delta") is None:
        return "n/a"
    delta = Estimate(block["delta"], tuple(block["delta_ci"]), warning=block.get("warning"))
    return format_estimate(delta, signed=True)


def format_results(res: dict[str, Any]) -> str:
    """Markdown tables of results.json."""
    lines = [
        f"Predictions: {res['predictions']['split']} split of {res['predictions']['corpus']}",
        *(
            []
            if res.get("valid", True)
            else [
                f"**INVALID: groups {res['predictions']['eval_zero_groups']} zeroed post hoc; the checkpoint was "
                f"trained with {res['predictions']['zero_groups']} zeroed, so these numbers mix the groups' "
                "information with a distribution shift.**"
            ]
        ),
        f"95% CIs from {res['n_resamples']} conversation-cluster bootstrap resamples (seed {res['seed']}).",
        "",
        "| frames | n | AUC face | AUC face zeroed | ΔAUC (face − zeroed) |",
        "|---|---|---|---|---|",
    ]
    for name, block in res["frames"].items():
        lines.append(f"| {name} | {block['n_frames']} | {_fmt(block, 'face')} | {_fmt(block, 'zeroed')} | "
                     f"{_fmt_delta(block)} |")  # fmt: skip
    lines += ["", "| VAP events | n | AUC face | AUC face zeroed | ΔAUC |", "|---|---|---|---|---|"]
    ev = res["events"]
    rows = [("shift/hold", ev["shift_hold"]), ("shift prediction", ev["shift_prediction"])]
    rows += [(f"shift/hold, silence {k} s", v) for k, v in ev["shift_hold_by_silence_s"].items()]
    for name, block in rows:
        lines.append(f"| {name} | {block['n_frames']} | {_fmt(block, 'face')} | {_fmt(block, 'zeroed')} | "
                     f"{_fmt_delta(block)} |")  # fmt: skip
    ba = ev["shift_hold"].get("balanced_accuracy")
    if ba:
        parts = [f"{c} {v['value']:.3f} (threshold {v['threshold_from_val']:.3f} from val)" for c, v in ba.items()]
        lines += ["", "Shift/hold balanced accuracy: " + "; ".join(parts)]
    return "\n".join(lines + warning_lines(res.get("warnings", [])))
