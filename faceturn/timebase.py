"""One clock for every stream: the 12.5 Hz Mimi frame grid.

Frame k covers [0.08·k, 0.08·(k+1)) s. Every seconds→frames conversion in faceturn goes through this module so
that a horizon or a minimum duration means the same number of frames everywhere. Durations that are minimums or
horizons round *up* (1.0 s → 13 frames, 0.25 s → 4 frames): a condition "at least 1 s" must never be satisfied by
0.96 s. A tiny tolerance absorbs float error, so 0.4 s is exactly 5 frames, not 6.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

FRAME_RATE = 12.5  # Hz, Mimi's frame rate
FRAME_S = 1.0 / FRAME_RATE  # 0.08 s
_EPS = 1e-6  # in frames: absorbs float error in s·12.5


def duration_to_frames(duration_s: float) -> int:
    """Frames needed to cover a duration (a minimum or a horizon): ceil, 1.0 s → 13, 0.25 s → 4."""
    if duration_s < 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration must be finite and >= 0, got {duration_s!r} s")
    return math.ceil(duration_s * FRAME_RATE - _EPS)


def time_to_frame(time_s: float) -> int:
    """Index of the frame that contains the instant `time_s` (floor)."""
    if not math.isfinite(time_s):
        raise ValueError(f"time must be finite, got {time_s!r} s")
    return math.floor(time_s * FRAME_RATE + _EPS)


def frames_to_seconds(n_frames: int | float) -> float:
    """Start time of frame `n_frames` (or the length of n frames) in seconds."""
    return n_frames * FRAME_S


def n_frames_for(total_s: float) -> int:
    """Frames of a recording lasting `total_s` seconds: a partial last frame counts (as Mimi: ceil(samples/1920))."""
    return duration_to_frames(total_s)


def voiced_fraction(intervals_s: Iterable[tuple[float, float]], n_frames: int) -> np.ndarray:
    """Fraction (0..1) of each frame covered by the union of [start, end) intervals given in seconds.

    Overlapping intervals are merged first, so a frame is never more than fully voiced. Intervals are clipped to
    the grid [0, n_frames·0.08).
    """
    frac = np.zeros(n_frames, dtype=np.float64)
    end_s = n_frames * FRAME_S
    merged: list[list[float]] = []
    for start, stop in sorted((float(a), float(b)) for a, b in intervals_s):
        if not (math.isfinite(start) and math.isfinite(stop)):
            raise ValueError(f"interval ({start}, {stop}) is not finite")
        if stop < start:
            raise ValueError(f"interval ({start}, {stop}) ends before it starts")
        start, stop = max(start, 0.0), min(stop, end_s)
        if stop <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    if not merged:
        return frac
    # covered(t) = voiced length before t; frame k gets covered(t_{k+1}) - covered(t_k).
    bounds = np.arange(n_frames + 1) * FRAME_S
    starts = np.array([m[0] for m in merged])
    stops = np.array([m[1] for m in merged])
    covered = np.clip(bounds[:, None] - starts[None, :], 0.0, (stops - starts)[None, :]).sum(axis=1)
    frac = np.diff(covered) * FRAME_RATE
    return np.clip(frac, 0.0, 1.0)


def intervals_to_mask(
    intervals_s: Iterable[tuple[float, float]], n_frames: int, min_fraction: float = 0.5
) -> np.ndarray:
    """Boolean frame mask: a frame is on when at least `min_fraction` of it lies inside the intervals."""
    return voiced_fraction(intervals_s, n_frames) >= min_fraction - 1e-9


def mask_to_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D boolean array as [start, stop) frame pairs."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    if m.size == 0:
        return []
    d = np.diff(np.concatenate([[0], m, [0]]))
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))
