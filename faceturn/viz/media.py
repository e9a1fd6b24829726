"""Sound and pictures for videos and viewers: the conversation's audio, the interlocutor's face video, encoding.

Audio comes from the corpus' stereo WAV (`ManifestEntry.audio`, one channel per participant: the real recording for
prepared media, the generator's waveform for `faceturn synth --audio`). A synthetic corpus written without `--audio`
still has a sound: its waveform is a pure function of (config, seed, index), so it is regenerated from truth.json and
checked against the stored voice activity. Face video is never copied into a corpus (media stay where they were), so
it is found by the file name the face tracker recorded (`face_tracks[p].video` in the header) under a media folder,
or given explicitly. PyAV is imported inside the functions.
"""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.config import from_dict
from faceturn.errors import CorpusError, FaceturnError
from faceturn.store import Corpus
from faceturn.synth import TRUTH_FILE, SynthConfig, generate_conversation
from faceturn.viz.figures import TimelineData, load_timeline


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """[channels, samples] float32 in [-1, 1] and the rate of a 16-bit PCM WAV (what every corpus writer writes)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise CorpusError(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit PCM")
            n_ch, rate_hz, n = w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise CorpusError(f"{path}: not a readable WAV file ({e})") from None
    except FileNotFoundError:
        raise CorpusError(f"{path}: audio file not found") from None
    pcm = np.frombuffer(raw, dtype="<i2")
    if pcm.size != n * n_ch or n == 0:
        raise CorpusError(f"{path}: truncated or empty ({pcm.size} samples for {n} frames × {n_ch} channels)")
    return (pcm.reshape(n, n_ch).T.astype(np.float32) / 32768.0), rate_hz


def _synthetic_waveform(root: Path, conv) -> tuple[np.ndarray, int] | None:
    """Regenerate a synthetic conversation's waveform, or None when the corpus is not synthetic."""
    info, truth_path = conv.meta.get("synth"), root / TRUTH_FILE
    if not isinstance(info, dict) or not truth_path.is_file():
        return None
    try:
        cfg = from_dict(SynthConfig, json.loads(truth_path.read_text())["config"])
    except (json.JSONDecodeError, KeyError) as e:
        raise CorpusError(f"{truth_path}: no generator config to regenerate audio from ({e})") from None
    sc = generate_conversation(cfg, int(info["seed"]), int(info["index"]), audio=True)
    if not np.array_equal(sc.va, np.asarray(conv.va)):
        raise CorpusError(
            f"{truth_path}: regenerating conversation {conv.id!r} from this config does not reproduce the stored "
            "voice activity, so its audio cannot be rebuilt; regenerate the corpus with `faceturn synth --audio`"
        )
    return sc.waveform, cfg.waveform.sample_rate_hz


def conversation_audio(corpus: Corpus, conversation_id: str) -> tuple[np.ndarray, int]:
    """[2, n_samples] float32 (participant 0 and 1) and the sample rate of one conversation of a `Corpus`."""
    entry = corpus.entry(conversation_id)
    if entry.audio is not None:
        audio, rate_hz = read_wav(corpus.root / entry.audio)
        if audio.shape[0] != 2:
            raise CorpusError(f"{corpus.root / entry.audio}: {audio.shape[0]} channels, expected one per participant")
        return audio, rate_hz
    regenerated = _synthetic_waveform(corpus.root, corpus.load(conversation_id))
    if regenerated is None:
        raise CorpusError(
            f"{corpus.manifest_path}: conversation {conversation_id!r} has no audio (prepare the corpus with audio "
            "written, or generate it with `faceturn synth --audio`)"
        )
    return regenerated


def mixed_window(audio: np.ndarray, rate_hz: int, start_s: float, end_s: float) -> np.ndarray:
    """Both participants summed to mono over [start_s, end_s), zero-padded past the recording, scaled below clipping."""
    a, b = round(start_s * rate_hz), round(end_s * rate_hz)
    out = np.zeros(b - a, np.float32)
    part = audio[:, a:b].sum(axis=0)
    out[: part.size] = part
    peak = float(np.abs(out).max()) if out.size else 0.0
    return out / peak if peak > 1.0 else out


