import dataclasses

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from faceturn.config import ConfigError, from_dict, to_dict
from faceturn.labels import EventConfig, TurnLabels, silence_bin, turn_labels
from faceturn.timebase import voiced_fraction

H = 13  # default horizon: 1.0 s → 13 frames


def make_va(speaker0_s, speaker1_s, n_frames: int) -> np.ndarray:
    """Voice activity [2, T] (float16, as stored) from [start, end) intervals in seconds."""
    return np.stack([voiced_fraction(speaker0_s, n_frames), voiced_fraction(speaker1_s, n_frames)]).astype(np.float16)


def mask(n_frames: int, *ranges: tuple[int, int]) -> np.ndarray:
    out = np.zeros(n_frames, dtype=bool)
    for lo, hi in ranges:
        out[lo:hi] = True
    return out


def floor_of(n_frames: int, *segments: tuple[int, int, int]) -> np.ndarray:
    out = np.full(n_frames, -1, dtype=np.int8)
    for lo, hi, who in segments:
        out[lo:hi] = who
    return out


def check(labels: TurnLabels, *, floor, shifts, shift_to, y, m, backchannel=((), ())):
    n = labels.n_frames
    np.testing.assert_array_equal(labels.floor, floor)
    assert labels.shift_frames.tolist() == shifts
    assert labels.shift_to.tolist() == shift_to
    np.testing.assert_array_equal(labels.y.astype(bool), y)
    np.testing.assert_array_equal(labels.m, m)
    for s in (0, 1):
        np.testing.assert_array_equal(labels.backchannel[s], mask(n, *backchannel[s]))


# ---------------------------------------------------------------------------------------------------------------------
# Scenarios with exact frames (0.08 s per frame: 4.0 s is frame 50)


def test_shift_with_gap():
    lab = turn_labels(make_va([(0, 4.0)], [(4.4, 8.0)], 100))
    assert lab.ipus == [[(0, 50)], [(55, 100)]]
    check(
        lab,
        floor=floor_of(100, (0, 55, 0), (55, 100, 1)),
        shifts=[55],  # the first frame the incoming speaker speaks alone: its onset
        shift_to=[1],
        y=mask(100, (55 - H, 55)),
        m=mask(100, (0, 100 - H)),
    )
    np.testing.assert_array_equal(lab.y, lab.offline_y())


def test_shift_with_overlap():
    lab = turn_labels(make_va([(0, 4.0)], [(3.6, 8.0)], 100))
    check(
        lab,
        floor=floor_of(100, (0, 50, 0), (50, 100, 1)),
        shifts=[50],  # the incoming speaker is alone once the holder stops
        shift_to=[1],
        y=mask(100, (50 - H, 50)),
        m=mask(100, (0, 100 - H)),
    )
    np.testing.assert_array_equal(lab.y, lab.offline_y())


@pytest.mark.parametrize(
    ("second_part_s", "ipus"),
    [((2.16, 4.0), [(0, 50)]), ((2.4, 4.0), [(0, 25), (30, 50)])],  # pause of 2 frames (filled) and 5 frames
    ids=["pause-under-ipu-gap", "pause-over-ipu-gap"],
)
def test_hold_pause_within_turn(second_part_s, ipus):
    lab = turn_labels(make_va([(0, 2.0), second_part_s], [], 75))
    assert lab.ipus == [ipus, []]
    check(lab, floor=floor_of(75, (0, 75, 0)), shifts=[], shift_to=[], y=mask(75), m=mask(75, (0, 75 - H)))


def test_hold_across_long_silence():
    lab = turn_labels(make_va([(0, 2.0), (6.0, 8.0)], [], 125))
    check(lab, floor=floor_of(125, (0, 125, 0)), shifts=[], shift_to=[], y=mask(125), m=mask(125, (0, 125 - H)))


def test_backchannel_overlapping_the_holder():
    lab = turn_labels(make_va([(0, 6.0)], [(2.0, 2.4)], 100))
    check(
        lab,
        floor=floor_of(100, (0, 100, 0)),
        shifts=[],
        shift_to=[],
        y=mask(100),
        m=mask(100, (0, 100 - H)),
        backchannel=((), ((25, 30),)),
    )


