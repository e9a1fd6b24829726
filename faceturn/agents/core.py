"""What the framework adapters share: the listener on a worker thread (`ListenerDriver`), the turn decision on its
frames (`TurnDecider`), and a factory that loads a run once and makes one listener per session (`ListenerFactory`).

Why a thread: the listener is synchronous and CPU-bound (Mimi, the face landmarker, the model: tens of ms per 80 ms
frame). Run on an asyncio framework's loop it would stall the loop for that long on every frame; so every push goes
through a queue to one worker thread, which feeds the listener in arrival order and hands the finished frames back
through a callback (the adapters post them to their loop with `call_soon_threadsafe`). One thread, in order, makes a
session's frames a function of its input alone: the same media in the same order give the same frames, whatever the
machine's load (tests/prep/test_agents.py holds the frameworks to that).

The bot's own voice is the model's self side. Frameworks hand it over as fast as the TTS makes it, not as it plays:
the driver queues it and plays it in step with the user's microphone (the microphone's sample count is the clock),
silence when the queue is empty; a barge-in that cuts the bot off drops what is queued (`clear_agent_audio`).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceturn.errors import ConfigError, FaceturnError
from faceturn.export import listening_model
from faceturn.live.listener import AGENT, PERSON, Listener, ListenerSettings, LiveFrame
from faceturn.prep.audio_tokens import MIMI_RATE_HZ, MimiEncoder
from faceturn.prep.media import StreamingResampler
from faceturn.stream import AlertTrigger
from faceturn.timebase import FRAME_S, duration_to_frames


@dataclass
class TurnParams:
    """The turn decision on the listener's frames. P(yield) is high from the frame it reaches `threshold` until it
    falls below threshold − hysteresis (the alerts of `faceturn stream`); a side speaks on a frame whose live voiced
    fraction reaches `voiced_min`."""

    threshold: float = 0.5
    hysteresis: float = 0.1
    min_silence_s: float = 0.24  # the user's silence before a high P(yield) may end the turn (3 frames)
    fallback_timeout_s: float = 3.0  # the user's silence that ends the turn whatever P(yield) says
    voiced_min: float = 0.5  # voiced fraction of a frame from which a side counts as speaking (labels' default)

    def __post_init__(self) -> None:
        AlertTrigger(self.threshold, self.hysteresis)  # checks both
        if not (math.isfinite(self.min_silence_s) and self.min_silence_s >= 0):
            raise ConfigError(f"min_silence_s must be >= 0, got {self.min_silence_s}")
        if not (math.isfinite(self.fallback_timeout_s) and self.fallback_timeout_s > self.min_silence_s):
            raise ConfigError(f"fallback_timeout_s must exceed min_silence_s={self.min_silence_s}, got "
                              f"{self.fallback_timeout_s}")  # fmt: skip
        if not 0.0 < self.voiced_min <= 1.0:
            raise ConfigError(f"voiced_min must be in (0, 1], got {self.voiced_min}")

    @property
    def min_silence_frames(self) -> int:
        return duration_to_frames(self.min_silence_s)

    @property
    def fallback_frames(self) -> int:
        return duration_to_frames(self.fallback_timeout_s)


@dataclass(frozen=True)
class TurnEvent:
    """A decision on frame k. The user's turn starts (`start`: the user speaks while the bot is silent) or takes the
    floor from the bot (`barge_in`: the user speaks over the bot while P(yield) is high: face and voice announce a
    take-over); it ends (`stop`: the user is silent and P(yield) is high; `timeout`: the fallback silence)."""

    kind: str  # "start" | "barge_in" | "stop" | "timeout"
    k: int
    p_yield: float
    silence_s: float  # the user's silence up to and including frame k
    latency_ms: float  # frame k's last input → its P(yield)

    @property
    def t_s(self) -> float:
        return self.k * FRAME_S


class TurnDecider:
    """`TurnParams` applied frame by frame (cheap: the adapters run it on their loop)."""

    def __init__(self, params: TurnParams | None = None):
        self.params = p = params or TurnParams()
        self._trigger = AlertTrigger(p.threshold, p.hysteresis)
        self._min_silence, self._fallback = max(1, p.min_silence_frames), p.fallback_frames  # a silent frame at least
        self.user_turn = False  # a user turn is open (started or barged in, not yet ended)
        self.silence_frames = 0  # the user's silent frames in a row
        self.high = False  # P(yield) above threshold, with hysteresis
        self.high_before = False  # ... as it was before the last frame (what the last frame's P was compared with)

    @property
    def threshold_now(self) -> float:
        """The threshold the last frame's P(yield) was held to: lower by the hysteresis while P was high."""
        p = self.params
        return p.threshold - p.hysteresis if self.high_before else p.threshold

    def update(self, frame: LiveFrame) -> TurnEvent | None:
        p = self.params
        self.high_before = self.high
        self._trigger.update(frame.p_yield)
        self.high = not self._trigger.armed
        user_on = float(frame.va[PERSON]) >= p.voiced_min
        bot_on = float(frame.va[AGENT]) >= p.voiced_min
        self.silence_frames = 0 if user_on else self.silence_frames + 1
        if self.user_turn and self.silence_frames >= self._min_silence:
            if self.high or self.silence_frames >= self._fallback:
                self.user_turn = False
                return self._event("stop" if self.high else "timeout", frame)
        elif not self.user_turn and user_on and (not bot_on or self.high):
            self.user_turn = True
            return self._event("start" if not bot_on else "barge_in", frame)
        return None

    def _event(self, kind: str, frame: LiveFrame) -> TurnEvent:
        return TurnEvent(kind, frame.k, frame.p_yield, self.silence_frames * FRAME_S, frame.latency_ms)


