"""A Pipecat pipeline whose user turns are decided by faceturn's face-aware listener.

    .venv/bin/python examples/pipecat_face_turn.py --run RUN --mimi MIMI_DIR --face-model face_landmarker.task \
        --video talk.mp4 --audio talk.wav [--bot-audio reply.wav] [--backend onnx]

Pipecat has no local camera transport, so this pipeline is fed as a transport would feed it: the user's recording
(`--video`, `--audio`) is played in real time as `UserImageRawFrame`s and 20 ms `InputAudioRawFrame`s, and the bot
speaks `--bot-audio` first (its voice passes the tap after where a TTS would be). Every turn decision is printed with
its frame, P(yield) and the listener's latency, and the `TurnMetricsData` that Pipecat's metrics observers receive.
With a real transport, keep the three faceturn pieces and swap the source: `TransportParams(audio_in_enabled=True,
video_in_enabled=True)` on the input, `FaceTurnBotAudioTap` between the TTS and `transport.output()`
(docs/agents.md).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
from pipecat.frames.frames import EndFrame, InputAudioRawFrame, MetricsFrame, TTSAudioRawFrame, UserImageRawFrame
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator, LLMUserAggregatorParams
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
from faceturn.live.listener import ListenerSettings
from faceturn.prep.audio_tokens import MimiSettings
from faceturn.prep.face import FaceSettings
from faceturn.prep.media import read_audio, resample, timed_video_frames

MIC_HZ, CHUNK = 16_000, 320


class PrintMetrics(FrameProcessor):
    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, MetricsFrame):
            for d in frame.data:
                if isinstance(d, TurnMetricsData):
                    print(f"  metrics: complete={d.is_complete} probability={d.probability:.3f} "
                          f"processing={d.e2e_processing_time_ms:.1f} ms")  # fmt: skip
        await self.push_frame(frame, direction)


async def main(args: argparse.Namespace) -> None:
    settings = ListenerSettings(mimi=MimiSettings(model=args.mimi), face=FaceSettings(model=args.face_model))
    factory = ListenerFactory(args.run, settings, self_audio=True, backend=args.backend)
    stop = FaceTurnUserTurnStopStrategy(
        listener_factory=factory, params=FaceTurnParams(threshold=args.threshold, hysteresis=args.hysteresis)
    )
    start = FaceTurnUserTurnStartStrategy(stop)
    aggregator = LLMUserAggregator(
        LLMContext(),
        params=LLMUserAggregatorParams(user_turn_strategies=UserTurnStrategies(start=[start], stop=[stop])),
    )
    worker = PipelineWorker(Pipeline([aggregator, FaceTurnBotAudioTap(stop), PrintMetrics()]), params=PipelineParams())

    @stop.event_handler("on_turn_event")
    async def on_turn_event(strategy, event):
        print(f"{event.t_s:7.2f} s  {event.kind:8s} P(yield) {event.p_yield:.3f}  latency {event.latency_ms:.0f} ms")

    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    if args.bot_audio is not None:
        wave, rate_hz = read_audio(args.bot_audio)
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16)
        await worker.queue_frame(TTSAudioRawFrame(audio=pcm.tobytes(), sample_rate=rate_hz, num_channels=1,
                                                  context_id="greeting"))  # fmt: skip
    wave, rate_hz = read_audio(args.audio)
    mic = (np.clip(resample(wave, rate_hz, MIC_HZ), -1, 1) * 32767).astype(np.int16)
    video = iter(timed_video_frames(args.video))
    pending = next(video, None)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(0, mic.size, CHUNK):  # real time: a transport delivers 20 ms every 20 ms
        await asyncio.sleep(max(0.0, t0 + i / MIC_HZ - loop.time()))
        while pending is not None and pending[0] <= i / MIC_HZ:
            h, w = pending[1].shape[:2]
            await worker.queue_frame(UserImageRawFrame(user_id="user", image=pending[1].tobytes(), size=(w, h),
                                                       format="RGB"))  # fmt: skip
            pending = next(video, None)
        await worker.queue_frame(InputAudioRawFrame(audio=mic[i : i + CHUNK].tobytes(), sample_rate=MIC_HZ,
                                                    num_channels=1))  # fmt: skip
    await worker.queue_frame(EndFrame())
    await run


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (or checkpoint)")
    parser.add_argument("--mimi", default="kyutai/mimi", help="MimiModel folder saved with save_pretrained")
    parser.add_argument("--face-model", default="", help="face_landmarker.task (default: $FACETURN_FACE_MODEL)")
    parser.add_argument("--video", type=Path, required=True, help="the user's camera, a video file")
    parser.add_argument("--audio", type=Path, required=True, help="the user's microphone, an audio file")
    parser.add_argument("--bot-audio", type=Path, default=None, help="what the bot says first, an audio file")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--hysteresis", type=float, default=0.1)
    parser.add_argument(
        "--backend",
        choices=("eager", "onnx", "onnx-int8"),
        default="eager",
        help="the model through PyTorch, or its `faceturn export` graph through onnxruntime",
    )
    asyncio.run(main(parser.parse_args()))
