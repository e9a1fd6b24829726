"""The streaming listener: raw audio of both sides and the interlocutor's camera frames in, one `LiveFrame` per
80 ms out (Mimi codes, voice activity, the A61 face, P(yield) with the face and with it zeroed, alerts).

Offline equality is the contract: on the same media, the codes, faces and P(yield) equal what `prepare` +
`predict` give (tests/test_live.py). So every stage is the offline one, driven incrementally:
- audio of any rate and chunk size → `StreamingResampler` (equal to `resample` of the whole signal) → 24 kHz;
  whole 80 ms frames → transformers' Mimi in streaming mode with `MimiEncoder`'s model and settings (its caches
  make frame-by-frame encoding equal to the offline chunks). Both sides are one batch, as `prepare` encodes them.
  An agent that never speaks (no `self_audio`) is not encoded at all: Mimi's codes of digital silence settle to a
  constant after a few frames, so a table encoded once at start-up (and checked to settle) stands in for it;
- video frames with timestamps → `GridPicker` (the `nearest_on_grid` of `prepare`) → the frame nearest each 80 ms
  instant → `FaceFollower` (the landmarker in VIDEO mode with `prepare`'s crop logic and A61 mapping);
- `SileroStream` gives each side's voice activity for display (Silero without look-ahead; a recording stores the
  offline VAD of the whole session);
- a P(yield) stream with two rows, the face as given and zeroed (values 0, face_present 0): `TurnYieldStream` on the
  PyTorch model, or `OnnxYieldStream` on its exported step (`faceturn live --backend onnx`).

Participant 0 is the model's own side (the agent), participant 1 the interlocutor at the camera, whose face the
model reads. Time 0 is the first audio sample; video timestamps are seconds on the same clock.

Late or missing input is explicit. A frame waits for both sides' audio (an audio side that lags holds the frames
back: `Counters.audio_waits`). Its face waits for the video frame after its instant; once the frame's audio is
complete, it waits at most `video_wait_s` longer, then goes on with the frames that did arrive (`video_late`), and a
frame without a face is given `face_present = 0`, the model's missing-face input (`face_missing`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from faceturn.errors import FaceturnError
from faceturn.export import OnnxStep, listen_stream
from faceturn.model import Model
from faceturn.prep.audio_tokens import MIMI_FRAME_SAMPLES, MIMI_RATE_HZ, MimiEncoder, MimiSettings
from faceturn.prep.face import FaceFollower, FaceSettings, a61_of, landmarker
from faceturn.prep.media import GridPicker, StreamingResampler
from faceturn.prep.vad import SileroSettings, SileroStream
from faceturn.schema import N_CODEBOOKS, N_FACE
from faceturn.stream import AlertTrigger
from faceturn.timebase import FRAME_S

AGENT, PERSON = 0, 1
PARTICIPANTS = ("agent", "person")  # names in recordings; sorted, so `prepare recordings` keeps the order
MIN_RATE_HZ, MAX_RATE_HZ = 8_000, 192_000
SILENCE_TABLE_FRAMES = 25  # 2 s of Mimi codes of silence; the second half must be constant


@dataclass
class ListenerSettings:
    """Everything the listener does beyond the model; the extraction parts are `prepare`'s own settings."""

    mimi: MimiSettings = field(default_factory=MimiSettings)
    face: FaceSettings = field(default_factory=FaceSettings)
    silero: SileroSettings = field(default_factory=SileroSettings)
    video_wait_s: float = 0.1  # after a frame's audio is complete, how long its face may still wait for video
    threshold: float = 0.5  # P(yield) that raises a hand-over alert (as `faceturn stream`)
    hysteresis: float = 0.1


@dataclass
class Counters:
    """What did not go as it should, counted, never silent."""

    frames: int = 0  # frames emitted
    face_missing: int = 0  # emitted with face_present = 0 (no face found, or no video near the instant in time)
    video_late: int = 0  # instants decided without the video frame after them (it had not arrived in time)
    no_video: int = 0  # instants without any video frame within the tolerance
    video_dropped: int = 0  # video frames that came out of order, or after their instants were decided
    audio_waits: int = 0  # frames whose audio was complete on one side and waited over 80 ms for the other


