"""Step 4, the measuring half: turn-taking metrics of a talk file (`faceturn talk`), a pure function of it, with
conversation-cluster bootstrap CIs, paired face vs zeroed (docs/design.md, "Step 4: turn timing").

The model's voice activity is the voice reader's read-out of its generated audio (P(active) ≥ 0.5; the reader's
accuracy and AUC on the real test audio come with every result); its IPUs fill its own gaps shorter than
`ipu_gap_s`, and an IPU shorter than `bc_max_s` is a backchannel, as in the labels. "Takes the floor" = starts an
IPU that is not a backchannel. The interlocutor's events come from the recording (its audio is replayed, open loop):

- **pause handling**: at the interlocutor's within-turn pauses (VAP holds), the rate at which the model takes the
  floor during the pause (lower is better);
- **smooth turn-taking**: at its turn ends (VAP shifts), the rate at which the model takes the floor within
  `response_window_s` of the silence's start, its response latency, and the latency compared with the recording's own
  human responses at the same events (difference of medians, 1-Wasserstein distance);
- **yielding**: when the interlocutor starts a turn while the model talks, how often the model stops within
  `yield_window_s`, and how fast;
- **backchannels**: the model's short IPUs started while the interlocutor holds the floor, per minute of its floor,
  and the share started while the interlocutor is speaking (rather than in its pauses);
- **speech, overlap and silence fractions** of the talked frames (self speaks; both; neither).

An event where the model is already speaking when the silence starts is not eligible for the take-over rates (it
cannot start what it is doing); how many events were eligible is reported. Every metric is also computed on the
recording's own self ("corpus"), with the same definitions, as the human reference. Rates are ratios of sums over
events, medians are lower weighted medians; every CI resamples conversations, the same draw for the face and the
zeroed condition (`faceturn.stats.paired_cluster_statistic`); Moshi-sampled runs pool their seeds (a conversation's
seeds are resampled together).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from faceturn.config import from_dict
from faceturn.errors import ConfigError, FaceturnError
from faceturn.eval.talk import HOLD, ONSET, SHIFT, Talk
from faceturn.eval.voice import reader_sentence
from faceturn.labels import EventConfig, ipu_bounds
from faceturn.results import Estimate, format_estimate, warning_lines
from faceturn.stats import (
    MIN_CONVERSATIONS,
    flag_few_conversations,
    paired_cluster_statistic,
    weighted_median,
    weighted_ratio,
    weighted_wasserstein,
)
from faceturn.timebase import FRAME_S, duration_to_frames

TALK_KEYS = ("corpus", "split", "checkpoint", "yield_weight", "zero_groups", "runs", "gate", "talked_frames", "text")


@dataclass(frozen=True)
class TimingConfig:
    """Windows of the timing metrics and the bootstrap; saved in the result."""

    response_window_s: float = 2.0  # a take-over at a turn end counts when it starts within this long
    yield_window_s: float = 2.0  # the model yields when it stops within this long after the interlocutor starts
    resamples: int = 2000
    seed: int = 0
    min_conversations: int = MIN_CONVERSATIONS  # CIs from fewer conversations carry a warning

    def __post_init__(self) -> None:
        for name in ("response_window_s", "yield_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a duration > 0 s, got {value}")
        if self.resamples < 1:
            raise ConfigError(f"resamples must be >= 1, got {self.resamples}")


# ------------------------------------------------------------------------------------------------ one talked row
def event_outcomes(
    active: np.ndarray, kinds: np.ndarray, starts: np.ndarray, stops: np.ndarray, labels: EventConfig,
    config: TimingConfig,
) -> dict[str, np.ndarray]:  # fmt: skip
    """What a speaker whose activity is `active` [T] bool did at each interlocutor event (kinds, [start, stop)
    frames): per event `eligible` (holds and shifts: not already speaking at the silence's start; onsets: speaking
    when the interlocutor starts), `taken` (holds: started a non-backchannel IPU during the pause; shifts: within the
    response window; onsets: stopped within the yield window) and `latency_s` (shifts: from the silence's start to the
    IPU's first frame; onsets: from the interlocutor's first frame to the speaker's first silent one; NaN otherwise)."""
    ipu_start, ipu_stop = ipu_bounds(np.asarray(active, bool), labels)
    long = (ipu_stop - ipu_start) >= labels.bc_max_frames
    long_starts = ipu_start[long]
    response = duration_to_frames(config.response_window_s)
    yield_frames = duration_to_frames(config.yield_window_s)
    n = len(kinds)
    eligible, taken, latency = np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan)
    for e, (kind, a, b) in enumerate(zip(kinds.tolist(), starts.tolist(), stops.tolist(), strict=True)):
        i = int(np.searchsorted(ipu_start, a, side="right")) - 1  # the last IPU starting at or before a
        covering = i >= 0 and ipu_stop[i] > a
        if kind == ONSET:
            eligible[e] = covering
            if covering and ipu_stop[i] - a <= yield_frames:
                taken[e], latency[e] = True, (ipu_stop[i] - a) * FRAME_S
            continue
        eligible[e] = not covering
        j = int(np.searchsorted(long_starts, a, side="left"))  # the first long IPU starting at or after a
        if not eligible[e] or j >= long_starts.size:
            continue
        first = int(long_starts[j])
        if kind == HOLD:
            taken[e] = first < b
        elif kind == SHIFT and first - a < response:
            taken[e], latency[e] = True, (first - a) * FRAME_S
    return {"eligible": eligible, "taken": taken, "latency_s": latency}


