"""Pipecat (pipecat-ai 1.14): the face-aware listener as user-turn strategies.

- `FaceTurnUserTurnStopStrategy` reads the user's microphone (`InputAudioRawFrame`) and camera (`InputImageRawFrame`,
  `UserImageRawFrame`) as they pass the user aggregator, runs the listener on a worker thread, and ends the user's turn
  when `TurnDecider` says so (P(yield) high after `min_silence_secs`, or `fallback_timeout_secs` of silence); each
  decision is reported as a `TurnMetricsData` (probability, processing time) in a `MetricsFrame`, as Smart Turn
  reports its own.
- `FaceTurnUserTurnStartStrategy` (bound to a stop strategy) starts the user's turn when the user speaks while the bot
  is silent, and on a likely barge-in (the user speaks over the bot while P(yield) is high) starts it with an
  interruption.
- `FaceTurnBotAudioTap`, a processor placed after the TTS, hands the bot's voice to the listener as the model's self
  side and drops what is queued when the bot is interrupted.

Only the strategies decide user turns here: Pipecat's VAD start strategy may be kept next to them, but a stop is only
accepted while Pipecat's own VAD hears no speech.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
from loguru import logger
from PIL import Image
from pipecat.audio.turn.base_turn_analyzer import BaseTurnParams
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputImageRawFrame,
    InterruptionFrame,
    MetricsFrame,
    OutputAudioRawFrame,
)
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start import BaseUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy
from pydantic import Field

from faceturn.agents.core import ListenerDriver, TurnDecider, TurnEvent, TurnParams, first_channel_int16
from faceturn.live.listener import Listener, LiveFrame


class FaceTurnParams(BaseTurnParams):
    """The turn decision (faceturn.agents.core.TurnParams), named as Pipecat names its parameters."""

    threshold: float = Field(0.5, description="P(yield) that ends the user's turn")
    hysteresis: float = Field(0.1, description="P(yield) stays high until it falls below threshold - hysteresis")
    min_silence_secs: float = Field(0.24, description="the user's silence before a high P(yield) ends the turn")
    fallback_timeout_secs: float = Field(3.0, description="the user's silence that ends the turn whatever P says")
    voiced_min: float = Field(0.5, description="voiced fraction of an 80 ms frame from which a side speaks")

    def turn_params(self) -> TurnParams:
        return TurnParams(self.threshold, self.hysteresis, self.min_silence_secs, self.fallback_timeout_secs,
                          self.voiced_min)  # fmt: skip


class FaceTurnUserTurnStopStrategy(BaseUserTurnStopStrategy):
    """Ends the user's turn on the listener's P(yield). `listener_factory` makes the session's listener (on the
    worker thread: loading never blocks the loop), e.g. `faceturn.agents.core.ListenerFactory(run)`.

    Events: `on_turn_event(strategy, event: TurnEvent)` for every decision (start, barge_in, stop, timeout)."""

    def __init__(
        self, *, listener_factory: Callable[[], Listener], params: FaceTurnParams | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self._factory = listener_factory
        self._params = params or FaceTurnParams()
        self._decider = TurnDecider(self._params.turn_params())
        self._driver: ListenerDriver | None = None
        self._open = False  # between setup and cleanup
        self._inbox: asyncio.Queue[list[LiveFrame] | BaseException] | None = None
        self._consumer: asyncio.Task | None = None
        self.last_frame: LiveFrame | None = None
        self.last_event: TurnEvent | None = None
        self._register_event_handler("on_turn_event", sync=True)

    @property
    def params(self) -> FaceTurnParams:
        return self._params

    @property
    def decider(self) -> TurnDecider:
        return self._decider

    @property
    def listener(self) -> Listener | None:
        """The session's listener once the worker has made it (its counters say what went wrong, if anything)."""
        return None if self._driver is None else self._driver.listener

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        loop = asyncio.get_running_loop()
        self._inbox = inbox = asyncio.Queue()
        self._driver = ListenerDriver(
            self._factory,
            deliver=lambda frames: loop.call_soon_threadsafe(inbox.put_nowait, frames),
            fail=lambda e: loop.call_soon_threadsafe(inbox.put_nowait, e),
            name=f"{self.name}-listener",
        )
        self._consumer = self.task_manager.create_task(self._consume(), f"{self}::frames")
        self._open = True

    async def cleanup(self):
        """The listener's last frames are decided, then the worker and the consumer end."""
        await super().cleanup()
        if self._open:
            self._open = False
            await asyncio.to_thread(self._driver.close)
            self._inbox.put_nowait([])  # the end marker: everything the worker delivered is ahead of it
            await self._consumer
            self._consumer = None

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if not self._open:
            return ProcessFrameResult.CONTINUE
        if isinstance(frame, InputAudioRawFrame):
            self._driver.push_user_audio(_mono_int16(frame), frame.sample_rate)
        elif isinstance(frame, InputImageRawFrame):  # UserImageRawFrame too
            self._driver.push_video(_rgb(frame))
        return ProcessFrameResult.CONTINUE

    def push_bot_audio(self, frame: OutputAudioRawFrame) -> None:
        if self._open:
            self._driver.push_agent_audio(_mono_int16(frame), frame.sample_rate)

    def clear_bot_audio(self) -> None:
        if self._open:
            self._driver.clear_agent_audio()

    async def _consume(self) -> None:
        while True:
            item = await self._inbox.get()
            if isinstance(item, BaseException):
                logger.error(f"{self}: the face-aware listener failed: {item}")
                return
            if not item:
                return
            for frame in item:
                self.last_frame = frame
                event = self._decider.update(frame)
                if event is not None:
                    await self._on_event(event)

    async def _on_event(self, event: TurnEvent) -> None:
        self.last_event = event
        await self._call_event_handler("on_turn_event", event)
        if event.kind in ("stop", "timeout"):
            metrics = TurnMetricsData(processor=self.name, is_complete=event.kind == "stop",
                                      probability=event.p_yield, e2e_processing_time_ms=event.latency_ms)  # fmt: skip
            await self.push_frame(MetricsFrame(data=[metrics]))
            await self.trigger_user_turn_stopped()


