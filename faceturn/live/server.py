"""The web app of `faceturn live`: one page that sends the camera and microphone over a WebSocket and draws what the
listener makes of them, frame by frame.

Protocol (one WebSocket per page, `/ws`): the page first sends a JSON `start` ({"session", "role": "person" |
"agent", "rate": audio sample rate in Hz, "parties": 1 | 2}), then binary messages: `A` + 3 padding bytes + float32
little-endian mono samples (its microphone), or `V` + 7 padding bytes + float64 capture time in seconds since its
first audio sample + the JPEG of one camera frame. The server answers with JSON: `ready` (what runs), `frames` (one
entry per 80 ms frame), `warning`, `error` (then it closes that socket) and `closed` (the session ended; where it was
recorded). The person at the camera is the interlocutor; the agent side is silent, a WAV (`--self-audio`), or a
second page that joins the same session as "agent" (a two-party call).

Work never runs on the event loop: per session one thread takes the audio and emits frames in order (Mimi, the
model), another decodes camera frames and runs the face landmarker, so the stages overlap. One client's bad input
is answered on its page and in the log and ends that session only; the server goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.errors import FaceturnError
from faceturn.export import OnnxStep
from faceturn.live.listener import AGENT, PERSON, Listener, ListenerSettings, LiveFrame
from faceturn.live.record import Recorder, blank_jpeg
from faceturn.model import Model
from faceturn.prep.audio_tokens import MIMI_RATE_HZ, MimiEncoder
from faceturn.prep.media import JpegDecoder, resample
from faceturn.recipe import TrainConfig
from faceturn.schema import CHANNEL_INDEX, GAZE, HEAD_ROTATION
from faceturn.store import check_id

log = logging.getLogger("faceturn.live")
NO_VIDEO_WARNING_S = 3.0  # audio time without a single camera frame before the page is told the camera is silent
_GAZE = [CHANNEL_INDEX[c] for c in GAZE]
_HEAD = [CHANNEL_INDEX[c] for c in HEAD_ROTATION]
_JAW = CHANNEL_INDEX["jawOpen"]


@dataclass
class LiveModel:
    """What every session shares: the model, Mimi, settings, and what the page is told about them."""

    model: Model | OnnxStep  # the PyTorch model, or its exported step (--backend onnx)
    train_cfg: TrainConfig
    checkpoint: Path
    mimi: MimiEncoder
    settings: ListenerSettings
    info: dict[str, Any]  # shown on the page (checkpoint, what it was trained on, ...)
    self_audio: tuple[np.ndarray, int] | None = None  # the agent's voice (--self-audio): samples, rate
    record: Path | None = None


def _frame_message(f: LiveFrame, server_ms: float) -> dict:
    face = f.face
    return {
        "k": f.k,
        "p": round(f.p_yield, 6),
        "p0": round(f.p_yield_zeroed, 6),
        "va": [round(float(v), 3) for v in f.va],
        "present": f.face_present,
        "gaze": [round(float(face[i]), 4) for i in _GAZE],
        "mouth": round(float(face[_JAW]), 4),
        "head": [round(float(face[i]), 4) for i in _HEAD],
        "alert": f.alert,
        "server_ms": round(server_ms, 2),
        "stage_ms": {k: round(v, 2) for k, v in f.stage_ms.items()},
    }


class Session:
    """One conversation: a listener, maybe a recorder, the pages taking part, and two worker threads."""

    def __init__(self, live: LiveModel, name: str, parties: int, loop: asyncio.AbstractEventLoop):
        self.live, self.name, self.parties, self.loop = live, name, parties, loop
        self.recorder = None
        if live.record is not None:
            self.recorder = Recorder(live.record, name, live.settings, live.checkpoint, live.train_cfg)
        sink = self.recorder.audio if self.recorder is not None else None
        voice = None if live.self_audio is None else resample(*live.self_audio, MIMI_RATE_HZ)
        self.listener = Listener(live.model, live.mimi, live.settings, self_audio=parties == 2, agent_voice=voice,
                                 sink=sink)  # fmt: skip
        self.audio_pool = ThreadPoolExecutor(1, thread_name_prefix=f"live-audio-{name}")
        self.video_pool = ThreadPoolExecutor(1, thread_name_prefix=f"live-video-{name}")
        self.outboxes: dict[Any, asyncio.Queue] = {}
        self.roles: dict[Any, str] = {}
        self.rate_hz: dict[str, int] = {}
        self.decoder = JpegDecoder()
        self.last_video_ms = -1
        self.video_frames = 0
        self.warned_no_video = False
        self.timer_at: float | None = None  # when the pending look at frames waiting for video is due
        self.finished = threading.Event()
        self.failed = False

    # ------------------------------------------------------------------------------------------- to the pages
    def send(self, message: dict) -> None:
        """Queue a message for every page of the session (thread-safe; order kept per page)."""
        text = json.dumps(message)
        for queue in list(self.outboxes.values()):
            self.loop.call_soon_threadsafe(queue.put_nowait, text)

    def fail(self, message: str) -> None:
        """Bad input from a client: say so on the pages and in the log; the session ends."""
        log.error("session %s: %s", self.name, message)
        self.failed = True
        self.send({"type": "error", "message": message})

    # ------------------------------------------------------------------------------------------- worker threads
    def _guard(self, fn, *args) -> None:
        if self.failed or self.finished.is_set():
            return
        try:
            fn(*args)
        except FaceturnError as e:
            self.fail(str(e))
        except Exception as e:  # a bug: logged with its traceback, reported, the server goes on
            log.error("session %s: internal error\n%s", self.name, traceback.format_exc())
            self.fail(f"internal error: {type(e).__name__}: {e}")

    def audio(self, role: str, samples: np.ndarray) -> None:
        self.audio_pool.submit(self._guard, self._audio, role, samples)

    def video(self, t_s: float, jpeg: bytes) -> None:
        self.video_pool.submit(self._guard, self._video, t_s, jpeg)

    def _audio(self, role: str, samples: np.ndarray) -> None:
        rate = self.rate_hz[role]
        side = PERSON if role == "person" else AGENT
        self.listener.push_audio(side, samples, rate)
        self._drain()

    def _video(self, t_s: float, jpeg: bytes) -> None:
        t_ms = round(t_s * 1000)  # the recording's timebase: the listener sees the times the file will hold
        if t_ms <= self.last_video_ms:
            self.listener.counters.video_dropped += 1
            return
        rgb = self.decoder.decode(jpeg, f"camera frame at {t_s:.3f} s")
        if self.last_video_ms < 0 and t_ms > 0:  # the video starts at t = 0, as a recording's must
            self._show(blank_jpeg(rgb.shape[1], rgb.shape[0]), 0)
        self._show(jpeg, t_ms, rgb)
        self.audio_pool.submit(self._guard, self._drain)  # frames that waited for this face

    def _show(self, jpeg: bytes, t_ms: int, rgb: np.ndarray | None = None) -> None:
        if rgb is None:
            rgb = self.decoder.decode(jpeg)
        self.last_video_ms = t_ms
        self.video_frames += 1
        if self.recorder is not None:
            self.recorder.jpeg(jpeg, t_ms, rgb.shape[1], rgb.shape[0])
        self.listener.push_video(rgb, t_ms / 1000)

    def _drain(self, frames: list[LiveFrame] | None = None) -> None:
        frames = self.listener.frames() if frames is None else frames
        deadline = self.listener.video_deadline()
        if deadline is not None and deadline != self.timer_at and not self.finished.is_set():
            self.timer_at = deadline  # frames wait for video: look again when their wait ends, even without input
            timer = threading.Timer(max(0.0, deadline - self.listener.clock()) + 0.002, self._redrain)
            timer.daemon = True
            timer.start()
        if not frames:
            return
        seconds = (frames[-1].k + 1) * 0.08
        if self.role_count("person") and self.video_frames == 0 and seconds >= NO_VIDEO_WARNING_S:
            if not self.warned_no_video:
                self.warned_no_video = True
                message = (
                    f"no camera frames in the first {seconds:.1f} s: the camera delivers nothing (face_present = 0)"
                )
                log.warning("session %s: %s", self.name, message)
                self.send({"type": "warning", "message": message})
        if self.recorder is not None:
            for f in frames:
                self.recorder.frame(f)
        c = self.listener.counters
        self.send({
            "type": "frames",
            "frames": [_frame_message(f, (f.ready_s - f.input_done_s) * 1000) for f in frames],
            "counters": {k: getattr(c, k) for k in c.__dataclass_fields__},
        })  # fmt: skip

    def role_count(self, role: str) -> int:
        return sum(r == role for r in list(self.roles.values()))

    def _redrain(self) -> None:
        if not self.finished.is_set():
            try:
                self.audio_pool.submit(self._guard, self._drain)
            except RuntimeError:  # the session ended meanwhile
                pass

    def finish(self) -> None:
        """End the session (every page gone, or asked to stop): last frames, recording; in the audio thread."""
        if self.finished.is_set():
            return
        recorded = None
        try:
            self.video_pool.shutdown(wait=True)
            frames = self.listener.close()
            self._drain(frames)
            if self.recorder is not None:
                corpus = self.recorder.close(self.listener.face_info())
                recorded = None if corpus is None else str(corpus)
                if recorded:
                    log.info("session %s recorded in %s", self.name, recorded)
        except Exception as e:
            log.error("session %s: could not be closed cleanly\n%s", self.name, traceback.format_exc())
            self.send({"type": "error", "message": f"closing the session failed: {type(e).__name__}: {e}"})
        finally:
            self.finished.set()
            c = self.listener.counters
            self.send({"type": "closed", "session": self.name, "recorded": recorded,
                       "frames": c.frames, "counters": {k: getattr(c, k) for k in c.__dataclass_fields__}})  # fmt: skip


def create_app(live: LiveModel) -> Any:
    """The Starlette app: the page, its info, the agent's voice and the WebSocket."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    page = (files("faceturn.live") / "page.html").read_text()
    sessions: dict[str, Session] = {}
    lock = asyncio.Lock()

    async def index(request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    async def info(request) -> JSONResponse:
        return JSONResponse(live.info)

    async def agent_wav(request) -> Response:
        if live.self_audio is None or not live.info.get("self_audio_file"):
            return Response(status_code=404)
        return FileResponse(live.info["self_audio_file"], media_type="audio/wav")

    async def close_session(session: Session) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(session.audio_pool, session.finish)
        session.audio_pool.shutdown(wait=False)
        async with lock:
            if sessions.get(session.name) is session:
                del sessions[session.name]

    async def sender(ws: WebSocket, queue: asyncio.Queue) -> None:
        while True:
            text = await queue.get()
            try:
                await ws.send_text(text)
            except Exception:  # the page is gone; its messages are dropped, the session goes on
                return
            if json.loads(text).get("type") == "closed":
                return

    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        loop = asyncio.get_running_loop()
        session: Session | None = None
        send_task = None
        try:
            first = await ws.receive()
            if first["type"] == "websocket.disconnect":
                return
            if first.get("text") is None:
                raise FaceturnError(
                    'the page\'s first message must be the JSON {"type": "start", ...}, not binary data'
                )
            start = json.loads(first["text"])
            if isinstance(start, dict) and start.get("type") == "client-error":  # e.g. no camera permission
                log.error("a page could not start: %s", str(start.get("message"))[:500])
                return
            role, name, rate, parties = _check_start(start)
            async with lock:
                session = sessions.get(name)
                if session is not None and (session.failed or session.finished.is_set()):
                    raise FaceturnError(f"session {name!r} has ended; start a new one")
                if session is None:
                    session = await loop.run_in_executor(None, Session, live, name, parties, loop)
                    sessions[name] = session
                    log.info("session %s started (%d part%s)", name, parties, "y" if parties == 1 else "ies")
                if role in session.roles.values():
                    raise FaceturnError(f"session {name!r} already has a {role}")
                if role == "agent" and live.self_audio is not None:
                    raise FaceturnError("this server plays --self-audio as the agent: no agent page can join")
                if role == "agent" and session.parties != 2:
                    raise FaceturnError(f"session {name!r} is not a two-party call: no agent page can join")
                queue: asyncio.Queue = asyncio.Queue()
                session.outboxes[ws], session.roles[ws] = queue, role
                session.rate_hz[role] = rate
            send_task = asyncio.create_task(sender(ws, queue))
            await ws.send_json({"type": "ready", "session": name, "role": role, **live.info})
            while not session.finished.is_set():
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    log.info("session %s: the %s page disconnected", name, role)
                    break
                if message.get("bytes"):
                    _dispatch(session, role, message["bytes"])
                elif message.get("text"):
                    control = json.loads(message["text"])
                    if control.get("type") == "stop":
                        log.info("session %s: stopped by the %s page", name, role)
                        break
                    if control.get("type") == "client-error":
                        log.error("session %s: the %s page reports: %s", name, role, str(control.get("message"))[:500])
                if session.failed:
                    break
        except WebSocketDisconnect:
            log.info("session %s: a page disconnected", session.name if session else "(not started)")
        except (FaceturnError, ValueError, KeyError, TypeError) as e:
            message = str(e) if isinstance(e, FaceturnError) else f"bad message from the page: {e}"
            log.error("session %s: %s", session.name if session else "(not started)", message)
            try:
                await ws.send_json({"type": "error", "message": message})
            except Exception:
                pass
        finally:
            if session is not None:
                session.roles.pop(ws, None)
                if session.failed or "person" not in session.roles.values():  # the person left: the call is over
                    await close_session(session)
                    if send_task is not None:
                        try:
                            await asyncio.wait_for(send_task, 5)
                        except (TimeoutError, asyncio.CancelledError):
                            pass
                session.outboxes.pop(ws, None)
            if send_task is not None:
                send_task.cancel()
            try:
                await ws.close()
            except Exception:
                pass

    return Starlette(routes=[Route("/", index), Route("/info", info), Route("/agent.wav", agent_wav),
                             WebSocketRoute("/ws", socket)])  # fmt: skip


def _check_start(start: Any) -> tuple[str, str, int, int]:
    """(role, session name, audio rate, parties) from the page's first message, or a FaceturnError saying what is
    wrong with it."""
    if not isinstance(start, dict) or start.get("type") != "start":
        raise FaceturnError('the page\'s first message must be {"type": "start", ...}')
    role = start.get("role")
    if role not in ("person", "agent"):
        raise FaceturnError(f'role must be "person" or "agent", got {role!r}')
    name = str(start.get("session") or "")
    check_id(name)
    rate = start.get("rate")
    if not isinstance(rate, int | float) or not math.isfinite(rate) or not 8_000 <= rate <= 192_000:
        raise FaceturnError(f"audio sample rate must be 8000–192000 Hz, got {rate!r}")
    parties = start.get("parties", 1)
    if parties not in (1, 2):
        raise FaceturnError(f"parties must be 1 or 2, got {parties!r}")
    return role, name, int(rate), int(parties)


def _dispatch(session: Session, role: str, data: bytes) -> None:
    """Route one binary message from a page to the session's threads (nothing heavy here: this is the event loop)."""
    kind = data[:1]
    if kind == b"A":
        if (len(data) - 4) % 4:
            raise FaceturnError(f"audio message of {len(data)} bytes is not 4 + whole float32 samples")
        session.audio(role, np.frombuffer(data, dtype="<f4", offset=4).astype(np.float32))
    elif kind == b"V":
        if role != "person":
            raise FaceturnError("only the person's page sends camera frames")
        if len(data) < 16:
            raise FaceturnError(f"camera message of {len(data)} bytes has no frame")
        (t_s,) = struct.unpack_from("<d", data, 8)
        if not math.isfinite(t_s) or t_s < 0:
            raise FaceturnError(f"camera frame time must be finite and >= 0 s, got {t_s}")
        session.video(t_s, bytes(data[16:]))
    else:
        raise FaceturnError(f"unknown binary message kind {kind!r} (expected b'A' audio or b'V' camera)")


def serve(live: LiveModel, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(live), host=host, port=port, log_level="warning", ws_max_size=16 * 2**20)
