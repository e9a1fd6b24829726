"""faceturn.agents inside the real frameworks (pipecat-ai 1.14, livekit-agents 1.8.9), fed a real talking face
(carphone) and espeak-ng speech: the decisions come on exactly the frames where a plain listener fed the same media
crosses (`TurnDecider` on its frames), and the framework's event loop never waits for the model (a heartbeat task
measures its longest stall)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pytest
from fixtures_prep import espeak_speech

from faceturn.prep.audio_tokens import MIMI_RATE_HZ, MimiSettings
from faceturn.prep.face import FaceSettings
from faceturn.prep.media import read_audio, resample, timed_video_frames

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MIC_HZ, CHUNK = 16_000, 320  # the microphone as Pipecat and LiveKit usually carry it: 16 kHz, 20 ms frames
USER_FROM_S, SESSION_S = 0.5, 4.0  # the user speaks from 0.5 s (over the bot's first words); the clip is 4 s


def _require(*modules: str) -> None:
    for m in modules:
        if os.environ.get("CI"):
            __import__(m)  # CI installs the agents extra: never skip there
        else:
            pytest.importorskip(m, reason=f"{m} missing: pip install -e '.[agents]'")


@dataclass
class Media:
    events: list[tuple[str, np.ndarray]]  # ("video", rgb) / ("user", int16 chunk at MIC_HZ), in arrival order
    bot: np.ndarray  # the bot's voice, int16 at bot_hz (it starts at 0 s)
    bot_hz: int


@pytest.fixture(scope="module")
def media(tmp_path_factory, carphone) -> Media:
    folder = tmp_path_factory.mktemp("agents-speech")
    user = espeak_speech(folder / "user.wav", "I think that is right.")
    bot = espeak_speech(folder / "bot.wav", "Hello there.")
    if user is None or bot is None:
        if shutil.which("apt-get") and os.environ.get("CI"):
            pytest.fail("espeak-ng is required in CI (apt-get install espeak-ng)")
        pytest.skip("espeak-ng missing (Debian: apt-get install espeak-ng)")
    wave, rate_hz = read_audio(user)
    speech = resample(wave, rate_hz, MIC_HZ)
    mic = np.zeros(int(SESSION_S * MIC_HZ), np.float32)
    start = int(USER_FROM_S * MIC_HZ)
    mic[start : start + speech.size] = speech[: mic.size - start]
    mic16 = (np.clip(mic, -1, 1) * 32767).astype(np.int16)
    video = list(timed_video_frames(carphone))
    events, v = [], 0
    for i in range(0, mic16.size, CHUNK):  # a camera frame arrives with the first audio after its instant
        while v < len(video) and video[v][0] <= i / MIC_HZ:
            events.append(("video", video[v][1]))
            v += 1
        events.append(("user", mic16[i : i + CHUNK]))
    bot_wave, bot_hz = read_audio(bot)
    return Media(events, (np.clip(bot_wave, -1, 1) * 32767).astype(np.int16), bot_hz)


@pytest.fixture(scope="module")
def settings(mimi_dir, face_model):
    from faceturn.live.listener import ListenerSettings

    # video_wait_s: frames wait for their camera frame whatever the machine's load, so runs are comparable
    return ListenerSettings(mimi=MimiSettings(model=str(mimi_dir), device="cpu"),
                            face=FaceSettings(model=str(face_model)), video_wait_s=60.0)  # fmt: skip


def reference(factory, media: Media, with_bot: bool):
    """A plain listener fed the media in the same order (the bot's voice in step with the microphone): its frames, and
    how many came before `close`."""
    from faceturn.live.listener import AGENT, PERSON

    listener = factory()
    bot = resample(media.bot.astype(np.float32) / 32768, media.bot_hz, MIMI_RATE_HZ) if with_bot else None
    frames, mic = [], 0
    for kind, x in media.events:
        if kind == "video":
            listener.push_video(x, mic / MIC_HZ)
        else:
            listener.push_audio(PERSON, x, MIC_HZ)
            played = mic * MIMI_RATE_HZ // MIC_HZ
            mic += x.size
            if bot is not None:
                due = mic * MIMI_RATE_HZ // MIC_HZ
                piece = bot[played:due]
                listener.push_audio(AGENT, np.pad(piece, (0, due - played - piece.size)), MIMI_RATE_HZ)
        frames += listener.frames()
    before_close = len(frames)
    frames += listener.close()
    return frames, before_close


def planted_params(frames, kinds: set[str]):
    """Threshold and hysteresis from the tiny random model's own P(yield) range, chosen so that the reference
    decides `kinds` (the equality below must be about decisions that happen)."""
    from faceturn.agents.core import TurnDecider, TurnParams

    p = np.array([f.p_yield for f in frames])
    hysteresis = float(p.max() - p.min()) / 4
    for q in np.linspace(0.95, 0.05, 19):
        params = TurnParams(threshold=float(np.quantile(p, q)), hysteresis=hysteresis, min_silence_s=0.24,
                            fallback_timeout_s=2.0)  # fmt: skip
        decider = TurnDecider(params)
        events = [e for f in frames if (e := decider.update(f)) is not None]
        if kinds <= {e.kind for e in events}:
            return params, events
    pytest.fail(f"no threshold in the model's P(yield) range [{p.min():.4f}, {p.max():.4f}] gives {kinds}")


class Heartbeat:
    """The loop's longest stall: the largest delay of a 5 ms sleep beyond its 5 ms. Had the listener run on the loop,
    it would be at least the listener's longest step (`ListenerDriver.longest_step_s`): no tick can fall inside one."""

    def __init__(self):
        self.longest_s, self._task = 0.0, None

    async def _beat(self):
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.005)
            self.longest_s = max(self.longest_s, loop.time() - t0 - 0.005)

    def __enter__(self):
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc):
        self._task.cancel()