@dataclass
class LiveFrame:
    """One 80 ms frame k (starting at k · 0.08 s) as the model saw it."""

    k: int
    codes: np.ndarray  # [2, 8] int16, agent then person
    va: np.ndarray  # [2] voiced fraction (live Silero, for display)
    face: np.ndarray  # [61] float32, the person's A61 (zeros when absent)
    face_present: bool
    p_yield: float  # with the face
    p_yield_zeroed: float  # with the whole face zeroed
    alert: bool  # a hand-over alert fired on this frame
    input_done_s: float  # clock time when the frame's last input (audio or video) was in
    ready_s: float  # clock time when P(yield) was computed
    stage_ms: dict[str, float]  # mimi, face, vad, model (this frame's share)

    @property
    def t_s(self) -> float:
        return self.k * FRAME_S

    @property
    def latency_ms(self) -> float:
        """From the frame's last input to its P(yield)."""
        return max(0.0, self.ready_s - self.input_done_s) * 1000


class Listener:
    """Feed `push_audio` / `push_video` from any threads; `frames()` returns every frame that is ready.

    `self_audio=False` promises that the agent side stays silent (nothing is pushed for it); `agent_voice` (24 kHz
    samples) is played as the agent's audio in step with the person's, then silence; `sink`, when given, receives
    each side's 24 kHz audio as it is resampled (`sink(side, samples)`), for recording. `model` is the PyTorch model
    or its exported step (`faceturn.export.OnnxStep`, shared by every listener of a process).
    """

    def __init__(
        self,
        model: Model | OnnxStep,
        mimi: MimiEncoder,
        settings: ListenerSettings | None = None,
        *,
        self_audio: bool = False,
        agent_voice: np.ndarray | None = None,
        video: bool = True,
        sink: Callable[[int, np.ndarray], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.settings = s = settings or ListenerSettings()
        if s.video_wait_s < 0:
            raise FaceturnError(f"video_wait_s must be >= 0, got {s.video_wait_s}")
        self.trigger = AlertTrigger(s.threshold, s.hysteresis)
        self_audio = self_audio or agent_voice is not None
        self.mimi, self.self_audio, self.video, self.sink, self.clock = mimi, self_audio, video, sink, clock
        self._agent_voice = None if agent_voice is None else np.asarray(agent_voice, np.float32).reshape(-1)
        self._agent_played = 0
        # row 0: the face as given, row 1: zeroed
        self.stream = listen_stream(model, 2)
        self.counters = Counters()
        self._rates: list[int | None] = [None, None]
        self._resamplers: list[StreamingResampler | None] = [None, None]
        self._vad = [SileroStream(MIMI_RATE_HZ, s.silero) for _ in PARTICIPANTS]
        self._audio = [np.zeros(0, np.float32), np.zeros(0, np.float32)]  # 24 kHz, not yet encoded
        self._audio_done_s: dict[int, float] = {}  # frame → clock time its audio was complete on both sides
        self._side_done_s: dict[int, float] = {}  # frame → clock time one side completed it, the other not yet
        self._vad_ms = 0.0  # VAD time since the last emitted frames
        self._mimi_cache: tuple[Any, Any] = (None, None)
        self._silence = None if self_audio else self._silence_codes()
        # faces: the video thread decides instants (GridPicker) and runs the landmarker in instant order
        self._face_lock = threading.Lock()
        self._process_lock = threading.Lock()
        self._picker = GridPicker(s.face.tolerance_s)
        self._faces: dict[int, tuple[np.ndarray | None, float, float]] = {}  # k → (A61 or None, ms, done_s)
        self._last_video_s = -np.inf
        self._landmarker_ctx = landmarker(s.face) if video else None
        self._follower = FaceFollower(self._landmarker_ctx.__enter__(), s.face) if video else None
        self._next = 0  # the next frame to emit
        self._closed = False

    # ------------------------------------------------------------------------------------------------------ inputs
    def push_audio(self, side: int, samples: np.ndarray, rate_hz: int) -> None:
        """Audio of one side (AGENT or PERSON): mono samples (float in [-1, 1], or int16) at `rate_hz`, in order."""
        if side not in (AGENT, PERSON):
            raise FaceturnError(f"audio side must be {AGENT} (agent) or {PERSON} (person), got {side!r}")
        if side == AGENT and not self.self_audio:
            raise FaceturnError("this listener was made for a silent agent (self_audio=False): no agent audio")
        if side == AGENT and self._agent_voice is not None:
            raise FaceturnError("this listener plays its agent_voice: no other agent audio")
        x = np.asarray(samples)
        if x.ndim != 1:
            raise FaceturnError(f"{PARTICIPANTS[side]} audio must be mono (1-D), got shape {x.shape}")
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        elif not np.issubdtype(x.dtype, np.floating):
            raise FaceturnError(f"{PARTICIPANTS[side]} audio must be float or int16 samples, got {x.dtype}")
        if not np.isfinite(x).all():
            raise FaceturnError(f"{PARTICIPANTS[side]} audio holds NaN or infinite samples")
        rate_hz = int(rate_hz)
        if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
            raise FaceturnError(f"{PARTICIPANTS[side]} audio rate {rate_hz} Hz is outside "
                                f"[{MIN_RATE_HZ}, {MAX_RATE_HZ}] Hz")  # fmt: skip
        if self._rates[side] is None:
            self._rates[side] = rate_hz
            self._resamplers[side] = StreamingResampler(rate_hz, MIMI_RATE_HZ)
        elif self._rates[side] != rate_hz:
            raise FaceturnError(f"{PARTICIPANTS[side]} audio changed rate mid-session: {self._rates[side]} → "
                                f"{rate_hz} Hz")  # fmt: skip
        wave = self._resamplers[side].push(x.astype(np.float32))
        self._add_24k(side, wave)
        if side == PERSON and self._agent_voice is not None:
            self._play_agent(len(wave))

    def _play_agent(self, n: int) -> None:
        """The agent's next n samples of `agent_voice` (silence once it has ended), in step with the person."""
        voice = self._agent_voice[self._agent_played : self._agent_played + n]
        self._agent_played += n
        self._add_24k(AGENT, np.pad(voice, (0, n - len(voice))))

    def _add_24k(self, side: int, wave: np.ndarray) -> None:
        if not wave.size:
            return
        t0 = self.clock()
        self._vad[side].push(wave)
        vad_ms = (self.clock() - t0) * 1000
        if self.sink is not None:
            self.sink(side, wave)
        with self._process_lock:
            self._vad_ms += vad_ms
            before = self._complete_frames()
            self._audio[side] = np.concatenate([self._audio[side], wave])
            after = self._complete_frames()
            now = self.clock()
            for k in range(before, after):
                self._audio_done_s[k] = now
                first = self._side_done_s.pop(k, now)
                self.counters.audio_waits += now - first > FRAME_S  # the other side came more than a frame later
            if self.self_audio:  # frames this side completed that still wait for the other
                mine = self._next + len(self._audio[side]) // MIMI_FRAME_SAMPLES
                for k in range(after, mine):
                    self._side_done_s.setdefault(k, now)

    def push_video(self, rgb: np.ndarray, t_s: float) -> None:
        """One RGB uint8 frame [H, W, 3] of the person's camera at `t_s` seconds (the audio's clock)."""
        if not self.video:
            raise FaceturnError("this listener was made without video")
        img = np.asarray(rgb)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 16:
            raise FaceturnError(f"video frames must be RGB uint8 [H, W, 3] of at least 16×16, got {img.dtype} "
                                f"{img.shape}")  # fmt: skip
        if not np.isfinite(t_s):
            raise FaceturnError(f"video timestamp must be finite, got {t_s}")
        with self._face_lock:
            if t_s <= self._last_video_s or t_s < (self._picker.k - 1) * FRAME_S:
                self.counters.video_dropped += 1
                return
            self._last_video_s = t_s
            self._run_faces(self._picker.push(float(t_s), img))

    def _run_faces(self, decided: list[tuple[int, np.ndarray | None]]) -> None:
        """Landmarks for decided instants, in order (the caller holds the face lock)."""
        for k, img in decided:
            t0 = self.clock()
            face = None
            if img is None:
                self.counters.no_video += 1
            else:
                found = self._follower.landmarks(k, img)
                face = None if found is None else a61_of(found, self.settings.face)
            done = self.clock()
            self._faces[k] = (face, (done - t0) * 1000, done)

    def face_info(self) -> dict:
        """What `prepare` records about a face track (crop sources, detector runs, instants without video)."""
        info = self._follower.info() if self._follower is not None else {}
        return {**info, "grid_frames_without_video": self.counters.no_video}

    # ------------------------------------------------------------------------------------------------------ output
    def _complete_frames(self) -> int:
        """Frames whose audio is complete on every side that speaks (encoded ones included)."""
        sides = (AGENT, PERSON) if self.self_audio else (PERSON,)
        return min(self._next + len(self._audio[s]) // MIMI_FRAME_SAMPLES for s in sides)

    def frames(self) -> list[LiveFrame]:
        """Every frame that is ready now, in order (none while a frame's face may still wait for video)."""
        with self._process_lock:
            return self._emit(final=False)

    def video_deadline(self) -> float | None:
        """Clock time at which the next frame stops waiting for its video (None when no frame waits): call `frames`
        then, even if no input comes."""
        with self._process_lock:
            k = self._next
            if not self.video or k >= self._complete_frames() or k in self._faces:
                return None
            return self._audio_done_s.get(k, self.clock()) + self.settings.video_wait_s

    def close(self) -> list[LiveFrame]:
        """End of the session: the rest of the audio as `prepare` ends it (the last partial frame completed with
        silence), faces decided from the video that arrived; then the landmarker is released."""
        with self._process_lock:
            if self._closed:
                return []
            for side in (AGENT, PERSON) if self.self_audio else (PERSON,):
                if self._resamplers[side] is not None:
                    tail = self._resamplers[side].flush()
                    self._audio[side] = np.concatenate([self._audio[side], tail])
                    if self.sink is not None and tail.size:
                        self.sink(side, tail)
                    if side == PERSON and self._agent_voice is not None and tail.size:
                        voice = self._agent_voice[self._agent_played : self._agent_played + tail.size]
                        self._agent_played += tail.size
                        voice = np.pad(voice, (0, tail.size - len(voice)))
                        self._audio[AGENT] = np.concatenate([self._audio[AGENT], voice])
                        if self.sink is not None:
                            self.sink(AGENT, voice)
            longest = max(len(a) for a in self._audio)
            for side in range(2):
                n = -(-longest // MIMI_FRAME_SAMPLES) * MIMI_FRAME_SAMPLES
                self._audio[side] = np.pad(self._audio[side], (0, n - len(self._audio[side])))
            now = self.clock()
            for k in range(self._next, self._complete_frames()):
                self._audio_done_s.setdefault(k, now)
            out = self._emit(final=True)
            self._closed = True
        if self._landmarker_ctx is not None:
            self._landmarker_ctx.__exit__(None, None, None)
        return out

    def _emit(self, final: bool) -> list[LiveFrame]:
        n_ready = self._complete_frames()
        ready = []
        for k in range(self._next, n_ready):
            if self.video and k not in self._faces:
                waited_s = self.clock() - self._audio_done_s.get(k, self.clock())
                if not final and waited_s < self.settings.video_wait_s:
                    break
                with self._face_lock:
                    if k not in self._faces:  # the video thread may have decided it meanwhile
                        if not final:
                            self.counters.video_late += k + 1 - self._picker.k
                        self._run_faces(self._picker.close(k + 1))
            ready.append(k)
        if not ready:
            return []
        return self._compute(ready)

    def _compute(self, ks: list[int]) -> list[LiveFrame]:
        n = len(ks)
        t0 = self.clock()
        codes = self._encode(n)  # [2, 8, n]
        t1 = self.clock()
        mimi_ms = (t1 - t0) * 1000 / n
        vad_ms, self._vad_ms = self._vad_ms / n, 0.0
        out = []
        for i, k in enumerate(ks):
            face, face_ms, face_done = self._faces.pop(k, (None, 0.0, 0.0))
            present = face is not None
            self.counters.face_missing += not present
            face_in = torch.zeros(2, N_FACE)
            if present:  # at the store's precision, so that a recorded session predicts as it did live
                face_in[0] = torch.from_numpy(face.astype(np.float16).astype(np.float32))
            c = torch.from_numpy(codes[:, :, i].astype(np.int64))
            m0 = self.clock()
            p = self.stream.step_batch(
                c[AGENT].expand(2, -1), c[PERSON].expand(2, -1), face_in, torch.tensor([present, False])
            )
            ready = self.clock()
            p_face, p_zero = float(p[0]), float(p[1])
            out.append(
                LiveFrame(
                    k=k,
                    codes=codes[:, :, i].copy(),
                    va=np.array([self._vad[s].frame(k) for s in (AGENT, PERSON)], dtype=np.float32),
                    face=face if present else np.zeros(N_FACE, np.float32),
                    face_present=present,
                    p_yield=p_face,
                    p_yield_zeroed=p_zero,
                    alert=self.trigger.update(p_face),
                    input_done_s=max(self._audio_done_s.pop(k, t0), face_done),
                    ready_s=ready,
                    stage_ms={"mimi": mimi_ms, "face": face_ms, "vad": vad_ms, "model": (ready - m0) * 1000},
                )
            )
        self._next = ks[-1] + 1
        self.counters.frames += n
        return out

    def _encode(self, n: int) -> np.ndarray:
        """Mimi codes [2, 8, n] of the next n frames (the frames' audio leaves the buffers)."""
        take = n * MIMI_FRAME_SAMPLES
        sides = (AGENT, PERSON) if self.self_audio else (PERSON,)
        x = torch.from_numpy(np.stack([self._audio[s][:take] for s in sides]))[:, None, :]
        for s in sides:
            self._audio[s] = self._audio[s][take:]
        enc, pad = self._mimi_cache
        with torch.inference_mode():
            res = self.mimi.model.encode(
                x.to(self.mimi.device),
                num_quantizers=self.mimi.settings.n_codebooks,
                encoder_cache=enc,
                padding_cache=pad,
                use_streaming=True,
                return_dict=True,
            )
        self._mimi_cache = (res.encoder_cache, res.padding_cache)
        got = res.audio_codes.cpu().numpy().astype(np.int16)
        if self.self_audio:
            return got
        first = self._next
        idx = np.minimum(np.arange(first, first + n), self._silence.shape[-1] - 1)
        return np.stack([self._silence[:, idx], got[0]])

    def _silence_codes(self) -> np.ndarray:
        """Mimi's codes [8, F] of silence from the start of a stream; past F the last column repeats (checked)."""
        zeros = np.zeros(SILENCE_TABLE_FRAMES * MIMI_FRAME_SAMPLES, np.float32)
        table = self.mimi.encode([zeros], MIMI_RATE_HZ)[0]
        half = table[:, SILENCE_TABLE_FRAMES // 2 :]
        if not (half == half[:, -1:]).all():
            raise FaceturnError(
                "this Mimi's codes of silence do not settle within "
                f"{SILENCE_TABLE_FRAMES * FRAME_S:g} s: run the listener with self_audio=True"
            )
        if table.shape[0] != N_CODEBOOKS:
            raise FaceturnError(f"Mimi gave {table.shape[0]} codebooks, the model reads {N_CODEBOOKS}")
        return table
