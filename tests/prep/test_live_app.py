"""`faceturn live` end to end: the real server (a `faceturn live` process), Debian's Chromium with fake camera and
microphone fed from a real talking-face clip and espeak-ng speech, and plain WebSocket clients for bad input.

The page must receive one P(yield) per 80 ms of the media it sent, equal to `prepare recordings` + `predict` on the
recorded media; the recorded session must pass `faceturn inspect` and open in `faceturn view`."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from browser import launch_chromium
from fixtures_prep import espeak_speech, run_prepare

from faceturn.prep.media import timed_video_frames

SENTENCE = "Yes, I see what you mean. Well, let me think about that for a moment."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory, carphone) -> tuple[Path, Path]:
    """(Y4M of the talking-face clip, WAV of espeak-ng speech) for Chromium's fake devices."""
    import av

    root = tmp_path_factory.mktemp("live-media")
    speech = espeak_speech(root / "speech.wav", SENTENCE)
    if speech is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is required in CI (apt-get install espeak-ng)")
        pytest.skip("espeak-ng missing (Debian: apt-get install espeak-ng)")
    y4m = root / "face.y4m"
    with av.open(str(y4m), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=Fraction(30000, 1001))
        frames = list(timed_video_frames(carphone))
        stream.height, stream.width = frames[0][1].shape[:2]
        stream.pix_fmt = "yuv420p"
        for _, rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return y4m, speech


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A randomly initialised tiny aux model whose window and context cover a whole test session."""
    import torch

    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config

    cfg = load_train_config("aux", ["model.dim=32", "model.num_layers=2", "model.num_heads=2", "model.context=400",
                                    "data.window_s=30"])  # fmt: skip
    torch.manual_seed(0)
    model = from_config(cfg.model)
    run = tmp_path_factory.mktemp("live-app-run") / "run"
    save_checkpoint(run, 0, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(cfg), keep_last=1)
    return run


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_run, mimi_dir, face_model):
    """A `faceturn live` process on a free localhost port, recording into a folder; (url, record dir, log path)."""
    root = tmp_path_factory.mktemp("live-server")
    record, log_path = root / "record", root / "server.log"
    port = _free_port()
    cmd = [sys.executable, "-m", "faceturn", "live", "--run", str(tiny_run), "--port", str(port), "--mimi",
           str(mimi_dir), "--face-model", str(face_model), "--record", str(record), "--threads", "1",
           "--set", "video_wait_s=2.0"]  # fmt: skip
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/info", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail(f"faceturn live did not start:\n{log_path.read_text()}")
            time.sleep(0.3)
    yield url, record, log_path
    proc.terminate()
    proc.wait(30)
    log.close()


def _offline(record: Path, session: str, tmp: Path, run: Path, mimi_dir: Path, face_model: Path):
    """`prepare recordings` on the session's media, then `predict`: (conversation, perspective-0 predictions)."""
    import shutil

    from faceturn.cli import main
    from faceturn.eval.predict import Predictions
    from faceturn.store import Corpus

    media_root = tmp / "media"
    shutil.copytree(record / "media" / session, media_root / session)
    corpus = tmp / "offline"
    assert run_prepare(["recordings", "--root", str(media_root), "--out", str(corpus), "--mimi", str(mimi_dir),
                        "--device", "cpu", "--face-model", str(face_model), "--no-progress"]) == 0  # fmt: skip
    split = Corpus(corpus).entry(session).split
    out = tmp / "offline.npz"
    assert main(["predict", "--run", str(run), "--corpus", str(corpus), "--split", split, "--out", str(out)]) == 0
    pred = Predictions.load(out)
    rows = pred.perspective == 0
    order = np.argsort(pred.frame[rows])
    return Corpus(corpus).load(session), pred.p_face[rows][order], pred.p_zeroed[rows][order]