class FaceTurnUserTurnStartStrategy(BaseUserTurnStartStrategy):
    """Starts the user's turn on the stop strategy's `start` decisions (without an interruption: the bot is silent)
    and `barge_in` decisions (with one, unless `enable_interruptions=False`)."""

    def __init__(self, stop_strategy: FaceTurnUserTurnStopStrategy, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stop_strategy = stop_strategy

    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        self._stop_strategy.add_event_handler("on_turn_event", self._on_turn_event)

    async def cleanup(self):
        await super().cleanup()
        self._stop_strategy.remove_event_handler("on_turn_event", self._on_turn_event)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        return ProcessFrameResult.CONTINUE  # the stop strategy reads the frames

    async def _on_turn_event(self, strategy: FaceTurnUserTurnStopStrategy, event: TurnEvent) -> None:
        if event.kind == "start":
            await self.trigger_user_turn_started(enable_interruptions=False)
        elif event.kind == "barge_in":
            await self.trigger_user_turn_started()


class FaceTurnBotAudioTap(FrameProcessor):
    """Place after the TTS: the bot's audio goes to the listener as the model's self side (frames pass on)."""

    def __init__(self, stop_strategy: FaceTurnUserTurnStopStrategy, **kwargs) -> None:
        super().__init__(**kwargs)
        self._stop_strategy = stop_strategy

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._stop_strategy.push_bot_audio(frame)
        elif isinstance(frame, InterruptionFrame):
            self._stop_strategy.clear_bot_audio()
        await self.push_frame(frame, direction)


def _mono_int16(frame: InputAudioRawFrame | OutputAudioRawFrame) -> np.ndarray:
    return first_channel_int16(frame.audio, frame.num_channels)


def _rgb(frame: InputImageRawFrame) -> np.ndarray:
    width, height = frame.size
    if frame.format in (None, "RGB"):
        return np.frombuffer(frame.image, dtype=np.uint8).reshape(height, width, 3)
    return np.asarray(Image.frombytes(frame.format, (width, height), frame.image).convert("RGB"))