def test_backchannel_in_a_pause_is_judged_at_the_horizon():
    lab = turn_labels(make_va([(0, 2.0), (2.8, 6.0)], [(2.08, 2.4)], 100))
    assert lab.ipus == [[(0, 25), (35, 75)], [(26, 30)]]
    # Offline the short IPU is a backchannel (the holder speaks again first). Judged at k + H, it is the listener
    # speaking alone with nobody after it — a hand-over at 26 — for every prefix ending in frames 26..34.
    check(
        lab,
        floor=floor_of(100, (0, 100, 0)),
        shifts=[],
        shift_to=[],
        y=mask(100, (26 - H, 35 - H)),
        m=mask(100, (0, 100 - H)),
        backchannel=((), ((26, 30),)),
    )
    assert not lab.offline_y().any()


def test_failed_interruption_keeps_the_floor():
    lab = turn_labels(make_va([(0, 6.0)], [(2.0, 3.6)], 100))  # 1.6 s over the holder, who outlasts it
    assert lab.ipus[1] == [(25, 45)]
    check(lab, floor=floor_of(100, (0, 100, 0)), shifts=[], shift_to=[], y=mask(100), m=mask(100, (0, 100 - H)))


def test_shift_after_long_silence():
    lab = turn_labels(make_va([(0, 2.0)], [(6.0, 8.0)], 125))
    check(
        lab,
        floor=floor_of(125, (0, 75, 0), (75, 125, 1)),  # the floor stays with the last holder through the silence
        shifts=[75],
        shift_to=[1],
        y=mask(125, (75 - H, 75)),
        m=mask(125, (0, 125 - H)),
    )
    np.testing.assert_array_equal(lab.y, lab.offline_y())


def test_conversation_start_first_ipu():
    lab = turn_labels(make_va([(0.4, 3.2)], [], 60))
    # Taking the empty floor is not a hand-over; frames before it are not scored.
    check(lab, floor=floor_of(60, (5, 60, 0)), shifts=[], shift_to=[], y=mask(60), m=mask(60, (5, 60 - H)))


def test_conversation_start_with_a_backchannel():
    lab = turn_labels(make_va([(1.2, 4.0)], [(0.4, 0.8)], 60))
    check(
        lab,
        floor=floor_of(60, (15, 60, 0)),
        shifts=[],
        shift_to=[],
        y=mask(60),
        m=mask(60, (15, 60 - H)),
        backchannel=((), ((5, 10),)),
    )


def test_conversation_end_unfinished_turn():
    lab = turn_labels(make_va([(0, 3.2)], [(3.6, 4.8)], 60))
    check(
        lab,
        floor=floor_of(60, (0, 45, 0), (45, 60, 1)),
        shifts=[45],
        shift_to=[1],
        y=mask(60, (45 - H, 45)),
        m=mask(60, (0, 60 - H)),  # nothing scored in the last H frames
    )


def test_conversation_end_short_last_ipu_takes_the_floor():
    # Nobody speaks after the listener's last 0.4 s, so it is not a backchannel.
    lab = turn_labels(make_va([(0, 4.0)], [(4.4, 4.8)], 60))
    check(
        lab,
        floor=floor_of(60, (0, 55, 0), (55, 60, 1)),
        shifts=[55],
        shift_to=[1],
        y=mask(60, (55 - H, 55)),
        m=mask(60, (0, 60 - H)),
    )


def test_floor_relative():
    lab = turn_labels(make_va([(0.4, 4.0)], [(4.4, 8.0)], 100))
    assert lab.floor_relative(0)[[0, 5, 54, 55]].tolist() == [-1, 1, 1, 0]
    assert lab.floor_relative(1)[[0, 5, 54, 55]].tolist() == [-1, 0, 0, 1]
    with pytest.raises(ValueError, match="self_speaker"):
        lab.floor_relative(2)


# ---------------------------------------------------------------------------------------------------------------------
# VAP-compatible events


