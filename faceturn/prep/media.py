"""Reading audio and video files, and picking video frames on the 12.5 Hz grid.

Bad files are reported as `BadInput` naming the file and the problem, found by probing (a 58-byte WAV and a
261-byte MP4 are both "files"; only opening them tells the truth). Video time comes from the frames' own
timestamps, relative to the container's start, so 29.97 fps video and streams that start late land where they
belong; frames are never assumed to be at index/fps unless the timestamps are unusable (see `frame_times`).
Frames are turned upright as a player shows them: phone videos store sideways frames plus a display matrix
(rotation, maybe a mirror), and a sideways face is a different input to the face landmarker.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from scipy.signal import resample_poly

from faceturn.prep import BadInput
from faceturn.timebase import FRAME_S

Item = TypeVar("Item")


@dataclass(frozen=True)
class VideoInfo:
    """What a probe of a video file tells (no frame is decoded)."""

    path: str
    fps: float  # the stream's real average frame rate, e.g. 29.97
    n_frames: int  # declared by the container, else duration × fps
    duration_s: float
    width: int  # the coded raster; `grid_video_frames` turns frames upright (see `display_transform`)
    height: int
    has_audio: bool


def _open_container(path: str | Path):
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise BadInput(f"{path}: unreadable video ({e})") from None


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, size and duration of the first video stream; BadInput for no stream or an unreadable file."""
    with _open_container(path) as container:
        if not container.streams.video:
            raise BadInput(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or float(rate) <= 0:
            raise BadInput(f"{path}: video stream has no frame rate")
        fps = float(rate)
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1e6
        else:
            duration_s = (stream.frames or 0) / fps
        n_frames = int(stream.frames) if stream.frames else round(duration_s * fps)
        if n_frames <= 0 or duration_s <= 0:
            raise BadInput(f"{path}: video stream has no frames")
        return VideoInfo(
            path=str(path),
            fps=fps,
            n_frames=n_frames,
            duration_s=duration_s,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            has_audio=bool(container.streams.audio),
        )


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate of an audio file (channels are averaged).

    A header-only WAV (0 samples) is BadInput: Seamless ships some, and they must not become silent conversations.
    """
    import soundfile as sf

    try:
        data, rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise BadInput(f"{path}: unreadable audio ({e})") from None
    if data.shape[0] == 0:
        raise BadInput(f"{path}: audio has no samples (header-only file)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise BadInput(f"{path}: audio holds non-finite samples")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate_hz)


def audio_frames(path: str | Path) -> tuple[int, int]:
    """(samples, sample rate) of an audio file without reading it; BadInput when unreadable or empty."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise BadInput(f"{path}: unreadable audio ({e})") from None
    if info.frames <= 0:
        raise BadInput(f"{path}: audio has no samples (header-only file)")
    return int(info.frames), int(info.samplerate)


def decode_audio_stream(path: str | Path, rate_hz: int) -> np.ndarray:
    """The first audio stream of a media file as mono float32 at `rate_hz`, sample 0 at the container's start.

    Used to place utterance clips inside a video's soundtrack; a stream that starts late is preceded by zeros.
    """
    import av

    with _open_container(path) as container:
        if not container.streams.audio:
            raise BadInput(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        t0_s = (container.start_time or 0) / 1e6
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
        chunks: list[np.ndarray] = []
        first_s: float | None = None
        try:
            for frame in container.decode(stream):
                if first_s is None and frame.time is not None:
                    first_s = frame.time - t0_s
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.FFmpegError as e:
            raise BadInput(f"{path}: audio stream cannot be decoded ({e})") from None
    if not chunks:
        raise BadInput(f"{path}: audio stream has no samples")
    lead = np.zeros(max(0, round((first_s or 0.0) * rate_hz)), dtype=np.float32)
    return np.concatenate([lead, *chunks]).astype(np.float32)


def resample(wave: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased); output length is ceil(len · to / from)."""
    if from_hz == to_hz:
        return np.asarray(wave, dtype=np.float32)
    g = math.gcd(int(from_hz), int(to_hz))
    return resample_poly(np.asarray(wave, dtype=np.float64), to_hz // g, from_hz // g).astype(np.float32)


class StreamingResampler:
    """`resample` of a signal that arrives in pieces: the concatenated output equals `resample` of the whole signal
    (the same polyphase filter, tested to float32 precision) at any chunk sizes.

    Why it can: output sample n of a polyphase resampler depends only on inputs within the filter's half-length of
    n·down/up. Each push recomputes `resample` on the inputs kept since a point aligned to `down` (so output indices
    line up) and at least two half-lengths back, and emits the outputs whose inputs have all arrived; `flush` ends
    the signal with the zeros `resample` assumes past it. The delay is the half-length: 10·max(up, down)/up inputs
    (under 1 ms of audio for 48 or 44.1 kHz to 24 kHz).
    """

    def __init__(self, from_hz: int, to_hz: int):
        if from_hz <= 0 or to_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {from_hz} → {to_hz} Hz")
        g = math.gcd(int(from_hz), int(to_hz))
        self.from_hz, self.to_hz = int(from_hz), int(to_hz)
        self.up, self.down = self.to_hz // g, self.from_hz // g
        # resample_poly's filter spans ±10·max(up, down) upsampled samples; keep twice that in input samples
        self._reach = math.ceil(20 * max(self.up, self.down) / self.up) + 1
        self._buf = np.zeros(0, dtype=np.float64)
        self._start = 0  # absolute index of _buf[0], a multiple of `down`
        self._n_in = 0
        self._n_out = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Feed the next samples; returns the output samples that are now final (float32, maybe none)."""
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if self.up == self.down:
            self._n_in += x.size
            self._n_out += x.size
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += x.size
        ready = max(0, ((self._n_in - self._reach) * self.up) // self.down)  # outputs with all their inputs here
        return self._emit(ready)

    def flush(self) -> np.ndarray:
        """The rest of the output, as `resample` ends the whole signal (ceil(n_in · up / down) samples in all)."""
        if self.up == self.down:
            return np.zeros(0, dtype=np.float32)
        return self._emit(-(-self._n_in * self.up // self.down))

    def _emit(self, until: int) -> np.ndarray:
        if until <= self._n_out:
            return np.zeros(0, dtype=np.float32)
        y = resample_poly(self._buf, self.up, self.down)
        first = self._start * self.up // self.down
        out = y[self._n_out - first : until - first].astype(np.float32)
        self._n_out = until
        # keep inputs from an aligned point at least `reach` before the next output's centre
        keep_from = max(0, (self._n_out * self.down) // self.up - self._reach)
        keep_from -= keep_from % self.down
        if keep_from > self._start:
            self._buf = self._buf[keep_from - self._start :]
            self._start = keep_from
        return out


class GridPicker:
    """`nearest_on_grid` fed one timed item at a time, for a live stream: `push` returns the grid instants the new item
    decides (an instant is decided once an item at or after it has arrived), `close` decides the rest from the last
    item alone, as at the end of a stream."""

    def __init__(self, tolerance_s: float):
        self.tolerance_s = tolerance_s
        self.k = 0  # the next undecided instant
        self.prev: tuple[float, Any] | None = None

    def _pick(self, target_s: float, t_s: float, item: Any) -> Any:
        prev = self.prev
        best = prev if prev is not None and target_s - prev[0] <= t_s - target_s else (t_s, item)
        return best[1] if abs(best[0] - target_s) <= self.tolerance_s else None

    def push(self, t_s: float, item: Any, n_frames: int | None = None) -> list[tuple[int, Any]]:
        """Feed an item at `t_s` (increasing); the instants k < n_frames (all when None) it decides."""
        out = []
        while (n_frames is None or self.k < n_frames) and self.k * FRAME_S <= t_s:
            out.append((self.k, self._pick(self.k * FRAME_S, t_s, item)))
            self.k += 1
        if n_frames is None or self.k < n_frames:
            self.prev = (t_s, item)
        return out

    def close(self, n_frames: int) -> list[tuple[int, Any]]:
        """Decide every instant before `n_frames` without waiting for another item."""
        out = []
        for k in range(self.k, n_frames):
            near = self.prev is not None and abs(self.prev[0] - k * FRAME_S) <= self.tolerance_s
            out.append((k, self.prev[1] if near else None))
        self.k = max(self.k, n_frames)
        return out


def nearest_on_grid(
    timed: Iterable[tuple[float, Item]], n_frames: int, tolerance_s: float
) -> Iterator[tuple[int, Item | None]]:
    """For each grid instant k·0.08 s (k < n_frames), the item whose time is nearest, or None if none is within
    `tolerance_s`. `timed` must be in increasing time; it is consumed lazily and no further than needed, and one
    item may serve several instants (video slower than 12.5 Hz, or a gap)."""
    picker = GridPicker(tolerance_s)
    for t_s, item in timed:
        yield from picker.push(t_s, item, n_frames)
        if picker.k >= n_frames:
            return
    yield from picker.close(n_frames)


def frame_times(
    frames: Iterable[Any], fps: float, t0_s: float = 0.0, probe_frames: int = 16
) -> Iterator[tuple[float, Any]]:
    """(seconds since `t0_s`, frame) for decoded frames, with fallbacks for PyAV timestamps that are missing or wrong.

    The clock is chosen on the first `probe_frames` frames: pts if present and strictly increasing there, else dts
    (MPEG-4 ASP in AVI reports reordered pts while decode order is display order), else index/fps. A violation
    later on degrades the clock the same way from that frame on. Times are strictly increasing, which MediaPipe's
    VIDEO mode demands.
    """
    modes = ("pts", "dts", "index")
    it = iter(frames)
    head = [f for _, f in zip(range(probe_frames), it, strict=False)]

    def stamps(mode: str, fs: list[Any]) -> list[float | None]:
        return [None if getattr(f, mode) is None else float(getattr(f, mode) * f.time_base) - t0_s for f in fs]

    def increasing(ts: list[float | None]) -> bool:
        return all(t is not None for t in ts) and all(b > a for a, b in itertools.pairwise(ts))

    mode = next((m for m in modes[:2] if increasing(stamps(m, head))), "index")
    last_s = -math.inf
    for frame in itertools.chain(head, it):
        t_s = None
        while t_s is None:
            if mode == "index":
                t_s = last_s + 1.0 / fps if math.isfinite(last_s) else 0.0
            else:
                t_s = stamps(mode, [frame])[0]
                if t_s is None or t_s <= last_s:
                    mode, t_s = modes[modes.index(mode) + 1], None
        last_s = t_s
        yield t_s, frame


def display_transform(matrix: np.ndarray | None, path: str | Path = "") -> tuple[bool, bool, bool]:
    """(transpose, flip rows, flip columns), applied in that order, that turn a decoded frame into what a player
    shows, from FFmpeg's display matrix (int32 [9], 16.16 fixed point; None = identity).

    FFmpeg maps a source pixel (column p, row q) to (a·p + c·q, b·p + d·q) with [a b; c d] the matrix's top-left
    2×2 (rows point down, so 90 there is counter-clockwise as displayed). Only multiples of 90° (with or without a
    mirror) are supported, as in every phone recording; another angle is BadInput.
    """
    if matrix is None:
        return False, False, False
    a, b, _, c, d = (float(v) for v in np.asarray(matrix, dtype=np.int64)[:5])
    if abs(b) + abs(c) <= 1e-3 * (abs(a) + abs(d)):
        return False, d < 0, a < 0
    if abs(a) + abs(d) <= 1e-3 * (abs(b) + abs(c)):
        return True, b < 0, c < 0
    angle = math.degrees(math.atan2(b, a))
    raise BadInput(f"{path}: display matrix rotates by {angle:.1f}°; only multiples of 90° are supported")


def _frame_display_matrix(frame: Any) -> np.ndarray | None:
    from av.sidedata.sidedata import Type

    side = frame.side_data.get(Type.DISPLAYMATRIX)
    return None if side is None else np.frombuffer(memoryview(side), dtype=np.int32)


def _upright(frame: Any, to_rgb: Any, path: str | Path) -> np.ndarray:
    """A decoded frame as RGB uint8 [H, W, 3], turned as its display matrix says."""
    rgb = to_rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()
    transpose, flip_rows, flip_cols = display_transform(_frame_display_matrix(frame), path)
    if transpose:
        rgb = rgb.transpose(1, 0, 2)
    if flip_rows:
        rgb = rgb[::-1]
    if flip_cols:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


@contextmanager
def _video_stream(path: str | Path) -> Iterator[tuple[Iterator[tuple[float, Any]], Any]]:
    """(timed decoded frames (`frame_times`), a reformatter) of a file's first video stream; a stream that breaks
    off mid-file ends there."""
    import av
    from av.video.reformatter import VideoReformatter

    with _open_container(path) as container:
        if not container.streams.video:
            raise BadInput(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1  # parallelism is across videos (processes); decoder threads only add start-up/sync
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        t0_s = (container.start_time or 0) / 1e6

        def decoded() -> Iterator[Any]:
            try:
                yield from container.decode(stream)
            except av.FFmpegError:
                return

        yield frame_times(decoded(), fps, t0_s), VideoReformatter()


class JpegDecoder:
    """Camera frames sent as JPEG → upright RGB, decoded as `prepare` decodes the same bytes muxed into a video file
    (one FFmpeg MJPEG decoder, one reformatter), so a recorded session's faces can be extracted again identically."""

    def __init__(self) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self._codec = av.CodecContext.create("mjpeg", "r")
        self._codec.thread_count = 1
        self._to_rgb = VideoReformatter()

    def decode(self, data: bytes, what: str = "camera frame") -> np.ndarray:
        import av

        try:
            frames = self._codec.decode(av.Packet(data))
        except av.FFmpegError as e:
            raise BadInput(f"{what}: not a decodable JPEG ({e})") from None
        if len(frames) != 1:
            raise BadInput(f"{what}: not a decodable JPEG ({len(frames)} pictures in it)")
        return _upright(frames[0], self._to_rgb, what)


def timed_video_frames(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds, upright RGB uint8 frame) for every frame of a video, as `grid_video_frames` decodes them: what a
    live camera would have delivered."""
    with _video_stream(path) as (timed, to_rgb):
        for t_s, frame in timed:
            yield t_s, _upright(frame, to_rgb, path)


def grid_video_frames(
    path: str | Path, n_frames: int, tolerance_s: float = 0.06
) -> Iterator[tuple[int, np.ndarray | None]]:
    """Upright RGB uint8 [H, W, 3] frames nearest to each 12.5 Hz grid instant, None where no frame is within
    tolerance.

    Decoding stops once the grid is filled; only the chosen frames are converted to RGB, by one reformatter per
    video (a fresh swscale context per frame costs more than the conversion of a small frame). Frames with a
    display matrix are rotated (and mirrored) as `display_transform` says. A stream that breaks off mid-file (a
    truncated download) yields None for the rest, as if the video had ended there.
    """
    with _video_stream(path) as (timed, to_rgb):
        last_frame, last_rgb = None, None
        for k, frame in nearest_on_grid(timed, n_frames, tolerance_s):
            if frame is None:
                yield k, None
                continue
            if frame is not last_frame:
                last_frame, last_rgb = frame, _upright(frame, to_rgb, path)
            yield k, last_rgb
