"""Turn labels from voice activity: IPUs, backchannels, the floor holder, hand-overs, the turn-yield target and the
VAP-compatible events (the shift/hold, S-pred and backchannel events of VAP's evaluation).

Everything is a pure numpy function of `va` [2, T] (fraction of each 12.5 Hz frame voiced), so label definitions can
change without re-preparing a corpus. Every seconds→frames conversion goes through `faceturn.timebase` (ceil rule):
a minimum or a horizon of d seconds is `duration_to_frames(d)` frames, and a maximum is "shorter than that many
frames", so "a gap shorter than 0.2 s" is a gap of < 3 frames (≤ 0.16 s) and "a backchannel no longer than 1 s" is an
IPU of < 13 frames (≤ 0.96 s): on the 80 ms grid both read exactly as the words say.

Offline definitions (`floor`, `ipus`, `backchannel`, `shift_frames`, VAP events) look ahead by design, as VAP's
post-conditions do: whether a short IPU is a backchannel is known only once someone speaks after it.

**The turn-yield target is judged at the horizon.** The literal target is y[k] = 1 iff a hand-over frame lies in
(k, k + H]. Read with the offline floor, that y[k] would depend on frames long after k + H (a short IPU at k + H is
a backchannel or a turn depending on who speaks next), so a model trained on it would be asked to foresee the
unforeseeable, and y[k] would not be a function of the frames up to k + H. Instead, y[k] and m[k] are what the
offline labeler says when run on the prefix `va[:, :k+H+1]`, i.e. *as if the conversation ended at frame k + H*.
At the end of a prefix this reads as:
  - the holder's unfinished pause is a pause (not yet filled): a pause may still turn out shorter than `ipu_gap_s`;
  - an unfinished IPU of the non-holder, or a finished short one nobody has spoken after, is not a backchannel, so
    once it speaks alone it has taken the floor.
Both rules are optimistic (a hand-over is declared as soon as the incoming speaker speaks alone). The alternative,
treating a fresh pause of the holder as continuing speech, delays every hand-over that ends an overlap by up to
`ipu_gap_s`; the optimistic rule instead makes y equal to the offline target exactly on clean data (turns longer
than `bc_max_s`, backchannels overlapping the holder's speech, holder pauses not bridged by the other's speech), and
errs only where nobody can know yet: a backchannel spoken into the holder's pause, or a holder pause shorter than
`ipu_gap_s` during the other's speech, reads as a hand-over until it is resolved, which sets y on at most H frames.
`TurnLabels.offline_y()` gives the literal target for comparison.

Computing y by labeling each prefix would cost O(T²). Instead the offline pass records, for each IPU, the prefix
length from which its decision is final (its data horizon); the labeling of a prefix is the offline one up to the
first IPU whose decision is not yet final, then a short re-run over the undecided tail. The prefix labeling is
constant while neither speaker's activity changes, so it is evaluated only at activity change points. A 200 s
conversation labels in a few milliseconds.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from faceturn.errors import ConfigError
from faceturn.timebase import duration_to_frames, frames_to_seconds, mask_to_runs

# Decision for one IPU in the floor pass.
_HOLDER = 0  # the holder's own speech: no decision
_BACKCHANNEL = 1  # short, and the other speaker speaks again first: never takes the floor
_TAKE = 2  # takes the floor at its hand-over frame
_NO_TAKE = 3  # a turn attempt that does not outlast the holder's current speech (failed interruption)

_NO_FRAME = np.iinfo(np.int64).max  # "no take yet" in comparisons with frame indices


@dataclass(frozen=True)
class EventConfig:
    """Turn-label and event definitions; serialized with every result so a number can be traced to its labels."""

    voiced_min_fraction: float = 0.5  # va[s, k] >= this -> speaker s active in frame k
    ipu_gap_s: float = 0.2  # a speaker's own gaps shorter than this are filled (IPU = run after filling)
    bc_max_s: float = 1.0  # a backchannel is an IPU no longer than this
    horizon_s: float = 1.0  # H: y[k] = 1 iff a hand-over lies in (k, k + H]
    # VAP-compatible events (the defaults of VAP's EventConfig, newMaster branch)
    vap_min_silence_s: float = 0.25  # shift/hold silence at least metric_time + metric_pad
    vap_pre_solo_s: float = 1.0  # only the previous speaker active this long before the silence
    vap_post_solo_s: float = 1.0  # only the next speaker active this long after its onset
    vap_min_context_s: float = 3.0  # no event (or prediction window) starts earlier in the conversation
    spred_window_s: float = 0.5  # S-pred region before a shift/hold silence
    bc_pre_silence_s: float = 1.0  # VAP backchannel: own silence before the segment
    bc_post_silence_s: float = 2.0  # VAP backchannel: own silence after the segment
    silence_bins_s: tuple[float, ...] = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # MM-VAP bins; last is open-ended
    balance_seed: int = 0  # seeds the hold (and S-pred negative) subsampling

    def __post_init__(self) -> None:
        if not (0.0 < self.voiced_min_fraction <= 1.0):
            raise ConfigError(f"voiced_min_fraction must be in (0, 1], got {self.voiced_min_fraction!r}")
        for name in (
            "ipu_gap_s",
            "bc_max_s",
            "horizon_s",
            "vap_min_silence_s",
            "vap_pre_solo_s",
            "vap_post_solo_s",
            "vap_min_context_s",
            "spred_window_s",
            "bc_pre_silence_s",
            "bc_post_silence_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite duration >= 0 s, got {value!r}")
        if self.horizon_frames < 1:
            raise ConfigError(f"horizon_s must cover at least one frame, got {self.horizon_s!r}")
        if self.balance_seed < 0:
            raise ConfigError(f"balance_seed must be >= 0, got {self.balance_seed!r}")
        bins = tuple(float(b) for b in self.silence_bins_s)
        if not bins or bins[0] != 0.0 or any(b1 <= b0 for b0, b1 in pairwise(bins)):
            raise ConfigError(f"silence_bins_s must start at 0.0 and increase strictly, got {self.silence_bins_s!r}")
        object.__setattr__(self, "silence_bins_s", bins)

    @property
    def ipu_gap_frames(self) -> int:
        return duration_to_frames(self.ipu_gap_s)

    @property
    def bc_max_frames(self) -> int:
        return duration_to_frames(self.bc_max_s)

    @property
    def horizon_frames(self) -> int:
        return duration_to_frames(self.horizon_s)

    @property
    def vap_min_silence_frames(self) -> int:
        return duration_to_frames(self.vap_min_silence_s)

    @property
    def vap_pre_solo_frames(self) -> int:
        return duration_to_frames(self.vap_pre_solo_s)

    @property
    def vap_post_solo_frames(self) -> int:
        return duration_to_frames(self.vap_post_solo_s)

    @property
    def vap_min_context_frames(self) -> int:
        return duration_to_frames(self.vap_min_context_s)

    @property
    def spred_window_frames(self) -> int:
        return duration_to_frames(self.spred_window_s)

    @property
    def bc_pre_silence_frames(self) -> int:
        return duration_to_frames(self.bc_pre_silence_s)

    @property
    def bc_post_silence_frames(self) -> int:
        return duration_to_frames(self.bc_post_silence_s)


_DEFAULT_CONFIG = EventConfig()


@dataclass
class VapEvents:
    """VAP-convention events of one conversation, as parallel arrays.

    Shift/hold events sit at silences between two single-speaker stretches; `balanced` keeps every shift and a seeded
    subsample of the holds of equal size (all holds if there are fewer). The S-pred region of event i is
    [spred_start[i], silence_start[i]); `spred` marks events whose region is usable (previous speaker's last segment
    covers it, after the minimum context) and `spred_balanced` the positives plus an equal number of hold negatives.
    Backchannel events are [bc_start, bc_stop) segments of `bc_speaker`.
    """

    silence_start: np.ndarray  # [n] int64: first silent frame
    silence_stop: np.ndarray  # [n] int64: onset frame of the next speaker
    next_speaker: np.ndarray  # [n] int8
    is_shift: np.ndarray  # [n] bool (False: hold)
    balanced: np.ndarray  # [n] bool
    silence_bin: np.ndarray  # [n] int64 index into EventConfig.silence_bins_s
    spred: np.ndarray  # [n] bool
    spred_balanced: np.ndarray  # [n] bool
    spred_window_frames: int
    bc_start: np.ndarray  # [m] int64
    bc_stop: np.ndarray  # [m] int64
    bc_speaker: np.ndarray  # [m] int8

    @property
    def prev_speaker(self) -> np.ndarray:
        return np.where(self.is_shift, 1 - self.next_speaker, self.next_speaker).astype(np.int8)

    @property
    def silence_frames(self) -> np.ndarray:
        return self.silence_stop - self.silence_start

    @property
    def spred_start(self) -> np.ndarray:
        return self.silence_start - self.spred_window_frames


@dataclass
class TurnLabels:
    """Labels of one conversation. `floor`, `ipus`, `backchannel`, `shift_frames` are offline; `y`, `m` causal."""

    config: EventConfig
    active: np.ndarray  # [2, T] bool, after IPU gap filling
    ipus: list[list[tuple[int, int]]]  # per speaker, [start, stop) frames
    backchannel: np.ndarray  # [2, T] bool: frames of backchannel IPUs
    floor: np.ndarray  # [T] int8 in {-1, 0, 1}
    shift_frames: np.ndarray  # [n] int64 hand-over frames
    shift_to: np.ndarray  # [n] int8 incoming speaker
    y: np.ndarray  # [T] uint8 turn-yield target, judged at the horizon
    m: np.ndarray  # [T] bool scored frames
    events: VapEvents

    @property
    def n_frames(self) -> int:
        return int(self.floor.shape[0])

    def floor_relative(self, self_speaker: int) -> np.ndarray:
        """Floor from one perspective: 1 self holds, 0 the interlocutor holds, -1 nobody yet."""
        if self_speaker not in (0, 1):
            raise ValueError(f"self_speaker must be 0 or 1, got {self_speaker!r}")
        return np.where(self.floor < 0, -1, (self.floor == self_speaker).astype(np.int8)).astype(np.int8)

    def offline_y(self) -> np.ndarray:
        """The literal target (hand-over in (k, k + H] of the offline floor), for comparison with `y`."""
        return _window_targets(self.shift_frames, self.n_frames, self.config.horizon_frames)


def silence_bin(duration_s: float, config: EventConfig = _DEFAULT_CONFIG) -> int:
    """Index of the MM-VAP silence-duration bin [bins[i], bins[i+1]) holding `duration_s`; the last bin is open."""
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"silence duration must be finite and >= 0 s, got {duration_s!r}")
    return bisect_right(config.silence_bins_s, duration_s + 1e-9) - 1


def turn_labels(va: np.ndarray, config: EventConfig = _DEFAULT_CONFIG) -> TurnLabels:
    """All turn labels of one conversation from its voice activity `va` [2, T] (voiced fractions 0..1, or bool)."""
    raw = _active(va, config)
    n_frames = raw.shape[1]
    gap_frames, bc_max_frames, horizon = config.ipu_gap_frames, config.bc_max_frames, config.horizon_frames

    starts, stops = [], []
    for s in (0, 1):
        a, b = _fill_gaps(raw[s], gap_frames)
        starts.append(a)
        stops.append(b)
    order = sorted((starts[s][j], s, j) for s in (0, 1) for j in range(len(starts[s])))

    kinds, takes, judged_against = _floor_pass(order, starts, stops, n_frames, bc_max_frames)

    active = np.zeros((2, n_frames), dtype=bool)
    backchannel = np.zeros((2, n_frames), dtype=bool)
    for (a, s, j), kind in zip(order, kinds, strict=True):
        active[s, a : stops[s][j]] = True
        if kind == _BACKCHANNEL:
            backchannel[s, a : stops[s][j]] = True

    floor = np.full(n_frames, -1, dtype=np.int8)
    for i, (frame, to, _, _) in enumerate(takes):
        end = takes[i + 1][0] if i + 1 < len(takes) else n_frames
        floor[frame:end] = to
    shifts = [(frame, to) for frame, to, prev, _ in takes if prev >= 0]
    shift_frames = np.array([f for f, _ in shifts], dtype=np.int64)
    shift_to = np.array([t for _, t in shifts], dtype=np.int8)

    y, m = _causal_targets(raw, starts, stops, order, kinds, takes, judged_against, horizon, bc_max_frames)
    return TurnLabels(
        config=config,
        active=active,
        ipus=[list(zip(starts[s], stops[s], strict=True)) for s in (0, 1)],
        backchannel=backchannel,
        floor=floor,
        shift_frames=shift_frames,
        shift_to=shift_to,
        y=y,
        m=m,
        events=_vap_events(raw, config),
    )


# --------------------------------------------------------------------------------------------------------------------
# Voice activity and IPUs


def _active(va: np.ndarray, config: EventConfig) -> np.ndarray:
    """Validate `va` and threshold it: active iff at least `voiced_min_fraction` of the frame is voiced."""
    va = np.asarray(va)
    if va.ndim != 2 or va.shape[0] != 2:
        raise ValueError(f"va must have shape [2, T] (two speakers × frames), got {va.shape}")
    if va.dtype == bool:
        return va.copy()
    if not (np.issubdtype(va.dtype, np.floating) or np.issubdtype(va.dtype, np.integer)):
        raise ValueError(f"va must hold voiced fractions (float) or bools, got dtype {va.dtype}")
    values = va.astype(np.float64)
    if not np.isfinite(values).all():
        bad = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"va is not finite: speaker {bad[0]}, frame {bad[1]} holds {va[bad[0], bad[1]]}")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(f"va must lie in [0, 1], got values in [{values.min()}, {values.max()}]")
    # Same tolerance as timebase.intervals_to_mask, so a half-voiced frame from voiced_fraction counts as active.
    return values >= config.voiced_min_fraction - 1e-9


def _fill_gaps(active: np.ndarray, gap_frames: int) -> tuple[list[int], list[int]]:
    """IPUs of one speaker: runs of active frames with the speaker's own gaps of < `gap_frames` frames filled."""
    starts: list[int] = []
    stops: list[int] = []
    for a, b in mask_to_runs(active):
        if stops and a - stops[-1] < gap_frames:
            stops[-1] = b
        else:
            starts.append(a)
            stops.append(b)
    return starts, stops


