"""LiveKit Agents (livekit-agents 1.8.9): the face-aware listener as a streaming turn detector.

`FaceTurnDetector` satisfies the `_StreamingTurnDetector` protocol of `livekit.agents.voice.turn` (private: tested
with 1.8.9 only, which the `agents` extra pins). The session pushes the user's audio into its stream
(`push_audio(rtc.AudioFrame)`); the camera is tapped from the participant's video track (`push_video`, or
`watch_video` on an `rtc.VideoStream`); the bot's voice, optionally, with `push_agent_audio` (the model's self side).
When the session's VAD hears a pause it calls `predict()`; the future resolves once the listener has scored the frame
holding the latest audio, with that frame's P(yield) as `end_of_turn_probability` (no backchannel probability: the
model has none). `unlikely_threshold` is the detector's threshold, lowered by the hysteresis while P(yield) was high
before that frame: the session then ends the turn after its endpointing `min_delay`, or waits up to `max_delay`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterable, Callable

import numpy as np
from livekit import rtc
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions
from livekit.agents.voice.turn import TurnDetectionEvent

from faceturn.agents.core import ListenerDriver, TurnDecider, TurnParams, first_channel_int16
from faceturn.live.listener import PERSON, Listener, LiveFrame
from faceturn.timebase import FRAME_S

HISTORY_FRAMES = 256  # recent frames kept to answer a prediction for a frame already scored (20 s)


class FaceTurnDetector:
    """A streaming turn detector on faceturn's listener. `listener_factory` makes one listener per stream (on its
    worker thread), e.g. `faceturn.agents.core.ListenerFactory(run, self_audio=False)`."""

    def __init__(
        self,
        listener_factory: Callable[[], Listener],
        *,
        threshold: float = 0.5,
        hysteresis: float = 0.1,
        prediction_timeout_s: float = 1.0,
    ):
        self._factory = listener_factory
        self.params = TurnParams(threshold=threshold, hysteresis=hysteresis)
        self.prediction_timeout_s = prediction_timeout_s
        self.streams: list[FaceTurnStream] = []  # open streams (one per session activity)

    @property
    def model(self) -> str:
        return "faceturn"

    @property
    def provider(self) -> str:
        return "faceturn"

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> FaceTurnStream:
        s = FaceTurnStream(self)
        self.streams.append(s)
        return s

    def push_video(self, frame: rtc.VideoFrame, t_s: float | None = None) -> None:
        """A camera frame of the user, to every open stream (stamped with each stream's audio clock by default)."""
        rgb = _rgb(frame)
        for s in self.streams:
            s.push_video_rgb(rgb, t_s)

    def push_agent_audio(self, frame: rtc.AudioFrame) -> None:
        """The bot's voice as it is produced (played in step with the user's microphone)."""
        for s in self.streams:
            s.driver.push_agent_audio(_mono_int16(frame), frame.sample_rate)

    async def watch_video(self, video: AsyncIterable[rtc.VideoFrameEvent]) -> None:
        """Feed the user's video track (an `rtc.VideoStream`) until it ends."""
        async for event in video:
            self.push_video(event.frame)


class FaceTurnStream:
    """One session's stream (`_StreamingTurnDetectorStream`): audio in, `TurnDetectionEvent`s on request."""

    def __init__(self, detector: FaceTurnDetector):
        self._detector = detector
        self._loop = asyncio.get_running_loop()
        self._decider = TurnDecider(detector.params)
        self._pending: list[tuple[int, float, asyncio.Future[TurnDetectionEvent]]] = []
        self._recent: deque[tuple[int, float, float, float]] = deque(maxlen=HISTORY_FRAMES)  # k, p, threshold, ms
        self._last_threshold = detector.params.threshold
        self._last_voiced_k = -1
        self._start_wall: float | None = None
        self.predictions: deque[tuple[int, TurnDetectionEvent, float]] = deque(maxlen=HISTORY_FRAMES)  # k, event, thr
        self.error: BaseException | None = None
        self.driver = ListenerDriver(
            detector._factory,
            deliver=lambda frames: self._loop.call_soon_threadsafe(self._on_frames, frames),
            fail=lambda e: self._loop.call_soon_threadsafe(self._on_error, e),
            name="faceturn-livekit-listener",
        )
        self._closing: asyncio.Task | None = None

    # ------------------------------------------------------------------------------------------------ protocol
    @property
    def model(self) -> str:
        return self._detector.model

    @property
    def provider(self) -> str:
        return self._detector.provider

    @property
    def is_fallback(self) -> bool:
        return False

    @property
    def prediction_timeout(self) -> float:
        return self._detector.prediction_timeout_s

    async def unlikely_threshold(self, language) -> float | None:
        return self._last_threshold

    async def backchannel_threshold(self, language) -> float | None:
        return None  # the model gives no backchannel probability

    async def supports_language(self, language) -> bool:
        return True  # Mimi's codes and the face, not words

    def push_audio(self, frame: rtc.AudioFrame) -> None:
        if self._start_wall is None:
            self._start_wall = time.time()
        self.driver.push_user_audio(_mono_int16(frame), frame.sample_rate)

    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        """P(yield) of the frame that holds the latest audio pushed, once it is scored."""
        fut: asyncio.Future[TurnDetectionEvent] = self._loop.create_future()
        if self.error is not None:
            fut.set_exception(self.error)
            return fut
        k = max(0, math.ceil(self.driver.user_time_s / FRAME_S - 1e-9) - 1)
        for rk, p, threshold, ms in self._recent:
            if rk == k:
                self._resolve(fut, k, p, threshold, ms, time.time())
                return fut
        self._pending.append((k, time.time(), fut))
        return fut

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        for _, _, fut in self._pending:
            fut.cancel()
        self._pending.clear()

    def flush(self, reason: str | None = None) -> None:
        self.cancel_inference()  # the listener keeps listening: its state spans turns

    def end_input(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(asyncio.to_thread(self.driver.close))

    async def aclose(self) -> None:
        self.cancel_inference()
        self.end_input()
        await self._closing
        if self in self._detector.streams:
            self._detector.streams.remove(self)

    # ------------------------------------------------------------------------------------------------ the rest
    def push_video_rgb(self, rgb: np.ndarray, t_s: float | None = None) -> None:
        if self._closing is None:
            self.driver.push_video(rgb, t_s)

    def _on_frames(self, frames: list[LiveFrame]) -> None:
        for f in frames:
            self._decider.update(f)
            if float(f.va[PERSON]) >= self._decider.params.voiced_min:
                self._last_voiced_k = f.k
            ms = f.latency_ms
            self._recent.append((f.k, f.p_yield, self._decider.threshold_now, ms))
            waiting = []
            for k, asked, fut in self._pending:
                if fut.done():
                    continue
                if k == f.k:
                    self._resolve(fut, k, f.p_yield, self._decider.threshold_now, ms, asked)
                else:  # frames come in order: a pending request is for a later frame
                    waiting.append((k, asked, fut))
            self._pending = waiting

    def _resolve(self, fut: asyncio.Future, k: int, p: float, threshold: float, ms: float, asked: float) -> None:
        start = self._start_wall if self._start_wall is not None else time.time()
        event = TurnDetectionEvent(
            type="eot_prediction",
            end_of_turn_probability=p,
            last_speaking_time=start + (self._last_voiced_k + 1) * FRAME_S,
            detection_delay=time.time() - asked,
            inference_duration=ms / 1000,
        )
        self._last_threshold = threshold
        self.predictions.append((k, event, threshold))
        fut.set_result(event)

    def _on_error(self, error: BaseException) -> None:
        self.error = error
        for _, _, fut in self._pending:
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()


def _mono_int16(frame: rtc.AudioFrame) -> np.ndarray:
    return first_channel_int16(frame.data, frame.num_channels)


def _rgb(frame: rtc.VideoFrame) -> np.ndarray:
    if frame.type != rtc.VideoBufferType.RGB24:
        frame = frame.convert(rtc.VideoBufferType.RGB24)
    return np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 3)