@dataclass(frozen=True)
class Clip:
    """What a video or a viewer page shows of one conversation window."""

    data: TimelineData  # the timeline of the window
    mono: np.ndarray  # [n_samples] float32, both participants mixed over the window
    rate_hz: int
    video: Path | None  # the interlocutor's face video, given or found; None: sound only


def load_clip(
    pred: Any,
    conversation_id: str,
    *,
    perspective: int = 0,
    start_s: float | None = None,
    end_s: float | None = None,
    corpus: str | Path | None = None,
    video: str | Path | None = None,
    media_root: str | Path | None = None,
) -> Clip:
    """The timeline, sound and face video of a conversation window (arguments as `render_video`'s)."""
    data = load_timeline(pred, conversation_id, perspective=perspective, start_s=start_s, end_s=end_s, corpus=corpus)
    store = Corpus(data.corpus_root)
    audio, rate_hz = conversation_audio(store, conversation_id)
    if video is None:
        video = find_face_video(store.load(conversation_id), 1 - perspective, media_root)
    mono = mixed_window(audio, rate_hz, data.start_s, data.end_s)
    return Clip(data, mono, rate_hz, None if video is None else Path(video))


def find_face_video(conv, participant: int, media_root: str | Path | None) -> Path | None:
    """The video the face tracker read for `participant`: its recorded path under `media_root` when it is there (a
    recording's `<conversation>/<name>.mkv`), else the first file of its name found below `media_root`."""
    tracks = conv.meta.get("face_tracks")
    if media_root is None or not isinstance(tracks, list) or len(tracks) <= participant:
        return None
    name = (tracks[participant] or {}).get("video")
    if not name:
        return None
    root = Path(media_root)
    if not root.is_dir():
        raise FaceturnError(f"{root}: media folder not found")
    if (root / name).is_file() and (root / name).resolve().is_relative_to(root.resolve()):
        return root / name
    return next(iter(sorted(root.rglob(Path(name).name))), None)


def _open(path: Path, what: str):
    import av

    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise FaceturnError(f"{path}: unreadable {what} ({e})") from None


def video_aspect(path: str | Path) -> float:
    """Width / height of the first video stream (after the sample aspect ratio)."""
    with _open(Path(path), "video") as c:
        if not c.streams.video:
            raise FaceturnError(f"{path}: no video stream")
        cc = c.streams.video[0].codec_context
        sar = float(cc.sample_aspect_ratio) if cc.sample_aspect_ratio else 1.0
        if not cc.width or not cc.height:
            raise FaceturnError(f"{path}: video stream has no frame size")
        return cc.width * sar / cc.height


