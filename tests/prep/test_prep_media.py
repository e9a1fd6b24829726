"""Frame selection on the 12.5 Hz grid, timestamp fallbacks, and probing of bad media files."""

from __future__ import annotations

import itertools
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV missing: pip install -e '.[prep]'")
pytest.importorskip("soundfile", reason="soundfile missing: pip install -e '.[prep]'")

from fixtures_prep import noise_frames, write_mp4, write_wav

from faceturn.prep import BadInput
from faceturn.prep.media import (
    audio_frames,
    decode_audio_stream,
    display_transform,
    frame_times,
    grid_video_frames,
    nearest_on_grid,
    probe_video,
    read_audio,
    resample,
)


@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 10.0])
def test_nearest_frame_on_the_grid(fps):
    n_video = int(20 * fps)
    picked = dict(nearest_on_grid(((i / fps, i) for i in range(n_video)), 250, tolerance_s=0.06))
    assert len(picked) == 250
    expected = [min(round(k * 0.08 * fps), n_video - 1) for k in range(250)]
    got = [picked[k] for k in range(250)]
    # ties (exactly half-way) may go either way; everything else is the nearest frame
    assert all(abs(g - e) <= 1 for g, e in zip(got, expected, strict=True))
    assert all(abs(g / fps - k * 0.08) <= 0.5 / fps + 1e-9 for k, g in enumerate(got))
    if fps == 25.0:
        assert got == [2 * k for k in range(250)]  # every second frame exactly


def test_grid_instants_without_a_close_frame_are_none():
    times = [0.0, 0.04, 0.5, 0.54]  # a 0.46 s gap, then the stream ends
    picked = dict(nearest_on_grid(((t, t) for t in times), 10, tolerance_s=0.06))
    assert picked[0] == 0.0 and picked[1] == 0.04 and picked[6] == 0.5 and picked[7] == 0.54
    assert [k for k, v in picked.items() if v is None] == [2, 3, 4, 5, 8, 9]


def test_nearest_on_grid_stops_consuming_when_the_grid_is_full():
    consumed = []

    def gen():
        for i in range(1000):
            consumed.append(i)
            yield i / 30, i

    assert len(list(nearest_on_grid(gen(), 5, 0.06))) == 5
    assert len(consumed) < 20


def _frame(pts, dts, tb=Fraction(1, 1000)):
    return SimpleNamespace(pts=pts, dts=dts, time_base=tb)


def test_reordered_pts_fall_back_to_dts_and_missing_ones_to_the_index():
    # AVI with B-frames: pts come out reordered (0, 1, 2, 4, 3, 5) while dts (decode = display order) is monotonic
    frames = [_frame(p * 40, d * 40) for p, d in [(0, 0), (1, 1), (2, 2), (4, 3), (3, 4), (5, 5)]]
    assert [t for t, _ in frame_times(frames, fps=25)] == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.2])
    no_stamps = [_frame(None, None) for _ in range(4)]
    assert [t for t, _ in frame_times(no_stamps, fps=25)] == pytest.approx([0.0, 0.04, 0.08, 0.12])
    # a violation after the probe window degrades the clock from there on, keeping times increasing
    late = [_frame(i * 40, i * 40) for i in range(20)] + [_frame(10 * 40, 20 * 40), _frame(None, 21 * 40)]
    times = [t for t, _ in frame_times(late, fps=25, probe_frames=16)]
    assert times[:20] == pytest.approx([0.04 * i for i in range(20)])
    assert times[20:] == pytest.approx([0.8, 0.84])
    assert all(b > a for a, b in itertools.pairwise(times))


def test_real_frame_rate_is_used_for_29_97_fps_video(tmp_path):
    """Each frame's grey level encodes its index; the frame picked for grid instant k must be round(k·0.08·29.97)."""
    fps = Fraction(30000, 1001)
    n = 300  # 10 s: assuming 30 fps would be off by a frame by the end
    frames = [np.full((64, 64, 3), 4 * (i % 64), dtype=np.uint8) for i in range(n)]  # grey = 4 · (index mod 64)
    path = write_mp4(tmp_path / "ntsc.mp4", frames, fps, lossless=True)
    info = probe_video(path)
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.n_frames == n
    got = {k: round(float(rgb[..., 0].mean()) / 4) % 64 for k, rgb in grid_video_frames(path, 125)}
    for k in range(125):
        want = round(k * 0.08 * float(fps))
        assert got[k] == want % 64, (k, got[k], want)