# --------------------------------------------------------------------------------------------------------------------
# Floor: one pass over the IPUs of both speakers in start order


def ipu_bounds(active: np.ndarray, config: EventConfig = _DEFAULT_CONFIG) -> tuple[np.ndarray, np.ndarray]:
    """IPUs of one speaker's activity [T] (bool, or voiced fractions thresholded at `voiced_min_fraction`): [start,
    stop) frames of the runs left after filling the speaker's own gaps shorter than `ipu_gap_s`, as the floor uses
    them (step 4 reads a talking model's IPUs with it)."""
    active = np.asarray(active)
    if active.ndim != 1:
        raise ValueError(f"active must be [T], got shape {active.shape}")
    if active.dtype != bool:
        active = active >= config.voiced_min_fraction
    starts, stops = _fill_gaps(active, config.ipu_gap_frames)
    return np.asarray(starts, np.int64), np.asarray(stops, np.int64)


def _covering_stop(starts: list[int], stops: list[int], frame: int) -> int:
    """Stop of the IPU containing `frame`, or -1 if the speaker is silent there."""
    i = bisect_right(starts, frame) - 1
    return stops[i] if i >= 0 and stops[i] > frame else -1


def _first_after(starts: list[int], stops: list[int], frame: int) -> int:
    """Index of the first IPU still running at or after `frame` (stop > frame); len(starts) if none."""
    return bisect_right(stops, frame)


