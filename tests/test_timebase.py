import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceturn import timebase as tb


def test_frame_grid_constants():
    assert tb.FRAME_RATE == 12.5
    assert tb.FRAME_S == pytest.approx(0.08)


@pytest.mark.parametrize(
    ("seconds", "frames"), [(1.0, 13), (0.25, 4), (0.2, 3), (0.4, 5), (0.08, 1), (0.0, 0), (0.5, 7), (2.0, 25)]
)
def test_duration_to_frames_is_ceil_without_float_error(seconds, frames):
    assert tb.duration_to_frames(seconds) == frames


def test_time_to_frame_is_the_containing_frame():
    assert tb.time_to_frame(0.0) == 0
    assert tb.time_to_frame(0.079) == 0
    assert tb.time_to_frame(0.08) == 1
    assert tb.time_to_frame(0.24) == 3  # float error in 0.24*12.5 must not move it to frame 2


def test_bad_durations_are_rejected():
    with pytest.raises(ValueError, match="duration"):
        tb.duration_to_frames(-1.0)
    with pytest.raises(ValueError):
        tb.duration_to_frames(float("nan"))


def test_voiced_fraction_partial_and_merged_intervals():
    frac = tb.voiced_fraction([(0.04, 0.2), (0.1, 0.12)], n_frames=4)
    np.testing.assert_allclose(frac, [0.5, 1.0, 0.5, 0.0], atol=1e-9)
    assert tb.intervals_to_mask([(0.04, 0.2)], 4).tolist() == [True, True, True, False]


def test_voiced_fraction_clips_to_grid_and_rejects_reversed():
    np.testing.assert_allclose(tb.voiced_fraction([(-1.0, 0.08), (0.30, 9.0)], 4), [1, 0, 0, 0.25], atol=1e-9)
    with pytest.raises(ValueError, match="ends before"):
        tb.voiced_fraction([(0.5, 0.1)], 10)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 2)), max_size=20))
def test_voiced_fraction_total_equals_union_length(raw):
    intervals = [(a, a + d) for a, d in raw]
    n = 140  # 11.2 s covers every interval start; ends may run past and get clipped
    frac = tb.voiced_fraction(intervals, n)
    assert ((frac >= 0) & (frac <= 1)).all()
    # union length by fine sampling
    grid = (np.arange(n * 800) + 0.5) / (800 * tb.FRAME_RATE)
    covered = np.zeros_like(grid, dtype=bool)
    for a, b in intervals:
        covered |= (grid >= a) & (grid < b)
    assert frac.sum() * tb.FRAME_S == pytest.approx(covered.mean() * n * tb.FRAME_S, abs=0.01 + 0.002 * len(intervals))


def test_mask_to_runs():
    assert tb.mask_to_runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert tb.mask_to_runs(np.zeros(0, bool)) == []