def test_grid_past_the_end_of_the_video_has_no_frames(tmp_path):
    path = write_mp4(tmp_path / "short.mp4", noise_frames(30, (64, 64), 0), Fraction(30))  # 1 s
    frames = dict(grid_video_frames(path, 25))  # 2 s of grid
    assert all(frames[k] is not None for k in range(13))
    assert all(frames[k] is None for k in range(14, 25))


@pytest.mark.parametrize("display", [(-90, False), (90, False), (180, False), (90, True), (0, True)])
def test_display_matrix_turns_frames_upright(tmp_path, display):
    """Phone videos store sideways (or mirrored) frames plus a display matrix; frames come out as a player shows."""
    frames = noise_frames(6, (64, 48), 5)  # 64 wide, 48 high: a transposition changes the shape
    path = write_mp4(tmp_path / "phone.mp4", frames, Fraction(25), lossless=True, display=display)
    got = dict(grid_video_frames(path, 3))
    for k in range(3):
        assert got[k].shape == (48, 64, 3) and got[k].flags.c_contiguous
        assert np.abs(got[k].astype(int) - frames[2 * k]).max() <= 3, (display, k)  # 4:4:4 lossless, RGB rounding


def test_display_matrix_that_is_not_a_quarter_turn_is_bad_input(tmp_path):
    import av

    assert display_transform(None) == (False, False, False)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    tilted = [round(v * 65536) for v in (c, -s, 0, s, c, 0)] + [0, 0, 1 << 30]  # FFmpeg's layout: 16.16 and 2.30
    with pytest.raises(BadInput, match=r"rotates by -30\.0°"):
        display_transform(np.array(tilted, np.int32), "x.mp4")
    path = tmp_path / "tilted.mp4"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        v.set_display_matrix(tilted)
        for pkt in [
            *v.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")),
            *v.encode(),
        ]:
            out.mux(pkt)
    with pytest.raises(BadInput, match=r"tilted\.mp4: display matrix rotates by"):
        list(grid_video_frames(path, 1))


def test_header_only_wav_is_bad_input(tmp_path):
    path = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 48000)
    with pytest.raises(BadInput, match=r"empty\.wav: audio has no samples"):
        read_audio(path)
    with pytest.raises(BadInput, match="no samples"):
        audio_frames(path)
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(BadInput, match="unreadable audio"):
        read_audio(tmp_path / "junk.wav")


def test_mp4_without_video_or_truncated_is_bad_input(tmp_path):
    import av

    audio_only = tmp_path / "audio_only.mp4"
    with av.open(str(audio_only), "w") as c:
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        fr.sample_rate, fr.pts = 48000, 0
        for pkt in [*a.encode(fr), *a.encode()]:
            c.mux(pkt)
    with pytest.raises(BadInput, match=r"audio_only\.mp4: no video stream"):
        probe_video(audio_only)
    good = write_mp4(tmp_path / "good.mp4", noise_frames(30, (64, 64), 0), Fraction(30))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # the moov atom is at the end
    with pytest.raises(BadInput, match=r"truncated\.mp4: unreadable video"):
        probe_video(truncated)
    with pytest.raises(BadInput, match="unreadable video"):
        list(grid_video_frames(truncated, 5))


def test_audio_stream_of_a_video_and_resampling(tmp_path):
    t = np.arange(48000) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_mp4(tmp_path / "tone.mp4", noise_frames(30, (64, 64), 0), Fraction(30), (tone, 48000))
    sound = decode_audio_stream(path, 24000)
    assert abs(len(sound) - 24000) < 2048  # AAC priming/padding only
    spectrum = np.abs(np.fft.rfft(sound[2000:22000]))
    assert np.argmax(spectrum) * 24000 / 20000 == pytest.approx(440, abs=3)
    assert len(resample(tone, 48000, 24000)) == 24000
    assert len(resample(tone[:1001], 48000, 16000)) == 334  # ceil(1001 / 3)