def _decide(
    s: int, j: int, starts: list[list[int]], stops: list[list[int]], n_frames: int, holder: int, bc_max_frames: int
) -> tuple[int, int]:
    """Decision for IPU j of speaker s given the current holder (-1: none yet), and its hand-over frame if it takes.

    With no holder yet the other speaker plays the holder's part in both tests, so a short first IPU answered by the
    other speaker is a backchannel and the first floor goes to whoever first speaks alone in a turn.
    """
    if holder == s:
        return _HOLDER, -1
    o = 1 - s
    a, b = starts[s][j], stops[s][j]
    if b - a < bc_max_frames:
        next_own = starts[s][j + 1] if j + 1 < len(starts[s]) else n_frames
        q = _first_after(starts[o], stops[o], b)
        if q < len(starts[o]) and starts[o][q] < next_own:  # the other speaks again before s does
            return _BACKCHANNEL, -1
    other_stop = _covering_stop(starts[o], stops[o], a)
    if other_stop < 0:
        return _TAKE, a
    if b > other_stop:  # outlasts the other's current speech: first solo frame is where that speech ends
        return _TAKE, other_stop
    return _NO_TAKE, -1


def _floor_pass(
    order: list[tuple[int, int, int]],
    starts: list[list[int]],
    stops: list[list[int]],
    n_frames: int,
    bc_max_frames: int,
    begin: int = 0,
    holder: int = -1,
) -> tuple[list[int], list[tuple[int, int, int, int]], list[int]]:
    """Decide the IPUs order[begin:] (those starting before n_frames) from `holder`; `begin` opens a start group.

    Returns the decisions, the takes as (hand-over frame, incoming, previous holder, index in order) in increasing
    frame order, and the holder each IPU was judged against. IPUs starting in the same frame are all judged against
    the holder of that frame: a take among them hands over only when the other's tied IPU ends. Otherwise no IPU
    starts between a take's decision and its hand-over (the outgoing speech runs until then), so updating the holder
    at decision time is exact.
    """
    kinds: list[int] = []
    takes: list[tuple[int, int, int, int]] = []
    judged_against: list[int] = []
    group_start, group_holder = -1, holder
    for i in range(begin, len(order)):
        a, s, j = order[i]
        if a >= n_frames:
            break
        if a != group_start:
            group_start, group_holder = a, holder
        judged_against.append(group_holder)
        kind, frame = _decide(s, j, starts, stops, n_frames, group_holder, bc_max_frames)
        kinds.append(kind)
        if kind == _TAKE:
            takes.append((frame, s, group_holder, i))
            holder = s
    return kinds, takes, judged_against