def _planes(packed: np.ndarray, h: int, w: int) -> list[np.ndarray]:
    flat = packed.reshape(-1)
    n = h * w
    return [
        flat[:n].reshape(h, w),
        flat[n : n + n // 4].reshape(h // 2, w // 2),
        flat[n + n // 4 :].reshape(h // 2, w // 2),
    ]


def rgb_to_yuv420(rgb: np.ndarray) -> list[np.ndarray]:
    """[H, W, 3] uint8 with H, W even → planes Y [H, W], U and V [H/2, W/2], converted as the encoder would."""
    import av

    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"picture of {w}×{h} px: yuv420p needs even sizes")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
    return [p.copy() for p in _planes(frame.reformat(format="yuv420p").to_ndarray(), h, w)]


def yuv420_frame(planes: list[np.ndarray]):
    """A PyAV yuv420p VideoFrame from planes Y [H, W], U and V [H/2, W/2]."""
    import av

    h, w = planes[0].shape
    packed = np.concatenate([p.reshape(-1) for p in planes]).reshape(h * 3 // 2, w)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")


class VideoFrames:
    """A video's pictures at non-decreasing times (the latest frame shown at or before each time, black before the
    first), each scaled to fit a box and centred on black, as yuv420p planes. Times are seconds from the container's
    start, as in face extraction. Decodes sequentially; converts only the frames that are shown."""

    def __init__(self, path: str | Path, box_w: int, box_h: int, start_s: float = 0.0):
        import av

        if box_w % 2 or box_h % 2:
            raise ValueError(f"video box of {box_w}×{box_h} px: sizes must be even")
        self.path = Path(path)
        self._container = _open(self.path, "video")
        if not self._container.streams.video:
            self._container.close()
            raise FaceturnError(f"{path}: no video stream")
        stream = self._container.streams.video[0]
        self._t0_s = (self._container.start_time or 0) / 1e6
        if start_s > 1.0 and stream.time_base is not None:  # jump to the keyframe before the window
            self._container.seek(int((start_s + self._t0_s) / stream.time_base), stream=stream, backward=True)
        self._frames = self._container.decode(stream)
        self._av_error = av.FFmpegError
        cc = stream.codec_context
        aspect = (cc.width * (float(cc.sample_aspect_ratio) if cc.sample_aspect_ratio else 1.0)) / cc.height
        self._w = max(2, min(box_w, round(box_h * aspect)) // 2 * 2)
        self._h = max(2, min(box_h, round(box_w / aspect)) // 2 * 2)
        self._x, self._y = (box_w - self._w) // 4 * 2, (box_h - self._h) // 4 * 2  # even offsets keep chroma aligned
        chroma = (box_h // 2, box_w // 2)
        self.planes = [
            np.full((box_h, box_w), 16, np.uint8),
            np.full(chroma, 128, np.uint8),
            np.full(chroma, 128, np.uint8),
        ]
        self._next = None  # the first decoded frame after the one on screen
        self._done = False

    def _time(self, frame) -> float:
        return (frame.time if frame.time is not None else 0.0) - self._t0_s

    def at(self, time_s: float) -> list[np.ndarray]:
        """Planes Y [box_h, box_w], U, V [box_h/2, box_w/2] at `time_s` (arrays that later calls overwrite)."""
        shown = None
        while not self._done:
            if self._next is None:
                try:
                    self._next = next(self._frames)
                except StopIteration:
                    self._done = True
                    break
                except self._av_error as e:
                    raise FaceturnError(f"{self.path}: video cannot be decoded ({e})") from None
            if self._time(self._next) > time_s + 1e-6:
                break
            shown, self._next = self._next, None
        if shown is not None:
            packed = shown.reformat(width=self._w, height=self._h, format="yuv420p").to_ndarray()
            for k, (plane, pic) in enumerate(zip(self.planes, _planes(packed, self._h, self._w), strict=True)):
                d = 1 if k == 0 else 2
                plane[self._y // d : (self._y + self._h) // d, self._x // d : (self._x + self._w) // d] = pic
        return self.planes

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_audio_stream(container, mono: np.ndarray, rate_hz: int, codec: str, codec_rate_hz: int, bit_rate: int):
    """Encode mono float samples into `container` (PyAV converts format and rate and cuts the codec's frames)."""
    import av

    stream = container.add_stream(codec, rate=codec_rate_hz, options={"aac_coder": "fast"} if codec == "aac" else {})
    stream.layout = "mono"
    stream.bit_rate = bit_rate
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono, np.float32)[None], format="flt", layout="mono")
    frame.sample_rate = rate_hz
    frame.pts = 0
    return stream, frame


def encode_audio_only(mono: np.ndarray, rate_hz: int) -> bytes:
    """A compact WebM/Opus file (mono, 32 kb/s) of the samples, for embedding in a page."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as c:
        stream, frame = add_audio_stream(c, mono, rate_hz, "libopus", 48000, 32000)
        for packet in (*stream.encode(frame), *stream.encode(None)):
            c.mux(packet)
    return buf.getvalue()
