"""A live session, kept: its media in the `prepare recordings` layout, a corpus conversation and a predictions file,
so `inspect`, `evaluate`, `plot`, `view` and `render` work on it afterwards, and `prepare recordings` + `predict` can
re-derive it from the media.

Layout of a record folder (`faceturn live --record DIR`), one entry per session:
- `media/<session>/agent.wav`, `person.wav`: the 24 kHz audio the listener encoded (float32, so nothing is rounded);
  `person.mkv`: the camera frames exactly as received (JPEG, muxed without re-encoding, millisecond timestamps);
- `corpus/`: a corpus store (`corpus` "live", every session in split "test") whose codes and faces are the
  listener's, and whose voice activity is Silero over the whole recording, as `prepare` computes it;
- `series/<session>.npz`: P(yield) per frame, with the face and zeroed, as the page showed it;
- `predictions.npz`: a predictions file over every session of the folder (perspective 0: the model is the agent),
  rebuilt after each session.

Media are written as they arrive (to `.partial` names, renamed at the end), so a dropped connection keeps what came:
the session is closed and written from whatever the listener had received.
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.checkpoint import CONFIG_FILE, read_json
from faceturn.errors import FaceturnError
from faceturn.eval.predict import Predictions, prediction_meta
from faceturn.io import atomic_write_bytes
from faceturn.labels import turn_labels
from faceturn.live.listener import AGENT, PARTICIPANTS, PERSON, ListenerSettings, LiveFrame
from faceturn.prep.audio_tokens import MIMI_RATE_HZ, mimi_frames
from faceturn.prep.pipeline import PrepSettings, extraction_settings, write_stereo_wav
from faceturn.prep.vad import silero_intervals
from faceturn.recipe import TrainConfig
from faceturn.schema import N_FACE
from faceturn.store import MANIFEST, Conversation, Corpus, CorpusWriter, ManifestEntry, check_id
from faceturn.synth.truth import TRUTH_FILE
from faceturn.timebase import voiced_fraction

CORPUS_NAME = "live"
SPLIT = "test"
VIDEO_FILE = "person.mkv"


def blank_jpeg(width: int, height: int) -> bytes:
    """A black JPEG frame. A recording's video must start at t = 0 (`prepare` reads video time from the file's
    start), so a session whose camera's first frame comes later starts its video with this frame at t = 0, and the
    listener is shown it too: both then see "no face yet" until the camera's first frame."""
    import av

    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = width, height, "yuvj420p", Fraction(1, 30)
    frame = av.VideoFrame(width, height, "yuvj420p")
    for plane, value in zip(frame.planes, (0, 128, 128), strict=True):
        plane.update(bytes([value]) * plane.buffer_size)
    return b"".join(bytes(p) for p in enc.encode(frame)) + b"".join(bytes(p) for p in enc.encode(None))


def _extraction(settings: ListenerSettings) -> dict:
    return extraction_settings(PrepSettings(mimi=settings.mimi, face=settings.face, silero=settings.silero))