# --------------------------------------------------------------------------------------------------------------------
# Turn-yield target judged at the horizon


def _window_targets(shift_frames: np.ndarray, n_frames: int, horizon: int) -> np.ndarray:
    """y[k] = 1 iff some frame of `shift_frames` lies in (k, k + horizon]."""
    diff = np.zeros(n_frames + 1, dtype=np.int64)
    for f in np.asarray(shift_frames, dtype=np.int64).tolist():
        lo, hi = max(f - horizon, 0), min(f - 1, n_frames - 1)
        if lo <= hi:
            diff[lo] += 1
            diff[hi + 1] -= 1
    return (np.cumsum(diff[:n_frames]) > 0).astype(np.uint8)


def _data_horizons(
    raw: np.ndarray,
    starts: list[list[int]],
    stops: list[list[int]],
    order: list[tuple[int, int, int]],
    kinds: list[int],
    bc_max_frames: int,
) -> list[int]:
    """For each IPU (in start order), a prefix length from which its decision on any prefix equals the offline one,
    provided the IPUs before it are decided alike (then the holder is the same).

    A prefix of length L sees the IPUs that start before L, the last one of each speaker cut after its last active
    frame before L; nothing else differs. Each bound below is the first L at which the facts a decision rests on
    are present in the prefix.
    """
    n_frames = raw.shape[1]
    idx = np.arange(n_frames)
    # next_active[s][x]: first active frame >= x (n_frames if none)
    next_active = [np.minimum.accumulate(np.where(raw[s], idx, n_frames)[::-1])[::-1] for s in (0, 1)]
    horizons = []
    for (a, s, j), kind in zip(order, kinds, strict=True):
        o, b = 1 - s, stops[s][j]
        other_stop = _covering_stop(starts[o], stops[o], a)
        if kind == _HOLDER:
            horizon = a + 1
        elif kind == _BACKCHANNEL:
            # Final once s's IPU has ended and the answering speaker's activity after it is in the prefix.
            q = _first_after(starts[o], stops[o], b)
            horizon = max(b, int(next_active[o][max(b, starts[o][q])]) + 1)
        elif kind == _TAKE and b - a >= bc_max_frames:
            # A long turn: final once it is long (cannot be a backchannel), the other's covering IPU has ended, and
            # the turn has been active after that end (outlasts it).
            end = max(other_stop, a)
            horizon = max(end, int(next_active[s][max(a + bc_max_frames - 1, end)]) + 1)
        else:
            horizon = max(b, other_stop)
        horizons.append(horizon)
    return horizons