async def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


def test_pipecat_strategies_end_the_turn_where_the_listener_crosses(tiny_run, settings, media):
    _require("pipecat")
    from pipecat.frames.frames import (
        EndFrame,
        InputAudioRawFrame,
        MetricsFrame,
        TTSAudioRawFrame,
        UserImageRawFrame,
    )
    from pipecat.metrics.metrics import TurnMetricsData
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMUserAggregator,
        LLMUserAggregatorParams,
    )
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.turns.user_turn_strategies import UserTurnStrategies
    from pipecat.workers.runner import WorkerRunner

    from faceturn.agents.core import ListenerFactory
    from faceturn.agents.pipecat import (
        FaceTurnBotAudioTap,
        FaceTurnParams,
        FaceTurnUserTurnStartStrategy,
        FaceTurnUserTurnStopStrategy,
    )

    factory = ListenerFactory(tiny_run, settings, self_audio=True)
    ref, before_close = reference(factory, media, with_bot=True)
    params, want = planted_params(ref, {"stop"})

    class Sink(FrameProcessor):  # the end of the pipeline: what reached it
        def __init__(self):
            super().__init__()
            self.metrics, self.bot_audio = [], asyncio.Event()

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, MetricsFrame):
                self.metrics += [d for d in frame.data if isinstance(d, TurnMetricsData)]
            elif isinstance(frame, TTSAudioRawFrame):
                self.bot_audio.set()
            await self.push_frame(frame, direction)

    stop = FaceTurnUserTurnStopStrategy(
        listener_factory=factory,
        params=FaceTurnParams(
            threshold=params.threshold,
            hysteresis=params.hysteresis,
            min_silence_secs=params.min_silence_s,
            fallback_timeout_secs=params.fallback_timeout_s,
        ),
    )
    # no interruption on a barge-in here: it would cut the bot's voice at a moment that depends on the machine's speed
    # (the reference plays it whole); what an interruption does to the bot's voice is tested in test_agents_core.py
    start = FaceTurnUserTurnStartStrategy(stop, enable_interruptions=False)
    strategies = UserTurnStrategies(start=[start], stop=[stop])
    aggregator = LLMUserAggregator(LLMContext(), params=LLMUserAggregatorParams(user_turn_strategies=strategies))
    sink = Sink()
    task = PipelineWorker(Pipeline([aggregator, FaceTurnBotAudioTap(stop), sink]), params=PipelineParams(),
                          enable_rtvi=False)  # fmt: skip
    decided, turns = [], []
    stop.add_event_handler("on_turn_event", lambda strategy, event: _append(decided, event))

    @aggregator.event_handler("on_user_turn_started")
    async def started(aggregator, strategy, *args):
        turns.append(("started", stop.last_event.k if strategy is start else None))

    @aggregator.event_handler("on_user_turn_stopped")
    async def stopped(aggregator, strategy, *args):
        turns.append(("stopped", stop.last_event.k if strategy is stop else None))

    async def session():
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(task)
        run = asyncio.create_task(runner.run())
        await task.queue_frame(TTSAudioRawFrame(audio=media.bot.tobytes(), sample_rate=media.bot_hz, num_channels=1,
                                                context_id="greeting"))  # fmt: skip
        await asyncio.wait_for(sink.bot_audio.wait(), 30)  # the bot speaks first
        await wait_for(lambda: stop.listener is not None)  # loaded (on the worker thread)
        with Heartbeat() as beat:  # while the media streams in and the listener works
            t0 = time.perf_counter()
            for kind, x in media.events:
                if kind == "video":
                    h, w = x.shape[:2]
                    await task.queue_frame(UserImageRawFrame(user_id="user", image=x.tobytes(), size=(w, h),
                                                             format="RGB"))  # fmt: skip
                else:
                    await task.queue_frame(InputAudioRawFrame(audio=x.tobytes(), sample_rate=MIC_HZ, num_channels=1))
                await asyncio.sleep(0)  # as a transport: one frame at a time (a burst would be the test's own stall)
            await wait_for(lambda: stop.last_frame is not None and stop.last_frame.k >= before_close - 1)
            seconds = time.perf_counter() - t0
        await task.queue_frame(EndFrame())
        await asyncio.wait_for(run, 60)
        return beat.longest_s, seconds, stop._driver.longest_step_s

    longest_stall_s, seconds, longest_step_s = asyncio.run(session())
    print(
        f"\npipecat: {len(ref)} frames in {seconds:.2f} s; loop's longest stall {longest_stall_s * 1000:.1f} ms; "
        f"listener's longest step {longest_step_s * 1000:.1f} ms; decisions {[(e.kind, e.k) for e in want]}"
    )
    assert [(e.kind, e.k) for e in decided] == [(e.kind, e.k) for e in want]
    np.testing.assert_array_equal([e.p_yield for e in decided], [e.p_yield for e in want])
    assert [m.probability for m in sink.metrics] == [e.p_yield for e in want if e.kind in ("stop", "timeout")]
    assert [m.is_complete for m in sink.metrics] == [e.kind == "stop" for e in want if e.kind in ("stop", "timeout")]
    # Pipecat's own user turns: our strategies started and ended each of them, on their frames
    assert turns == [("started" if e.kind in ("start", "barge_in") else "stopped", e.k) for e in want]
    assert stop.listener.counters.video_dropped == 0
    assert longest_stall_s < longest_step_s  # the listener never ran on the loop


