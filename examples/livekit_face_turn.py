"""A LiveKit agent whose end-of-turn detector is faceturn's face-aware listener.

Against a local LiveKit dev server (https://docs.livekit.io/home/self-hosting/local/):

    livekit-server --dev                                   # ws://localhost:7880, key devkey, secret secret
    export LIVEKIT_URL=ws://localhost:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret
    export FACETURN_RUN=runs/aux FACETURN_MIMI=mimi/ FACETURN_FACE_MODEL=face_landmarker.task
    export FACETURN_BACKEND=onnx                           # optional: the exported graph (`faceturn export` first)
    .venv/bin/python examples/livekit_face_turn.py dev     # then join the room with camera and microphone on,
                                                           # e.g. from https://agents-playground.livekit.io

The session's speech-to-text, LLM and text-to-speech are LiveKit's model strings in $AGENT_STT, $AGENT_LLM,
$AGENT_TTS (default: none — the agent then only listens, and the log shows each end-of-turn prediction). The camera is
tapped from the participant's video track; the bot's own voice is not fed (the listener's self side is silent).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from livekit import rtc
from livekit.agents import Agent, AgentSession, JobContext, WorkerOptions, cli
from livekit.plugins import silero

from faceturn.agents.core import ListenerFactory
from faceturn.agents.livekit import FaceTurnDetector
from faceturn.live.listener import ListenerSettings
from faceturn.prep.audio_tokens import MimiSettings
from faceturn.prep.face import FaceSettings

log = logging.getLogger("faceturn-agent")


def make_factory() -> ListenerFactory:
    settings = ListenerSettings(mimi=MimiSettings(model=os.environ.get("FACETURN_MIMI", "kyutai/mimi")),
                                face=FaceSettings(model=os.environ.get("FACETURN_FACE_MODEL", "")))  # fmt: skip
    backend = os.environ.get("FACETURN_BACKEND", "eager")  # or onnx / onnx-int8, after `faceturn export`
    return ListenerFactory(Path(os.environ["FACETURN_RUN"]), settings, self_audio=False, backend=backend)


async def entrypoint(ctx: JobContext) -> None:
    detector = FaceTurnDetector(make_factory(), threshold=0.5, hysteresis=0.1)
    await ctx.connect()
    tasks = []

    @ctx.room.on("track_subscribed")
    def on_track(track: rtc.Track, publication, participant) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:  # the user's camera, to the listener
            tasks.append(asyncio.create_task(detector.watch_video(rtc.VideoStream(track))))

    models = {
        k: os.environ[f"AGENT_{k.upper()}"] for k in ("stt", "llm", "tts") if os.environ.get(f"AGENT_{k.upper()}")
    }
    session = AgentSession(vad=silero.VAD.load(), turn_handling={"turn_detection": detector}, **models)

    @session.on("user_state_changed")
    def on_user_state(ev) -> None:
        for stream in detector.streams:
            if stream.predictions:
                k, event, threshold = stream.predictions[-1]
                log.info("user %s; last prediction: frame %d, P(yield) %.3f (threshold %.2f)", ev.new_state, k,
                         event.end_of_turn_probability, threshold)  # fmt: skip

    await session.start(Agent(instructions="You are a friendly assistant. Keep answers short."), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