def test_page_in_chromium_streams_camera_and_microphone_and_equals_the_offline_pipeline(
    tmp_path, server, media, tiny_run, mimi_dir, face_model
):
    from faceturn.cli import main
    from faceturn.store import Corpus

    url, record, log_path = server
    y4m, wav = media
    fake = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}")  # fmt: skip
    with launch_chromium(fake) as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/?session=browser1&mode=solo&autostart=1")
        page.wait_for_function("window.faceturnLive.frames.length >= 60", timeout=60_000)
        page.click("#stop")
        page.wait_for_function("window.faceturnLive.closed !== null", timeout=60_000)
        state = page.evaluate("window.faceturnLive")
        synthetic_note = page.locator("#synthetic").inner_text()
    assert not errors and not state["errors"], (errors, state["errors"], log_path.read_text())
    frames = state["frames"]
    n = len(frames)
    assert [f["k"] for f in frames] == list(range(n))  # one P(yield) per 80 ms frame, none missing or repeated
    assert state["closed"]["frames"] == n and state["closed"]["recorded"]
    counters = state["closed"]["counters"]
    assert counters["video_late"] == 0 and counters["video_dropped"] == 0, counters
    assert "synthetic" in synthetic_note or "cannot be told" in synthetic_note  # a random model of no real corpus

    corpus = Corpus(record / "corpus")
    conv = corpus.load("browser1")
    assert conv.n_frames == n  # the media the server received, in 80 ms frames
    import soundfile as sf

    person, rate = sf.read(record / "media" / "browser1" / "person.wav")
    assert rate == 24_000 and n == -(-len(person) // 1920)
    present = np.asarray(conv.face_present[1]).astype(bool)
    assert present.mean() > 0.5  # the fake camera's real face is found
    assert main(["inspect", str(record / "corpus")]) == 0

    offline, p_face, p_zeroed = _offline(record, "browser1", tmp_path, tiny_run, mimi_dir, face_model)
    np.testing.assert_array_equal(np.asarray(offline.codes), np.asarray(conv.codes))
    np.testing.assert_array_equal(np.asarray(offline.face_present), np.asarray(conv.face_present))
    np.testing.assert_allclose(np.asarray(offline.face, np.float32), np.asarray(conv.face, np.float32), atol=2e-3)
    np.testing.assert_allclose([f["p"] for f in frames], p_face, atol=1e-4, rtol=0)
    np.testing.assert_allclose([f["p0"] for f in frames], p_zeroed, atol=1e-4, rtol=0)

    html = tmp_path / "view.html"  # the recorded session opens in the viewer, with its camera video
    assert main(["view", "--pred", str(record / "predictions.npz"), "--conversation", "browser1", "--media-root",
                 str(record / "media"), "--out", str(html)]) == 0  # fmt: skip
    assert html.stat().st_size > 10_000


def _client(url: str):
    from websockets.sync.client import connect

    return connect(url.replace("http", "ws") + "/ws", open_timeout=30, close_timeout=5)


def _audio(samples: np.ndarray) -> bytes:
    return b"A\0\0\0" + np.asarray(samples, "<f4").tobytes()


def _until(ws, kind: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message["type"] == kind:
            return message


def test_bad_input_is_answered_on_the_page_and_in_the_log_and_the_server_goes_on(server, carphone):
    from faceturn.store import Corpus

    url, record, log_path = server
    with _client(url) as ws:  # a wrong sample rate
        ws.send(json.dumps({"type": "start", "session": "badrate", "role": "person", "rate": 1000}))
        assert "8000–192000 Hz" in _until(ws, "error")["message"]
    with _client(url) as ws:  # not a start message
        ws.send(b"A\0\0\0")
        assert "start" in _until(ws, "error")["message"]
    with _client(url) as ws:  # a camera that delivers nothing: warned, frames go on without a face
        ws.send(json.dumps({"type": "start", "session": "nocamera", "role": "person", "rate": 16000}))
        _until(ws, "ready")
        noise = np.random.default_rng(0).standard_normal(16000 * 4).astype(np.float32) * 0.05
        for chunk in np.split(noise, 40):
            ws.send(_audio(chunk))
        assert "camera delivers nothing" in _until(ws, "warning")["message"]
        ws.send(b"V" + b"\0" * 7 + struct.pack("<d", 4.0) + b"not a jpeg")
        assert "not a decodable JPEG" in _until(ws, "error")["message"]
    with _client(url) as ws:  # a connection dropped mid-session: what came is recorded, and valid
        ws.send(json.dumps({"type": "start", "session": "dropped", "role": "person", "rate": 24000}))
        _until(ws, "ready")
        import av

        with av.open(str(carphone)) as c:
            jpegs = []
            for i, frame in enumerate(c.decode(video=0)):
                if i >= 30:
                    break
                enc = av.CodecContext.create("mjpeg", "w")
                enc.width, enc.height, enc.pix_fmt = frame.width, frame.height, "yuvj420p"
                enc.time_base = Fraction(1, 30)
                jpegs.append(b"".join(bytes(p) for p in enc.encode(frame.reformat(format="yuvj420p"))))
        speech = np.random.default_rng(1).standard_normal(24000).astype(np.float32) * 0.05
        for i in range(10):
            for j in range(3):
                ws.send(b"V" + b"\0" * 7 + struct.pack("<d", (3 * i + j) / 30) + jpegs[3 * i + j])
            ws.send(_audio(speech[i * 2400 : (i + 1) * 2400]))
        _until(ws, "frames")
    deadline = time.monotonic() + 60
    while not (record / "corpus" / "dropped.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    conv = Corpus(record / "corpus").load("dropped")
    assert conv.n_frames == 13 and not conv.problems()  # 1 s of audio: 12.5 frames, the last one completed
    assert (record / "media" / "dropped" / "person.mkv").is_file()
    log = log_path.read_text()
    assert "8000–192000 Hz" in log and "camera delivers nothing" in log and "not a decodable JPEG" in log
    assert "session dropped" in log
    urllib.request.urlopen(url + "/info", timeout=5).read()  # still serving


def test_live_refuses_a_checkpoint_that_is_not_a_run(tmp_path, capsys, face_model):
    from faceturn.cli import main

    (tmp_path / "notarun").mkdir()
    assert main(["live", "--run", str(tmp_path / "notarun"), "--face-model", str(face_model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notarun" in err


def test_a_two_party_call_encodes_both_microphones_and_waits_for_both(server):
    from faceturn.store import Corpus

    url, record, _ = server
    rng = np.random.default_rng(2)
    person_voice = rng.standard_normal(24000).astype(np.float32) * 0.05  # 1 s at 24 kHz
    agent_voice = rng.standard_normal(48000).astype(np.float32) * 0.05  # 1 s at 48 kHz: resampled by the listener
    with _client(url) as person, _client(url) as agent:
        person.send(json.dumps({"type": "start", "session": "call", "role": "person", "rate": 24000, "parties": 2}))
        _until(person, "ready")
        agent.send(json.dumps({"type": "start", "session": "call", "role": "agent", "rate": 48000, "parties": 2}))
        _until(agent, "ready")
        person.send(_audio(person_voice))
        agent.send(_audio(agent_voice[:24000]))  # the agent's first half second only
        first = _until(person, "frames", 120)["frames"]
        assert max(f["k"] for f in first) < 6  # frames wait for the agent's audio
        time.sleep(0.5)
        agent.send(_audio(agent_voice[24000:]))
        later = _until(agent, "frames", 120)
        while max(f["k"] for f in later["frames"]) < 11:  # the agent's page got the first frames too
            later = _until(agent, "frames", 120)
        assert later["counters"]["audio_waits"] > 0  # the person's frames waited more than a frame for the agent
        person.send(json.dumps({"type": "stop"}))
        closed = _until(agent, "closed", 120)
    assert closed["frames"] == 13  # 1 s: 12.5 frames, the last completed with silence, as prepare does
    conv = Corpus(record / "corpus").load("call")
    agent_codes = np.asarray(conv.codes[0])
    assert len({tuple(agent_codes[:, k]) for k in range(4, 12)}) > 1  # not the constant codes of silence


def test_a_page_without_camera_permission_says_so_and_the_server_logs_it(server):
    url, _, log_path = server
    fake_devices = ("--use-fake-device-for-media-stream", "--deny-permission-prompts")  # asked, and refused
    with launch_chromium(fake_devices) as browser:
        page = browser.new_page()
        page.goto(f"{url}/?session=denied&mode=solo&autostart=1")
        page.wait_for_function("window.faceturnLive.errors.length > 0", timeout=30_000)
        shown = page.locator("#errors").inner_text()
    assert "cannot start" in shown and "permission" in shown
    deadline = time.monotonic() + 10
    while "a page could not start" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "a page could not start: cannot start: permission" in log_path.read_text()