def _append(to: list, item) -> None:
    to.append(item)


def test_livekit_detector_predicts_what_the_listener_says_inside_an_agent_session(tiny_run, settings, media):
    _require("livekit.agents", "livekit.plugins.silero")
    from livekit import rtc
    from livekit.agents import Agent, AgentSession
    from livekit.agents.voice import io
    from livekit.agents.voice.turn import _StreamingTurnDetector, _StreamingTurnDetectorStream
    from livekit.plugins import silero

    from faceturn.agents.core import ListenerFactory
    from faceturn.agents.livekit import FaceTurnDetector
    from faceturn.cli import main

    # the detector on the run's exported graph (`faceturn export`, backend "onnx"); the reference listener on it too
    if not (tiny_run / "export").exists():
        assert main(["export", "--run", str(tiny_run), "--format", "onnx", "--check-frames", "30"]) == 0
    factory = ListenerFactory(tiny_run, settings, self_audio=False, backend="onnx", threads=1)
    ref, before_close = reference(factory, media, with_bot=False)
    params, _ = planted_params(ref, {"start"})
    detector = FaceTurnDetector(factory, threshold=params.threshold, hysteresis=params.hysteresis,
                                prediction_timeout_s=30.0)  # fmt: skip
    assert isinstance(detector, _StreamingTurnDetector)

    class Microphone(io.AudioInput):
        """The user's track as the session reads it, at twice real time (the session's VAD asks for predictions as
        pauses come); the camera frames that arrive with it go to the detector."""

        def __init__(self):
            super().__init__(label="clip")
            self._events = iter(media.events)
            self.ready, self.done = asyncio.Event(), asyncio.Event()

        async def __anext__(self) -> rtc.AudioFrame:
            await self.ready.wait()
            for kind, x in self._events:
                if kind == "video":
                    h, w = x.shape[:2]
                    detector.push_video(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGB24, x.tobytes()))
                    continue
                await asyncio.sleep(CHUNK / MIC_HZ / 2)
                return rtc.AudioFrame(x.tobytes(), MIC_HZ, 1, x.size)
            self.done.set()
            await asyncio.Event().wait()  # the track stays open

    async def session():
        mic = Microphone()
        session = AgentSession(vad=silero.VAD.load(), turn_handling={"turn_detection": detector})
        session.input.audio = mic
        await session.start(Agent(instructions="listen"))
        stream = detector.streams[0]
        assert isinstance(stream, _StreamingTurnDetectorStream)
        await wait_for(lambda: stream.driver.listener is not None)  # loaded (on the worker thread)
        with Heartbeat() as beat:  # while the media streams in and the listener works
            mic.ready.set()
            await asyncio.wait_for(mic.done.wait(), 60)
            await wait_for(lambda: stream._recent and stream._recent[-1][0] >= before_close - 1)
        predictions = list(stream.predictions)
        await session.aclose()
        return beat.longest_s, predictions, stream.driver.longest_step_s

    longest_stall_s, predictions, longest_step_s = asyncio.run(session())
    print(f"\nlivekit: {len(predictions)} predictions at frames {[k for k, _, _ in predictions]}; loop's longest "
          f"stall {longest_stall_s * 1000:.1f} ms; listener's longest step {longest_step_s * 1000:.1f} ms")  # fmt: skip
    assert predictions, "the session never asked the detector"
    from faceturn.agents.core import TurnDecider

    decider = TurnDecider(params)
    threshold_at = {}
    for f in ref:
        decider.update(f)
        threshold_at[f.k] = decider.threshold_now
    for k, event, threshold in predictions:
        assert event.end_of_turn_probability == ref[k].p_yield
        assert threshold == threshold_at[k]
        assert event.backchannel_probability is None
    assert longest_stall_s < longest_step_s
    assert math.isfinite(predictions[0][1].last_speaking_time)