def _causal_targets(
    raw: np.ndarray,
    starts: list[list[int]],
    stops: list[list[int]],
    order: list[tuple[int, int, int]],
    kinds: list[int],
    takes: list[tuple[int, int, int, int]],
    judged_against: list[int],
    horizon: int,
    bc_max_frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    """y[k], m[k] from the labeling of the prefix va[:, :k+H+1] (the whole conversation once k + H >= T)."""
    n_frames = raw.shape[1]
    all_shifts = np.array([f for f, _, prev, _ in takes if prev >= 0], dtype=np.int64)
    y = _window_targets(all_shifts, n_frames, horizon)  # right for k + H >= T - 1 (the prefix is everything)
    n_scored = max(n_frames - horizon, 0)  # m[k] needs k + H < T
    m = np.zeros(n_frames, dtype=bool)
    if n_scored == 0:
        return y, m

    idx = np.arange(n_frames)
    last_active = [np.maximum.accumulate(np.where(raw[s], idx, -1)) for s in (0, 1)]
    reach = np.maximum.accumulate(_data_horizons(raw, starts, stops, order, kinds, bc_max_frames)).tolist()
    # Re-runs start at the first IPU of a start group (the group shares the holder it is judged against).
    group_first = [0] * len(order)
    for i in range(1, len(order)):
        group_first[i] = group_first[i - 1] if order[i][0] == order[i - 1][0] else i
    take_order = [t[3] for t in takes]

    # Prefix lengths L = k + H + 1 for k < n_scored; the labeling only changes where activity changes.
    changed = np.any(raw[:, 1:] != raw[:, :-1], axis=0)
    points = (np.flatnonzero(np.concatenate([[True], changed])) + 1).tolist()
    y_diff = np.zeros(n_frames + 1, dtype=np.int64)
    first_take = np.full(n_frames + 1, _NO_FRAME, dtype=np.int64)  # by prefix length
    lo_len, hi_len = horizon + 1, n_scored + horizon  # prefix lengths that score some k
    for r, length in enumerate(points):
        end = points[r + 1] if r + 1 < len(points) else n_frames + 1
        if end <= lo_len or length > hi_len:
            continue
        c = bisect_right(reach, length)  # first IPU whose decision this prefix may not share with the full labeling
        if c < len(order):
            c = group_first[c]
        n_final = bisect_left(take_order, c)
        recent = []  # hand-overs in [length - H, length - 1]: the only ones a k of this run can see
        for t in range(n_final - 1, -1, -1):
            frame, _, prev, _ = takes[t]
            if frame < length - horizon:
                break
            if prev >= 0:
                recent.append(frame)
        first = takes[0][0] if n_final > 0 else _NO_FRAME
        if c < len(order) and order[c][0] < length:
            p_starts, p_stops = [], []
            for s in (0, 1):
                n_s = bisect_left(starts[s], length)
                p_starts.append(starts[s][:n_s])
                cut = stops[s][:n_s]
                if n_s:
                    cut[-1] = min(cut[-1], int(last_active[s][length - 1]) + 1)
                p_stops.append(cut)
            _, tail, _ = _floor_pass(order, p_starts, p_stops, length, bc_max_frames, c, judged_against[c])
            for frame, _, prev, _ in tail:
                if first == _NO_FRAME:
                    first = frame
                if prev >= 0 and frame >= length - horizon:
                    recent.append(frame)
        first_take[length:end] = first
        for frame in recent:  # frame in (k, k + H] for L = k + H + 1 in [length, min(end - 1, frame + H)]
            k_lo = max(length - horizon - 1, 0)
            k_hi = min(min(end - 1, frame + horizon) - horizon - 1, n_scored - 1)
            if k_lo <= k_hi:
                y_diff[k_lo] += 1
                y_diff[k_hi + 1] -= 1
    y[:n_scored] = (np.cumsum(y_diff[:n_scored]) > 0).astype(np.uint8)
    k = np.arange(n_scored)
    m[:n_scored] = first_take[k + horizon + 1] <= k
    return y, m


# --------------------------------------------------------------------------------------------------------------------
# VAP-compatible events


def _runs_of(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of a 1-D array: (starts, lengths, values)."""
    n = values.shape[0]
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, values[:0]
    starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [n]]))
    return starts, lengths, values[starts]


def _balance(positive: np.ndarray, negative: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All positives plus a random subset of the negatives of equal size (all negatives if there are fewer)."""
    keep = positive.copy()
    neg = np.flatnonzero(negative)
    n_keep = min(len(neg), int(positive.sum()))
    keep[np.sort(rng.choice(neg, size=n_keep, replace=False))] = True
    return keep


def _vap_events(raw: np.ndarray, config: EventConfig) -> VapEvents:
    """Shift/hold, S-pred and backchannel events with VAP's rules on the thresholded (unfilled) activity."""
    n_frames = raw.shape[1]
    # Dialog states as VAP: 0 only speaker 0, 1 silence, 2 both, 3 only speaker 1.
    states = 2 * raw[1].astype(np.int64) - raw[0].astype(np.int64) + 1
    st, ln, v = _runs_of(states)
    solo = (v == 0) | (v == 3)
    # VAP fills every pause of a speaker between two of its own solo stretches before checking conditions.
    filled = raw.copy()
    middle = np.arange(1, len(v) - 1)
    pauses = middle[(v[middle] == 1) & solo[middle - 1] & (v[middle - 1] == v[middle + 1])]
    for i in pauses.tolist():
        filled[0 if v[i - 1] == 0 else 1, st[i] : st[i] + ln[i]] = True

    pre, post = config.vap_pre_solo_frames, config.vap_post_solo_frames
    context, window = config.vap_min_context_frames, config.spred_window_frames
    sil_start, sil_stop, next_spk, shift, spred = [], [], [], [], []
    candidates = middle[(v[middle] == 1) & solo[middle - 1] & solo[middle + 1]]
    for i in candidates.tolist():
        prev_s, next_s = (0 if v[i - 1] == 0 else 1), (0 if v[i + 1] == 0 else 1)
        start, onset = int(st[i]), int(st[i + 1])
        if start < context or ln[i] < config.vap_min_silence_frames or start < pre or onset + post > n_frames:
            continue
        if not (filled[prev_s, start - pre : start].all() and not filled[1 - prev_s, start - pre : start].any()):
            continue
        if not (filled[next_s, onset : onset + post].all() and not filled[1 - next_s, onset : onset + post].any()):
            continue
        sil_start.append(start)
        sil_stop.append(onset)
        next_spk.append(next_s)
        shift.append(prev_s != next_s)
        spred.append(bool(ln[i - 1] >= window and start - window >= context))

    is_shift = np.array(shift, dtype=bool)
    spred_ok = np.array(spred, dtype=bool)
    silence_start = np.array(sil_start, dtype=np.int64)
    silence_stop = np.array(sil_stop, dtype=np.int64)
    bins = np.array(
        [silence_bin(frames_to_seconds(int(d)), config) for d in (silence_stop - silence_start)], dtype=np.int64
    )
    # Separate seeded streams, so the S-pred draw does not depend on how many holds were drawn.
    balanced = _balance(is_shift, ~is_shift, np.random.default_rng([config.balance_seed, 0]))
    spred_rng = np.random.default_rng([config.balance_seed, 1])
    spred_balanced = _balance(spred_ok & is_shift, spred_ok & ~is_shift, spred_rng)

    bc_start, bc_stop, bc_speaker = [], [], []
    for s in (0, 1):
        bst, bln, bv = _runs_of(filled[s])
        for i in range(1, len(bv) - 1):
            if not bv[i] or bst[i] < context or bln[i] >= config.bc_max_frames:
                continue
            if bln[i - 1] >= config.bc_pre_silence_frames and bln[i + 1] >= config.bc_post_silence_frames:
                bc_start.append(int(bst[i]))
                bc_stop.append(int(bst[i] + bln[i]))
                bc_speaker.append(s)
    bc_order = np.argsort(np.array(bc_start, dtype=np.int64), kind="stable")

    return VapEvents(
        silence_start=silence_start,
        silence_stop=silence_stop,
        next_speaker=np.array(next_spk, dtype=np.int8),
        is_shift=is_shift,
        balanced=balanced,
        silence_bin=bins,
        spred=spred_ok,
        spred_balanced=spred_balanced,
        spred_window_frames=window,
        bc_start=np.array(bc_start, dtype=np.int64)[bc_order],
        bc_stop=np.array(bc_stop, dtype=np.int64)[bc_order],
        bc_speaker=np.array(bc_speaker, dtype=np.int8)[bc_order],
    )