def row_outcomes(
    active: np.ndarray, other_active: np.ndarray, other_floor: np.ndarray, labels: EventConfig
) -> dict[str, float]:
    """Frame-level figures of one talked row: speech, overlap and silence frames, backchannels (short IPUs) started
    while the interlocutor holds the floor (`other_floor` [T] bool) and how many of them while it speaks, and the
    minutes of its floor."""
    active, other_active, other_floor = (np.asarray(x, bool) for x in (active, other_active, other_floor))
    ipu_start, ipu_stop = ipu_bounds(active, labels)
    short = (ipu_stop - ipu_start) < labels.bc_max_frames
    bc = ipu_start[short & other_floor[ipu_start]] if ipu_start.size else ipu_start
    return {
        "frames": float(active.size),
        "speech": float(active.sum()),
        "overlap": float((active & other_active).sum()),
        "silence": float((~active & ~other_active).sum()),
        "backchannels": float(bc.size),
        "backchannels_in_speech": float(other_active[bc].sum()),
        "floor_minutes": float(other_floor.sum()) * FRAME_S / 60.0,
    }


# ------------------------------------------------------------------------------------------------------ metrics
def _ratio(num: str, den: str):
    return lambda t: (t[num], t[den]), weighted_ratio


def _rate_of(kind: int):
    def arrays(t):
        sel = t["kind"] == kind
        return t["taken"] & t["eligible"] & sel, t["eligible"] & sel

    return arrays, weighted_ratio


def _margin(w: np.ndarray, taken: np.ndarray, shift: np.ndarray, hold: np.ndarray) -> np.ndarray:
    return weighted_ratio(w, taken & shift, shift) - weighted_ratio(w, taken & hold, hold)