class Recorder:
    """Records one session into a record folder; `audio`, `jpeg` and `frame` as they come, then `close`."""

    def __init__(self, root: str | Path, session: str, settings: ListenerSettings, checkpoint: Path,
                 train_cfg: TrainConfig):  # fmt: skip
        import soundfile as sf

        check_id(session)
        self.root, self.session, self.settings = Path(root), session, settings
        self.checkpoint, self.train_cfg = Path(checkpoint), train_cfg
        self.media = self.root / "media" / session
        if self.media.exists():
            raise FaceturnError(f"{self.media}: a session of that name is already recorded")
        self.media.mkdir(parents=True)
        self._wav_paths = [self.media / f".{p}.wav.partial" for p in PARTICIPANTS]
        self._wavs = [sf.SoundFile(str(p), "w", MIMI_RATE_HZ, 1, "FLOAT", format="WAV") for p in self._wav_paths]
        self._samples = [0, 0]
        self._video: Any = None  # (container, stream), opened at the first frame
        self.frames: list[LiveFrame] = []
        self.closed = False

    def audio(self, side: int, wave_24k: np.ndarray) -> None:
        self._wavs[side].write(np.asarray(wave_24k, dtype=np.float32))
        self._samples[side] += len(wave_24k)

    def jpeg(self, data: bytes, t_ms: int, width: int, height: int) -> None:
        """One camera frame as the JPEG bytes received, at `t_ms` milliseconds of the session."""
        import av

        if self._video is None:
            container = av.open(str(self.media / f".{VIDEO_FILE}.partial"), "w", format="matroska")
            stream = container.add_stream("mjpeg", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
            stream.time_base = Fraction(1, 1000)
            self._video = (container, stream)
        container, stream = self._video
        packet = av.Packet(data)
        packet.stream = stream
        packet.pts = packet.dts = t_ms
        packet.time_base = Fraction(1, 1000)
        container.mux(packet)

    def frame(self, f: LiveFrame) -> None:
        self.frames.append(f)

    def close(self, face_info: dict | None = None) -> Path | None:
        """Finish the media, write the conversation, its series and the folder's predictions; the conversation id,
        or None when the session had no whole frame."""
        if self.closed:
            return None
        self.closed = True
        for w in self._wavs:
            w.close()
        if self._video is not None:
            self._video[0].close()
            (self.media / f".{VIDEO_FILE}.partial").rename(self.media / VIDEO_FILE)
        n = max(self._samples)  # the silent agent's track is the person's length of zeros, as prepare reads it
        import soundfile as sf

        waves = []
        for side, (path, count) in enumerate(zip(self._wav_paths, self._samples, strict=True)):
            wave = sf.read(str(path), dtype="float32")[0] if count else np.zeros(0, np.float32)
            wave = np.pad(wave, (0, n - len(wave)))
            waves.append(wave)
            buf = io.BytesIO()
            sf.write(buf, wave, MIMI_RATE_HZ, subtype="FLOAT", format="WAV")
            atomic_write_bytes(self.media / f"{PARTICIPANTS[side]}.wav", buf.getvalue())
            path.unlink()
        if not self.frames:
            return None
        t = len(self.frames)
        if mimi_frames(n) != t:
            raise FaceturnError(f"{self.session}: {t} frames for {n} samples (expected {mimi_frames(n)})")
        conv = self._conversation(waves, face_info or {})
        writer = CorpusWriter(self.root / "corpus", CORPUS_NAME, "camera", _extraction(self.settings))
        audio = write_stereo_wav(writer.root, self.session, waves)  # for `view` and `render`, as `prepare --audio`
        entry = ManifestEntry(id=self.session, file=f"{self.session}.safetensors", split=SPLIT, n_frames=t,
                              corpus=CORPUS_NAME, framing="camera", participants=list(PARTICIPANTS), group="",
                              source={"live": self.session, "media": f"media/{self.session}"}, audio=audio)  # fmt: skip
        writer.write(conv, entry)
        writer.finalize()
        series = {
            "p_face": np.array([f.p_yield for f in self.frames], np.float32),
            "p_zeroed": np.array([f.p_yield_zeroed for f in self.frames], np.float32),
            "alert": np.array([f.alert for f in self.frames], bool),
        }
        buf = io.BytesIO()
        np.savez(buf, **series)
        atomic_write_bytes(self.root / "series" / f"{self.session}.npz", buf.getvalue())
        write_predictions(self.root, self.checkpoint, self.train_cfg)
        return self.root / "corpus"

    def _conversation(self, waves: list[np.ndarray], face_info: dict) -> Conversation:
        t = len(self.frames)
        fs = self.frames
        face = np.zeros((2, t, N_FACE), np.float16)
        face[PERSON] = np.stack([f.face for f in fs]).astype(np.float16)
        present = np.zeros((2, t), np.uint8)
        present[PERSON] = [f.face_present for f in fs]
        va = np.stack([voiced_fraction(silero_intervals(w, MIMI_RATE_HZ, self.settings.silero), t) for w in waves])
        video = (self.media / VIDEO_FILE).exists()
        tracks = [{}, {**face_info, "video": f"{self.session}/{VIDEO_FILE}" if video else None,
                       "face_present_fraction": float(present[PERSON].mean())}]  # fmt: skip
        meta = {"source": "live", "va_source": ["silero", "silero"], "participants": list(PARTICIPANTS),
                "face_tracks": tracks, "words_without_times": [0, 0]}  # fmt: skip
        return Conversation(
            id=self.session,
            codes=np.stack([f.codes for f in fs], axis=-1).astype(np.int16),
            text=np.full((2, t), -1, np.int32),
            va=va.astype(np.float16),
            face=face,
            face_present=present,
            meta=meta,
        )


def write_predictions(root: Path, checkpoint: Path, train_cfg: TrainConfig) -> Path:
    """`predictions.npz` over every recorded session that has its series, from the agent's perspective."""
    corpus_root = root / "corpus"
    corpus = Corpus(corpus_root)
    ids = [i for i in corpus.ids(SPLIT) if (root / "series" / f"{i}.npz").is_file()]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("p_face", "p_zeroed", "y", "m", "holder", "frame")}
    conv_index = []
    for ci, conv_id in enumerate(ids):
        with np.load(root / "series" / f"{conv_id}.npz", allow_pickle=False) as z:
            p_face, p_zeroed = z["p_face"], z["p_zeroed"]
        conv = corpus.load(conv_id)
        if len(p_face) != conv.n_frames:
            raise FaceturnError(f"{root / 'series' / conv_id}.npz: {len(p_face)} frames, the conversation has "
                                f"{conv.n_frames}")  # fmt: skip
        lab = turn_labels(np.asarray(conv.va, dtype=np.float32), train_cfg.labels)
        cols["p_face"].append(p_face)
        cols["p_zeroed"].append(p_zeroed)
        cols["y"].append(np.asarray(lab.y, np.uint8))
        cols["m"].append(np.asarray(lab.m, bool))
        cols["holder"].append(np.asarray(lab.floor_relative(AGENT), np.int8))
        cols["frame"].append(np.arange(conv.n_frames, dtype=np.int32))
        conv_index.append(np.full(conv.n_frames, ci, np.int32))
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    meta = prediction_meta(corpus_root, SPLIT, checkpoint, train_cfg, ids, zeroed=True)
    meta.update(eval_zero_groups=meta["zero_groups"], valid=True, source="live",
                note="streamed live: each frame saw the whole session so far (up to the model's context)")  # fmt: skip
    pred = Predictions(conversation=np.concatenate(conv_index), perspective=np.zeros(len(arrays["frame"]), np.int8),
                       meta=json.loads(json.dumps(meta)), **arrays)  # fmt: skip
    out = root / "predictions.npz"
    pred.save(out)
    return out


def trained_on(checkpoint: Path) -> dict:
    """What the checkpoint was trained on, for the page: {"path", "synthetic": True/False/None (corpus gone)}."""
    corpus = read_json(checkpoint, CONFIG_FILE).get("corpus")
    path = corpus.get("path") if isinstance(corpus, dict) else None
    if not isinstance(path, str):
        return {"path": None, "synthetic": None}
    root = Path(path)
    return {"path": path, "synthetic": (root / TRUTH_FILE).is_file() if (root / MANIFEST).is_file() else None}