def test_vap_shift_and_hold_with_silence_bins_and_spred():
    # A 0–4 s; silence 8 frames (0.64 s); B 4.64–6.4 s; pause 12 frames (0.96 s); B 7.36–9.6 s.
    ev = turn_labels(make_va([(0, 4.0)], [(4.64, 6.4), (7.36, 9.6)], 125)).events
    assert ev.silence_start.tolist() == [50, 80]
    assert ev.silence_stop.tolist() == [58, 92]
    assert ev.silence_frames.tolist() == [8, 12]
    assert ev.is_shift.tolist() == [True, False]
    assert ev.next_speaker.tolist() == [1, 1]
    assert ev.prev_speaker.tolist() == [0, 1]
    assert ev.silence_bin.tolist() == [1, 2]  # 0.64 s in [0.5, 0.75), 0.96 s in [0.75, 1.0)
    assert ev.balanced.tolist() == [True, True]
    assert ev.spred.tolist() == [True, True]
    assert ev.spred_start.tolist() == [43, 73]  # 0.5 s → 7 frames before each silence
    assert ev.spred_balanced.tolist() == [True, True]
    assert ev.bc_start.size == 0


@pytest.mark.parametrize(
    ("a_start_s", "b_onset_s", "n_events"),
    [
        (0.0, 4.24, 0),  # silence 3 frames = 0.24 s < 0.25 s
        (0.0, 4.32, 1),  # silence 4 frames = 0.32 s
        (3.04, 4.64, 0),  # only 12 frames (0.96 s) of solo speech before the silence
        (2.96, 4.64, 1),  # 13 frames
    ],
)
def test_vap_shift_conditions(a_start_s, b_onset_s, n_events):
    ev = turn_labels(make_va([(a_start_s, 4.0)], [(b_onset_s, 8.0)], 110)).events
    assert ev.is_shift.tolist() == [True] * n_events


def test_vap_holds_are_balanced_deterministically():
    va = make_va([(0, 4.0), (4.64, 6.4), (7.36, 9.6), (10.4, 12.0)], [(12.64, 14.0)], 180)
    ev = turn_labels(va).events
    assert ev.silence_start.tolist() == [50, 80, 120, 150]
    assert ev.is_shift.tolist() == [False, False, False, True]
    assert ev.balanced[3] and ev.balanced[:3].sum() == 1
    assert ev.spred.all() and ev.spred_balanced[3] and ev.spred_balanced[:3].sum() == 1
    np.testing.assert_array_equal(turn_labels(va).events.balanced, ev.balanced)  # same seed, same draw
    chosen = {
        int(np.flatnonzero(turn_labels(va, EventConfig(balance_seed=seed)).events.balanced[:3])[0])
        for seed in range(20)
    }
    assert len(chosen) > 1  # the seed matters


def test_vap_backchannel_events():
    ev = turn_labels(make_va([(0, 8.0)], [(4.0, 4.4)], 100)).events
    assert (ev.bc_start.tolist(), ev.bc_stop.tolist(), ev.bc_speaker.tolist()) == ([50], [55], [1])
    # Two short segments 0.8 s apart: neither has its 1 s silence before and 2 s after.
    ev = turn_labels(make_va([(0, 8.0)], [(4.0, 4.4), (5.2, 5.6)], 100)).events
    assert ev.bc_start.size == 0
    # Before the 3 s minimum context.
    ev = turn_labels(make_va([(0, 8.0)], [(1.6, 2.0)], 100)).events
    assert ev.bc_start.size == 0


@pytest.mark.parametrize(
    ("duration_s", "index"), [(0.0, 0), (0.49, 0), (0.5, 1), (0.74, 1), (0.75, 2), (1.5, 5), (1.99, 5), (2.0, 6)]
)
def test_silence_bin(duration_s, index):
    assert silence_bin(duration_s) == index
    assert silence_bin(25 * 0.08) == 6  # 2.0 s built from frames lands in the last bin despite float error


def test_silence_bin_rejects_bad_durations():
    with pytest.raises(ValueError, match="silence duration"):
        silence_bin(-0.1)
    with pytest.raises(ValueError, match="silence duration"):
        silence_bin(float("nan"))


# ---------------------------------------------------------------------------------------------------------------------
# Config and input validation