def _median_difference(w: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return weighted_median(w, a) - weighted_median(w, b)


def _latency(kind: int, human: bool = False):
    return lambda t: (
        (np.where(t["kind"] == kind, t["latency_s"], np.nan),)
        + ((np.where(t["kind"] == kind, t["human_latency_s"], np.nan),) if human else ())
    )


# name → (level, arrays of a table, statistic, digits, signed, whether the corpus has its own value)
Metric = tuple[str, Callable[[dict[str, np.ndarray]], tuple[np.ndarray, ...]], Callable[..., np.ndarray], int, bool,
               bool]  # fmt: skip
METRICS: dict[str, Metric] = {
    "pause_takeover_rate": ("event", *_rate_of(HOLD), 3, False, True),
    "shift_takeover_rate": ("event", *_rate_of(SHIFT), 3, False, True),
    "takeover_margin": ("event", lambda t: (t["taken"] & t["eligible"], t["eligible"] & (t["kind"] == SHIFT),
                                           t["eligible"] & (t["kind"] == HOLD)), _margin, 3, True, True),
    "response_latency_median_s": ("event", _latency(SHIFT), weighted_median, 2, False, True),
    "response_latency_vs_corpus_s": ("event", _latency(SHIFT, human=True), _median_difference, 2, True, False),
    "response_latency_wasserstein_s": ("event", _latency(SHIFT, human=True), weighted_wasserstein, 2, False, False),
    "yield_rate": ("event", *_rate_of(ONSET), 3, False, True),
    "yield_latency_median_s": ("event", _latency(ONSET), weighted_median, 2, False, True),
    "backchannels_per_min": ("row", *_ratio("backchannels", "floor_minutes"), 2, False, True),
    "backchannel_in_speech_share": ("row", *_ratio("backchannels_in_speech", "backchannels"), 3, False, True),
    "speech_fraction": ("row", *_ratio("speech", "frames"), 3, False, True),
    "overlap_fraction": ("row", *_ratio("overlap", "frames"), 3, False, True),
    "silence_fraction": ("row", *_ratio("silence", "frames"), 3, False, True),
}  # fmt: skip
LABELS = {
    "pause_takeover_rate": "take-over rate at the interlocutor's pauses (holds; lower is better)",
    "shift_takeover_rate": "take-over rate at its turn ends (shifts), within the response window",
    "takeover_margin": "take-over margin: rate at shifts − rate at pauses",
    "response_latency_median_s": "response latency at shifts, median (s)",
    "response_latency_vs_corpus_s": "response latency − the recording's human latency, medians (s)",
    "response_latency_wasserstein_s": "response latency vs the human latencies, 1-Wasserstein (s)",
    "yield_rate": "yields when the interlocutor starts a turn over it, within the yield window",
    "yield_latency_median_s": "time to stop after the interlocutor starts, median (s)",
    "backchannels_per_min": "backchannels per minute of the interlocutor's floor",
    "backchannel_in_speech_share": "share of backchannels started while the interlocutor speaks",
    "speech_fraction": "speech fraction (self speaks)",
    "overlap_fraction": "overlap fraction (both speak)",
    "silence_fraction": "silence fraction (neither speaks)",
}


def _tables(talk: Talk, config: TimingConfig) -> tuple[dict, dict]:
    """Per talked row and per recorded (conversation, self): event and row tables (dicts of arrays)."""
    a = talk.arrays
    labels = from_dict(EventConfig, talk.meta["labels"])
    events: dict[tuple[int, int], np.ndarray] = {}
    for i, s in {(int(c), int(p)) for c, p in zip(a["event_conversation"], a["event_self"], strict=True)}:
        events[(i, s)] = np.flatnonzero((a["event_conversation"] == i) & (a["event_self"] == s))

    def tables(active: np.ndarray, i: int, s: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        n = int(a["conversation_frames"][i])
        idx = events.get((i, s), np.zeros(0, np.int64))
        kinds, starts, stops = a["event_kind"][idx], a["event_start"][idx], a["event_stop"][idx]
        ev = event_outcomes(active[:n], kinds, starts, stops, labels, config)
        ev["kind"] = kinds.astype(np.int64)
        other = a["corpus_active"][i, 1 - s, :n]
        return ev, row_outcomes(active[:n], other, a["corpus_floor"][i, :n] == 1 - s, labels)

    human = {}
    for i in range(a["conversation_frames"].size):
        for s in (0, 1):
            human[(i, s)] = tables(a["corpus_active"][i, s], i, s)
    talked = {}
    for q in range(a["voice"].shape[0]):
        i, s = int(a["row_conversation"][q]), int(a["row_self"][q])
        key = (int(a["row_run"][q]), bool(a["row_gated"][q]), bool(a["row_face"][q]), i, s)
        if key in talked:
            raise FaceturnError(f"{talk.label}: row {q} repeats run {key[0]}, conversation {i}, self {s}")
        talked[key] = tables(a["voice"][q] >= 0.5, i, s)
    return human, talked


def _stack(entries: list[tuple[dict[str, np.ndarray], dict[str, float]]], clusters: list[int], level: str):
    """Concatenate event tables (level "event") or row figures ("row") with each entry's conversation."""
    if level == "event":
        keys = entries[0][0].keys() if entries else ()
        table = {k: np.concatenate([e[0][k] for e in entries]) for k in keys}
        cluster = np.concatenate([np.full(e[0]["kind"].size, c) for e, c in zip(entries, clusters, strict=True)])
    else:
        table = {k: np.asarray([e[1][k] for e in entries]) for k in entries[0][1]}
        cluster = np.asarray(clusters)
    return table, cluster


def timing_metrics(talk: Talk, config: TimingConfig = TimingConfig()) -> dict[str, Any]:
    """Every turn-timing metric of a talk file, per policy (sampling, gated), face vs zeroed, and on the recording's
    own self (see the module docstring); a JSON-ready dict."""
    human, talked = _tables(talk, config)
    runs = talk.meta["runs"]
    boot = {"n_resamples": config.resamples, "seed": config.seed}
    pairs = sorted(human)

    def metric_block(name: str, data: dict[str, tuple[np.ndarray, ...]], cluster: np.ndarray) -> dict[str, Any]:
        if np.unique(cluster).size < 2:
            return {"note": "fewer than 2 conversations: no CI"}
        return paired_cluster_statistic(METRICS[name][2], data, cluster, **boot)

    # the human reference: the recording's own self at the same events
    corpus: dict[str, Any] = {}
    for name, (level, arrays, _, _, _, own) in METRICS.items():
        if not own:
            continue
        table, cluster = _stack([human[k] for k in pairs], [k[0] for k in pairs], level)
        corpus[name] = metric_block(name, {"corpus": arrays(table)}, cluster)
    policies: dict[str, Any] = {}
    for kind in dict.fromkeys(r["sampling"] for r in runs):
        run_ids = [r for r, spec in enumerate(runs) if spec["sampling"] == kind]
        for gated in sorted({key[1] for key in talked}):
            keys = [(r, gated, i, s) for r in run_ids for i, s in pairs]
            missing = [k for k in keys for f in (True, False) if (k[0], k[1], f, k[2], k[3]) not in talked]
            if missing:
                raise FaceturnError(f"{talk.label}: run {missing[0][0]} lacks its paired face/zeroed rows")
            block: dict[str, Any] = {"runs": run_ids, "gated": gated, "metrics": {}, "events": {}}
            stacked = {}
            for face in (True, False):
                entries = []
                for r, g, i, s in keys:
                    ev, row = talked[(r, g, face, i, s)]
                    entries.append(({**ev, "human_latency_s": human[(i, s)][0]["latency_s"]}, row))
                stacked[face] = {lv: _stack(entries, [k[2] for k in keys], lv) for lv in ("event", "row")}
            for name, (level, arrays, _, _, _, _) in METRICS.items():
                (tf, cluster), (tz, _) = stacked[True][level], stacked[False][level]
                block["metrics"][name] = metric_block(name, {"face": arrays(tf), "zeroed": arrays(tz)}, cluster)
            for face, cond in ((True, "face"), (False, "zeroed")):
                t = stacked[face]["event"][0]
                block["events"][cond] = {
                    name: {
                        "events": int((t["kind"] == k).sum()),
                        "eligible": int((t["eligible"] & (t["kind"] == k)).sum()),
                    }
                    for name, k in (("hold", HOLD), ("shift", SHIFT), ("onset", ONSET))
                }
            policies[kind + ("+gate" if gated else "")] = block
    meta = talk.meta
    res = {
        "talk": {k: meta.get(k) for k in TALK_KEYS},
        "reader": meta["reader"],
        "config": asdict(config),
        "corpus_reference": corpus,
        "policies": policies,
    }
    res["warnings"] = flag_few_conversations(res, config.min_conversations)
    return res


# ---------------------------------------------------------------------------------------------------------- table
def _cell(block: dict[str, Any], cond: str | None, digits: int, signed: bool) -> str:
    if "note" in block:
        return "n/a"
    if cond is None:
        value, ci = block.get("delta"), block.get("delta_ci")
    else:
        value, ci = block["value"].get(cond), block["ci"].get(cond)
    if value is None:
        return "n/a"
    return format_estimate(Estimate(value, None if ci is None else tuple(ci), warning=block.get("warning")), digits,
                           signed)  # fmt: skip


def format_timing(res: dict[str, Any]) -> str:
    """Markdown tables of a timing result: per sampling, ungated and gated side by side, and the human reference."""
    t = res["talk"]
    lines = [f"Step 4 turn timing of {t['checkpoint']} talking on the {t['split']} split of {t['corpus']} "
             f"(yield_weight {t['yield_weight']}).", "", reader_sentence(res["reader"])]  # fmt: skip
    if t.get("gate"):
        g = t["gate"]
        lines.append(f"Gate θ (chosen on the {g['split']!r} split): face {g['face']:.3f}, zeroed {g['zeroed']:.3f}.")
    lines.append(f"95% CIs from {res['config']['resamples']} conversation-cluster bootstrap resamples (seed "
                 f"{res['config']['seed']}), paired face vs zeroed.")  # fmt: skip
    for kind in dict.fromkeys(p.split("+")[0] for p in res["policies"]):
        parts = [p for p in (kind, f"{kind}+gate") if p in res["policies"]]
        header = ["metric"]
        for p in parts:
            g = " (gated)" if p.endswith("+gate") else ""
            header += [f"face{g}", f"zeroed{g}", f"Δ face − zeroed{g}"]
        header.append("corpus (humans)")
        lines += ["", f"**{kind} sampling**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, (_, _, _, digits, signed, own) in METRICS.items():
            cells = [LABELS[name]]
            for p in parts:
                b = res["policies"][p]["metrics"][name]
                cells += [_cell(b, "face", digits, signed), _cell(b, "zeroed", digits, signed),
                          _cell(b, None, digits, True)]  # fmt: skip
            cells.append(_cell(res["corpus_reference"][name], "corpus", digits, signed) if own else "")
            lines.append("| " + " | ".join(cells) + " |")
        ev = res["policies"][parts[0]]["events"]["face"]
        lines.append("")
        lines.append("Events (" + parts[0] + ", face): " + ", ".join(f"{k} {v['eligible']} eligible of {v['events']}"
                                                                   for k, v in ev.items()) + ".")  # fmt: skip
    return "\n".join(lines + warning_lines(res.get("warnings", [])))