@dataclass
class ListenerFactory:
    """A run loaded once (the model and Mimi are shared, read-only); each call makes a fresh listener, one per
    session. `self_audio`: the bot's voice is fed as the model's self side (else the self side is silent).
    `backend`: "eager" (PyTorch), or "onnx" / "onnx-int8", the run's `faceturn export` graph through onnxruntime with
    `threads` intra-op threads (the export must exist and come from the run's newest checkpoint)."""

    run: Path
    settings: ListenerSettings = field(default_factory=ListenerSettings)
    self_audio: bool = True
    video: bool = True
    device: str = "cpu"
    backend: str = "eager"
    threads: int | None = None

    def __post_init__(self) -> None:
        from transformers import MimiModel

        self.model = listening_model(self.run, self.backend, device=self.device, threads=self.threads)
        try:
            mimi_model = MimiModel.from_pretrained(self.settings.mimi.model)
        except (OSError, ValueError) as e:
            raise FaceturnError(f"cannot load Mimi {self.settings.mimi.model!r} ({str(e).splitlines()[0]}): give a "
                                "local folder saved with save_pretrained") from None  # fmt: skip
        self.mimi = MimiEncoder(self.settings.mimi, model=mimi_model)

    def __call__(self) -> Listener:
        return Listener(self.model, self.mimi, self.settings, self_audio=self.self_audio, video=self.video)


_CLOSE = object()


