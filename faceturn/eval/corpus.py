"""Corpus statistics: turn-taking and face figures of a corpus, streamed one conversation at a time, with every
problem its files have (what `faceturn inspect` prints and a study's corpora.json holds).

Statistics stream over conversations (one memory-mapped file at a time) and labels are recomputed from `va` with the
default `EventConfig`, exactly as training and evaluation will see them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceturn.config import to_dict
from faceturn.labels import EventConfig, TurnLabels, turn_labels
from faceturn.schema import FACE_CHANNELS, FACE_GROUPS, N_FACE
from faceturn.store import Corpus, split_leaks
from faceturn.timebase import FRAME_S, frames_to_seconds, mask_to_runs


def floor_transfer_offsets_s(va: np.ndarray, labels: TurnLabels) -> np.ndarray:
    """Floor-transfer offset at each hand-over, in seconds, with sub-frame precision from the voiced fractions.

    Outgoing offset = start of the outgoing speaker's last voiced frame + va·0.08 s, where that frame is the end of the
    voiced run around its last active frame before the hand-over (its partial last frame may be the hand-over frame
    itself). Incoming onset = end of the first voiced frame of the incoming speaker's floor-taking IPU − va·0.08 s.
    Offset = onset − offset: positive is a gap, negative an overlap. Exact when `va` comes from speech intervals.
    """
    va = np.asarray(va, dtype=np.float64)
    n_frames = va.shape[1]
    out = []
    for shift, to in zip(np.asarray(labels.shift_frames).tolist(), np.asarray(labels.shift_to).tolist(), strict=True):
        frm = 1 - to
        before = np.flatnonzero(np.asarray(labels.active[frm, :shift]))
        ipu = next(((a, b) for a, b in labels.ipus[to] if a <= shift < b), None)
        if before.size == 0 or ipu is None:
            continue  # no outgoing speech to measure from
        last = int(before[-1])
        while last + 1 < n_frames and va[frm, last + 1] > 0:
            last += 1
        first = int(ipu[0])
        while first > 0 and va[to, first - 1] > 0:
            first -= 1
        offset_s = frames_to_seconds(last) + va[frm, last] * FRAME_S
        onset_s = frames_to_seconds(first + 1) - va[to, first] * FRAME_S
        out.append(onset_s - offset_s)
    return np.asarray(out, dtype=np.float64)


class _ChannelMoments:
    """Streaming per-channel count, mean, sum of squared deviations (Chan et al. merge), min and max."""

    def __init__(self, n_channels: int):
        self.n = 0
        self.mean = np.zeros(n_channels)
        self.m2 = np.zeros(n_channels)
        self.lo = np.full(n_channels, np.inf)
        self.hi = np.full(n_channels, -np.inf)

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        x = np.asarray(x, dtype=np.float64)
        n_b, mean_b = len(x), x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + delta**2 * self.n * n_b / n
        self.n = n
        self.lo = np.minimum(self.lo, x.min(axis=0))
        self.hi = np.maximum(self.hi, x.max(axis=0))

    def summary(self) -> dict[str, dict[str, dict[str, float | None]]]:
        def stat(i: int) -> dict[str, float | None]:
            if self.n == 0:
                return dict.fromkeys(("mean", "std", "min", "max"))
            std = float(np.sqrt(self.m2[i] / self.n))
            return {"mean": float(self.mean[i]), "std": std, "min": float(self.lo[i]), "max": float(self.hi[i])}

        return {g: {FACE_CHANNELS[i]: stat(i) for i in ix} for g, ix in FACE_GROUPS.items()}


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def corpus_statistics(corpus: Corpus, *, validate: bool = False, progress: bool = False) -> dict[str, Any]:
    """Turn-taking and face statistics of a corpus, streamed one conversation at a time.

    `problems` lists every manifest and file problem found on the way ("path: problem"); unusable conversations are
    left out of the figures. `validate` adds the full value scan of each file. Fractions are of frames: speech = at
    least one participant active, overlap = both (a part of speech), silence = neither.
    """
    cfg = EventConfig()
    problems = list(corpus.manifest_problems)
    split_frames: dict[str, list[int]] = {}
    n_frames = n_speech = n_overlap = n_shifts = n_backchannels = n_face = 0
    offsets = []
    moments = _ChannelMoments(N_FACE)
    for entry, conv, found in corpus.scan(validate=validate, progress=progress):
        problems += found
        if conv is None:
            continue
        va = np.asarray(conv.va, dtype=np.float32)
        labels = turn_labels(va, cfg)
        active = np.asarray(labels.active, dtype=bool)
        split_frames.setdefault(entry.split, []).append(conv.n_frames)
        n_frames += conv.n_frames
        n_speech += int(active.any(axis=0).sum())
        n_overlap += int(active.all(axis=0).sum())
        n_shifts += len(labels.shift_frames)
        n_backchannels += sum(len(mask_to_runs(row)) for row in np.asarray(labels.backchannel, dtype=bool))
        offsets.append(floor_transfer_offsets_s(va, labels))
        present = np.asarray(conv.face_present) == 1
        n_face += int(present.sum())
        moments.add(np.asarray(conv.face)[present])
    off = np.concatenate(offsets) if offsets else np.zeros(0)
    minutes = frames_to_seconds(n_frames) / 60
    per_minute = (lambda n: n / minutes) if n_frames else (lambda n: None)
    fraction = (lambda n: n / n_frames) if n_frames else (lambda n: None)
    return {
        "corpus": str(corpus.root),
        "conversations": sum(len(v) for v in split_frames.values()),
        "hours": frames_to_seconds(n_frames) / 3600,
        "splits": {
            s: {"conversations": len(v), "hours": frames_to_seconds(sum(v)) / 3600}
            for s, v in sorted(split_frames.items())
        },
        "split_leaks": split_leaks(corpus.entries),
        "speech_fraction": fraction(n_speech),
        "overlap_fraction": fraction(n_overlap),
        "silence_fraction": fraction(n_frames - n_speech),
        "handovers": n_shifts,
        "handovers_per_minute": per_minute(n_shifts),
        "median_floor_transfer_offset_s": _median(off),
        "median_gap_s": _median(off[off > 0]),
        "median_overlap_s": _median(off[off < 0]),
        "gaps": int((off > 0).sum()),
        "overlaps": int((off < 0).sum()),
        "backchannels": n_backchannels,
        "backchannels_per_minute": per_minute(n_backchannels),
        "face_present_rate": n_face / (2 * n_frames) if n_frames else None,
        "face_channels": moments.summary(),
        "label_config": to_dict(cfg),
        "problems": problems,
    }


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_summary(stats: dict[str, Any]) -> str:
    """The readable form of corpus_statistics()."""
    splits = ", ".join(f"{s or '(none)'} {v['conversations']} ({v['hours']:.3f} h)" for s, v in stats["splits"].items())
    lines = [
        f"corpus: {stats['corpus']}",
        f"conversations: {stats['conversations']}",
        f"hours: {stats['hours']:.3f}",
        f"splits: {splits}",
        *(f"warning: {leak}" for leak in stats["split_leaks"]),
        f"speech {_fmt(stats['speech_fraction'])}, overlap {_fmt(stats['overlap_fraction'])}, "
        f"silence {_fmt(stats['silence_fraction'])} (fractions of frames; overlap is part of speech)",
        f"hand-overs: {stats['handovers']} ({_fmt(stats['handovers_per_minute'], '.2f')} per minute)",
        f"median floor-transfer offset: {_fmt(stats['median_floor_transfer_offset_s'], '+.3f')} s; "
        f"median gap {_fmt(stats['median_gap_s'], '+.3f')} s (n={stats['gaps']}); "
        f"median overlap {_fmt(stats['median_overlap_s'], '+.3f')} s (n={stats['overlaps']})",
        f"backchannels: {stats['backchannels']} ({_fmt(stats['backchannels_per_minute'], '.2f')} per minute)",
        f"face present: {_fmt(stats['face_present_rate'])} of participant-frames",
        "face channels over face-present frames (mean, std, min, max):",
    ]
    for group, channels in stats["face_channels"].items():
        lines.append(f"  {group}")
        for name, s in channels.items():
            values = "  ".join(f"{_fmt(s[k], '9.3f')}" for k in ("mean", "std", "min", "max"))
            lines.append(f"    {name:<20} {values}")
    return "\n".join(lines)
