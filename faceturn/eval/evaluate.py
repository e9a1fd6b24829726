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
from faceturn.stats import balanced_accuracy_at, best_threshold, paired_cluster_bootstrap
from faceturn.store import Corpus

CONDITIONS = ("face", "zeroed")


def check_predictions(pred: Predictions, *, corpus: str | Path | None = None, split: str | None = None) -> None:
    """Refuse a file made for another corpus or split, one that lacks conversations of the split, or one written
    without the face-zeroed predictions."""
    meta = pred.meta
    pred.require_zeroed("evaluate (face vs zeroed)")
    if corpus is not None and Path(meta["corpus"]) != Path(corpus).resolve():
        raise FaceturnError(f"predictions are for corpus {meta['corpus']}, not {Path(corpus).resolve()}")
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


def _auc_block(y, scores: dict[str, np.ndarray], clusters, n_resamples: int, seed: int) -> dict[str, Any]:
    if y.size == 0 or y.min() == y.max():
        return {"n_frames": int(y.size), "n_positive": int(y.sum()), "note": "no positives or no negatives"}
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


def event_scores(pred: Predictions, corpus: str | Path) -> dict[str, np.ndarray]:
    """Per (event, perspective) scores of the VAP events of every conversation in the prediction file."""
    cfg = _event_config(pred)
    store = Corpus(corpus)
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
    pred: Predictions, corpus: str | Path, val: Predictions | None = None, n_resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Shift/hold AUC and balanced accuracy (threshold from `val`), S-pred AUC, shift/hold AUC per silence bin."""
    ev = event_scores(pred, corpus)
    out: dict[str, Any] = {}
    sel = ev["balanced"]
    y = ev["is_shift"][sel]
    out["shift_hold"] = _auc_block(
        y, {c: ev[f"sh_{c}"][sel] for c in CONDITIONS}, ev["conversation"][sel], n_resamples, seed
    )
    if val is not None and y.size and y.min() != y.max():
        ev_val = event_scores(val, val.meta["corpus"])
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
    pred: Predictions, *, val: Predictions | None = None, n_resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """results.json content: frame metrics, event metrics, provenance."""
    keys = ("corpus", "split", "checkpoint", "zero_groups", "eval_zero_groups", "valid", "yield_weight")
    return {
        "predictions": {k: pred.meta.get(k) for k in keys},
        "valid": pred.meta.get("valid", True),  # False: groups zeroed post hoc, never seen zeroed in training
        "n_resamples": n_resamples,
        "seed": seed,
        "frames": frame_metrics(pred, n_resamples, seed),
        "events": event_metrics(pred, pred.meta["corpus"], val, n_resamples, seed),
        "train_config": pred.meta["train_config"],
    }


def _fmt(block: dict[str, Any], cond: str) -> str:
    if "auc" not in block:
        return "n/a"
    lo, hi = block["ci"][cond]
    return f"{block['auc'][cond]:.3f} [{lo:.3f}, {hi:.3f}]"


def _fmt_delta(block: dict[str, Any]) -> str:
    if block.get("delta") is None:
        return "n/a"
    lo, hi = block["delta_ci"]
    return f"{block['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


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
    return "\n".join(lines)