def test_config_frames_and_round_trip():
    cfg = EventConfig()
    assert (cfg.ipu_gap_frames, cfg.bc_max_frames, cfg.horizon_frames) == (3, 13, 13)
    assert (cfg.vap_min_silence_frames, cfg.vap_pre_solo_frames, cfg.vap_post_solo_frames) == (4, 13, 13)
    assert (cfg.spred_window_frames, cfg.bc_pre_silence_frames, cfg.bc_post_silence_frames) == (7, 13, 25)
    assert cfg.vap_min_context_frames == 38
    data = to_dict(dataclasses.replace(cfg, horizon_s=2.0, silence_bins_s=(0.0, 1.0)))
    assert data["silence_bins_s"] == [0.0, 1.0]
    back = from_dict(EventConfig, data)
    assert back.horizon_frames == 25 and back.silence_bins_s == (0.0, 1.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"voiced_min_fraction": 0.0},
        {"ipu_gap_s": -0.1},
        {"horizon_s": 0.0},
        {"silence_bins_s": [0.5, 1.0]},
        {"silence_bins_s": [0.0, 1.0, 1.0]},
        {"balance_seed": -1},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        from_dict(EventConfig, bad)


@pytest.mark.parametrize(
    ("va", "message"),
    [
        (np.zeros((3, 10)), "shape"),
        (np.zeros(10), "shape"),
        (np.full((2, 4), np.nan), "not finite"),
        (np.full((2, 4), 1.5), r"\[0, 1\]"),
        (np.full((2, 4), -0.1), r"\[0, 1\]"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype"),
    ],
)
def test_bad_voice_activity_is_rejected(va, message):
    with pytest.raises(ValueError, match=message):
        turn_labels(va)


def test_empty_and_short_conversations():
    lab = turn_labels(np.zeros((2, 0), dtype=np.float16))
    assert lab.floor.shape == lab.y.shape == lab.m.shape == (0,) and lab.active.shape == (2, 0)
    assert lab.shift_frames.size == 0 and lab.events.silence_start.size == 0
    va = np.zeros((2, 20), dtype=bool)
    va[0, :14], va[1, 16:] = True, True  # a 14-frame turn, then the other speaker
    lab = turn_labels(va)
    assert lab.shift_frames.tolist() == [16]
    np.testing.assert_array_equal(lab.y.astype(bool), mask(20, (3, 16)))
    np.testing.assert_array_equal(lab.m, mask(20, (0, 20 - H)))
    lab = turn_labels(va[:, :H])  # shorter than the horizon: nothing scored
    assert not lab.m.any() and lab.floor.tolist() == [0] * H


def test_bool_and_fraction_inputs_agree():
    va = make_va([(0, 4.0)], [(3.6, 8.0)], 100)
    np.testing.assert_array_equal(turn_labels(va).y, turn_labels(va >= 0.5).y)


# ---------------------------------------------------------------------------------------------------------------------
# Properties


@st.composite
def voice_activity(draw, max_frames: int = 70):
    """Two speakers' activity as alternating runs (1–20 frames), as bools or as voiced fractions."""
    n_frames = draw(st.integers(0, max_frames))
    rows = []
    for _ in range(2):
        on, row = draw(st.booleans()), []
        while len(row) < n_frames:
            row += [on] * draw(st.integers(1, 20))
            on = not on
        rows.append(row[:n_frames])
    active = np.array(rows, dtype=bool).reshape(2, n_frames)
    if n_frames and draw(st.booleans()):  # copy a stretch across speakers: IPUs that start in the same frame
        lo = draw(st.integers(0, n_frames - 1))
        hi = draw(st.integers(lo + 1, n_frames))
        active[1, lo:hi] = active[0, lo:hi]
    if draw(st.booleans()):
        return active
    return np.where(active, 0.75, 0.25).astype(np.float16)


def from_frames(n_frames: int, speaker0: list[int], speaker1: list[int]) -> np.ndarray:
    va = np.zeros((2, n_frames), dtype=bool)
    va[0, speaker0], va[1, speaker1] = True, True
    return va


# Both speakers start IPUs in frame 0: the prefix re-run must restart at the first IPU of a same-frame group.
TIED_START = from_frames(27, [0, *range(2, 9), *range(10, 23), 25, 26], [*range(9), *range(10, 16), *range(20, 24)])
# IPUs starting in the same frame are judged against the same holder, whatever the speaker order.
TIED_LATE = from_frames(38, [*range(1, 12), 31, 35, 37], [*range(1, 11), 31, *range(33, 38)])


def prefix_reference(va: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y, m by definition: the offline labeler run on every prefix va[:, :k+H+1]."""
    n = va.shape[1]
    y, m = np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=bool)
    for k in range(n):
        prefix = turn_labels(va[:, : min(k + H + 1, n)])
        y[k] = any(k < f <= k + H for f in prefix.shift_frames.tolist())
        m[k] = k + H < n and prefix.floor[k] != -1
    return y, m


@settings(max_examples=80, deadline=None)
@given(voice_activity())
@example(TIED_START)
@example(TIED_LATE)
def test_incremental_targets_equal_prefix_labeling(va):
    lab = turn_labels(va)
    y, m = prefix_reference(va)
    np.testing.assert_array_equal(lab.y, y)
    np.testing.assert_array_equal(lab.m, m)


@settings(max_examples=150, deadline=None)
@given(voice_activity(), st.integers(0, 10**6), st.integers(0, 2**32 - 1))
def test_targets_never_depend_on_frames_after_the_horizon(va, k_draw, seed):
    n = va.shape[1]
    if n == 0:
        return
    k = k_draw % n
    changed = va.copy()
    tail = np.random.default_rng(seed).random((2, max(n - (k + H + 1), 0)))
    changed[:, k + H + 1 :] = tail >= 0.5 if va.dtype == bool else tail
    a, b = turn_labels(va), turn_labels(changed)
    assert a.y[k] == b.y[k]
    assert a.m[k] == b.m[k]


@settings(max_examples=100, deadline=None)
@given(voice_activity(max_frames=120))
@example(TIED_LATE)
def test_swapping_speakers_swaps_the_floor_only(va):
    a, b = turn_labels(va), turn_labels(va[::-1])
    np.testing.assert_array_equal(b.floor, np.where(a.floor < 0, -1, 1 - a.floor))
    np.testing.assert_array_equal(b.shift_frames, a.shift_frames)
    np.testing.assert_array_equal(b.shift_to, 1 - a.shift_to)
    np.testing.assert_array_equal(b.y, a.y)
    np.testing.assert_array_equal(b.m, a.m)
    np.testing.assert_array_equal(b.backchannel, a.backchannel[::-1])


@settings(max_examples=100, deadline=None)
@given(voice_activity(max_frames=120))
def test_label_invariants(va):
    lab = turn_labels(va)
    n, floor, active = lab.n_frames, lab.floor, lab.active
    raw = va if va.dtype == bool else va >= 0.5
    assert (active >= raw).all() and (lab.backchannel <= active).all()
    # The floor changes only at hand-overs and once when it is first taken, each time to a speaker who speaks alone
    # there and is not backchanneling; a hand-over goes to the other speaker.
    held = np.flatnonzero(floor >= 0)
    takes = ([int(held[0])] if held.size else []) + lab.shift_frames.tolist()
    changes = (np.flatnonzero(floor[1:] != floor[:-1]) + 1).tolist()
    assert changes == [f for f in takes if f > 0]
    for f, to in zip(lab.shift_frames.tolist(), lab.shift_to.tolist(), strict=True):
        assert floor[f] == to and floor[f - 1] == 1 - to
    for f in takes:
        s = floor[f]
        assert active[s, f] and not active[1 - s, f] and not lab.backchannel[s, f]
    # The offline target is exactly "a hand-over in (k, k + H]"; near the end the causal target sees everything.
    expected = [any(k < f <= k + H for f in lab.shift_frames.tolist()) for k in range(n)]
    np.testing.assert_array_equal(lab.offline_y().astype(bool), expected)
    np.testing.assert_array_equal(lab.y[max(n - H - 1, 0) :], lab.offline_y()[max(n - H - 1, 0) :])
    # Scored frames need a full horizon inside the conversation.
    assert not lab.m[max(n - H, 0) :].any()