class ListenerDriver:
    """A listener on its own worker thread. `push_*` and `clear_agent_audio` return at once (call them from the
    loop); `deliver(frames)` is called on the worker thread with each batch of finished frames, `fail(error)` once if
    the listener raises (the driver then stops). `make_listener` runs on the worker too, so loading stays off the
    loop. `close` waits for the rest of the frames: call it off the loop (`asyncio.to_thread`)."""

    def __init__(
        self,
        make_listener: Callable[[], Listener],
        deliver: Callable[[list[LiveFrame]], None],
        fail: Callable[[BaseException], None],
        *,
        name: str = "faceturn-listener",
    ):
        self._make, self._deliver, self._fail = make_listener, deliver, fail
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.user_samples, self.user_rate_hz = 0, 0  # the caller's count: the clock that stamps video
        self.listener: Listener | None = None
        self.error: BaseException | None = None
        self.longest_step_s = 0.0  # the longest the worker spent on one input (what would stall a loop that ran it)
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------------------------------------- the caller
    @property
    def user_time_s(self) -> float:
        """Seconds of the user's audio pushed so far."""
        return self.user_samples / self.user_rate_hz if self.user_rate_hz else 0.0

    def push_user_audio(self, samples: np.ndarray, rate_hz: int) -> None:
        self._put(("user", np.asarray(samples), int(rate_hz)))
        self.user_samples += len(samples)
        self.user_rate_hz = int(rate_hz)

    def push_agent_audio(self, samples: np.ndarray, rate_hz: int) -> None:
        self._put(("agent", np.asarray(samples), int(rate_hz)))

    def clear_agent_audio(self) -> None:
        self._put(("clear",))

    def push_video(self, rgb: np.ndarray, t_s: float | None = None) -> None:
        """A camera frame at `t_s` seconds of the user's audio clock (default: now, the audio pushed so far)."""
        self._put(("video", np.asarray(rgb), self.user_time_s if t_s is None else float(t_s)))

    @property
    def backlog(self) -> int:
        """Inputs waiting for the worker (grows when the listener falls behind real time)."""
        return self._queue.qsize()

    def close(self, timeout_s: float = 60.0) -> None:
        """End of input: the listener's last frames are delivered, then the worker ends."""
        if not self._closed:
            self._closed = True
            self._queue.put(_CLOSE)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise FaceturnError(f"the listener's worker did not finish within {timeout_s:g} s")

    def _put(self, item: tuple) -> None:
        if self._closed:
            raise FaceturnError("the listener was closed: no more input")
        if self.error is not None:
            raise FaceturnError(f"the listener failed: {self.error}") from self.error
        self._queue.put(item)

    # ---------------------------------------------------------------------------------------------- the worker
    def _work(self) -> None:
        try:
            self.listener = listener = self._make()
            agent = _AgentPlayout(listener.self_audio)
            while True:
                deadline = listener.video_deadline()
                wait = None if deadline is None else max(0.0, deadline - listener.clock())
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:  # a frame stopped waiting for its video
                    self._send(listener.frames())
                    continue
                if item is _CLOSE:
                    self._send(listener.close())
                    return
                kind, t0 = item[0], time.perf_counter()
                if kind == "user":
                    listener.push_audio(PERSON, item[1], item[2])
                    if listener.self_audio:
                        listener.push_audio(AGENT, agent.take(len(item[1]), item[2]), MIMI_RATE_HZ)
                elif kind == "agent":
                    agent.add(item[1], item[2])
                    continue  # no frame completes until the user's audio moves the clock
                elif kind == "clear":
                    agent.clear()
                    continue
                else:
                    listener.push_video(item[1], item[2])
                frames = listener.frames()
                self.longest_step_s = max(self.longest_step_s, time.perf_counter() - t0)
                self._send(frames)
        except BaseException as e:  # handed to the loop, never lost in a thread
            self.error = e
            self._fail(e)
            if self.listener is not None:
                self.listener.close()

    def _send(self, frames: list[LiveFrame]) -> None:
        if frames:
            self._deliver(frames)


def first_channel_int16(pcm: bytes, channels: int) -> np.ndarray:
    """The first channel of interleaved int16 PCM (the frameworks' audio frames)."""
    x = np.frombuffer(pcm, dtype=np.int16)
    return x[::channels] if channels > 1 else x


class _AgentPlayout:
    """The bot's voice at 24 kHz, played in step with the user's microphone: after n microphone samples at rate r,
    exactly floor(n · 24000 / r) samples have played (silence when nothing was queued)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._pieces: deque[np.ndarray] = deque()
        self._queued = 0
        self._resampler: StreamingResampler | None = None
        self._mic_samples = 0
        self._played = 0

    def add(self, samples: np.ndarray, rate_hz: int) -> None:
        if not self.enabled:
            raise FaceturnError("this listener was made for a silent agent (self_audio=False): no bot audio")
        x = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float32)
        if self._resampler is None or self._resampler.from_hz != rate_hz:
            self._flush()
            self._resampler = StreamingResampler(rate_hz, MIMI_RATE_HZ)
        self._append(self._resampler.push(x.reshape(-1)))

    def clear(self) -> None:
        self._pieces, self._queued, self._resampler = deque(), 0, None

    def take(self, n_mic: int, mic_rate_hz: int) -> np.ndarray:
        self._mic_samples += n_mic
        due = self._mic_samples * MIMI_RATE_HZ // mic_rate_hz
        n, self._played = due - self._played, due
        if self._queued < n:  # the utterance ends here: its resampler's tail plays too
            self._flush()
        out, need = [], n
        while need and self._pieces:
            piece = self._pieces.popleft()
            out.append(piece[:need])
            if piece.size > need:
                self._pieces.appendleft(piece[need:])
            need -= out[-1].size
        self._queued -= n - need
        return np.concatenate([*out, np.zeros(need, np.float32)])

    def _flush(self) -> None:
        if self._resampler is not None:
            self._append(self._resampler.flush())
            self._resampler = None

    def _append(self, x: np.ndarray) -> None:
        if x.size:
            self._pieces.append(x)
            self._queued += x.size
