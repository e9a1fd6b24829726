"""The live listener against the offline pipeline: on the same media (a real talking face, real speech), its Mimi
codes, faces and P(yield) equal `prepare recordings` + `predict`, frame for frame; late and missing video is
counted and given face_present = 0."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_prep import espeak_speech, run_prepare

from faceturn.prep.audio_tokens import MIMI_RATE_HZ, MimiEncoder, MimiSettings
from faceturn.prep.face import FaceSettings
from faceturn.prep.media import StreamingResampler, read_audio, resample, timed_video_frames

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SENTENCE = "Well, I think that is right. So what do you say?"


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = espeak_speech(tmp_path_factory.mktemp("speech") / "speech.wav", SENTENCE)
    if path is None:
        if shutil.which("apt-get") and __import__("os").environ.get("CI"):
            pytest.fail("espeak-ng is required in CI (apt-get install espeak-ng)")
        pytest.skip("espeak-ng missing (Debian: apt-get install espeak-ng)")
    return path


def test_streaming_resampler_equals_resampling_the_whole_signal():
    rng = np.random.default_rng(0)
    for from_hz, to_hz in [(48_000, 24_000), (44_100, 24_000), (22_050, 24_000), (24_000, 16_000), (8_000, 24_000)]:
        x = rng.standard_normal(from_hz).astype(np.float32)
        r = StreamingResampler(from_hz, to_hz)
        cuts = np.sort(rng.choice(np.arange(1, x.size), 40, replace=False))
        y = np.concatenate([r.push(piece) for piece in np.split(x, cuts)] + [r.flush()])
        np.testing.assert_array_equal(y, resample(x, from_hz, to_hz))


def test_listener_equals_prepare_and_predict(tmp_path, tiny_run, speech, carphone, face_model, mimi_dir):
    from transformers import MimiModel

    from faceturn.checkpoint import load_model
    from faceturn.cli import main
    from faceturn.eval.predict import Predictions
    from faceturn.live.listener import AGENT, PERSON, Listener, ListenerSettings
    from faceturn.store import Corpus

    wave, rate_hz = read_audio(speech)
    assert rate_hz != MIMI_RATE_HZ  # the listener resamples, as prepare does
    model, _ = load_model(tiny_run)
    recorded: list[list[np.ndarray]] = [[], []]
    settings = ListenerSettings(mimi=MimiSettings(model=str(mimi_dir), device="cpu"),
                                face=FaceSettings(model=str(face_model)))  # fmt: skip
    mimi = MimiEncoder(settings.mimi, model=MimiModel.from_pretrained(mimi_dir))
    listener = Listener(model, mimi, settings, sink=lambda side, x: recorded[side].append(x))

    # the camera and the microphone, interleaved in time; audio in uneven chunks
    video = list(timed_video_frames(carphone))
    rng = np.random.default_rng(1)
    cuts = np.cumsum(rng.integers(100, 3000, size=wave.size // 100))
    cuts = cuts[cuts < wave.size]
    frames, v = [], 0
    for piece, end in zip(np.split(wave, cuts), [*cuts, wave.size], strict=True):
        while v < len(video) and video[v][0] <= end / rate_hz:
            listener.push_video(video[v][1], video[v][0])
            v += 1
        listener.push_audio(PERSON, piece, rate_hz)
        frames += listener.frames()
    frames += listener.close()
    n = len(frames)
    assert [f.k for f in frames] == list(range(n))
    assert n == -(-resample(wave, rate_hz, MIMI_RATE_HZ).size // 1920)  # one frame per started 80 ms, as prepare

    # the same media through prepare + predict
    person = np.concatenate(recorded[PERSON])
    np.testing.assert_array_equal(person, resample(wave, rate_hz, MIMI_RATE_HZ))
    root = tmp_path / "recordings" / "session"
    root.mkdir(parents=True)
    import soundfile as sf

    sf.write(root / "person.wav", person, MIMI_RATE_HZ, subtype="FLOAT")
    sf.write(root / "agent.wav", np.zeros_like(person), MIMI_RATE_HZ, subtype="FLOAT")
    shutil.copy(carphone, root / "person.mp4")
    corpus = tmp_path / "corpus"
    assert run_prepare(["recordings", "--root", str(root.parent), "--out", str(corpus), "--mimi", str(mimi_dir),
                        "--device", "cpu", "--face-model", str(face_model), "--no-progress"]) == 0  # fmt: skip
    conv = Corpus(corpus).load("session")
    assert conv.n_frames == n
    split = Corpus(corpus).entry("session").split
    out = tmp_path / "pred.npz"
    assert main(["predict", "--run", str(tiny_run), "--corpus", str(corpus), "--split", split, "--out", str(out)]) == 0
    pred = Predictions.load(out)
    mine = pred.perspective == AGENT
    order = np.argsort(pred.frame[mine])

    codes = np.stack([f.codes for f in frames], axis=-1)
    np.testing.assert_array_equal(codes, np.asarray(conv.codes))
    present = np.array([f.face_present for f in frames])
    np.testing.assert_array_equal(present, np.asarray(conv.face_present[PERSON]).astype(bool))
    assert 0.8 < present.mean() < 1.0 or present.all()  # a real face, found on (nearly) every frame
    faces = np.stack([f.face for f in frames])
    np.testing.assert_allclose(faces.astype(np.float16), np.asarray(conv.face[PERSON]), atol=2e-3)
    p_face = np.array([f.p_yield for f in frames])
    p_zero = np.array([f.p_yield_zeroed for f in frames])
    np.testing.assert_allclose(p_face, pred.p_face[mine][order], atol=1e-4, rtol=0)
    np.testing.assert_allclose(p_zero, pred.p_zeroed[mine][order], atol=1e-4, rtol=0)
    assert np.abs(p_face - p_zero).max() > 1e-3  # the face reaches the model
    c = listener.counters
    assert c.frames == n and c.face_missing == n - present.sum() and c.video_dropped == 0
    assert all(f.input_done_s <= f.ready_s for f in frames)


def test_late_and_missing_video_is_counted_not_silent(tiny_run, carphone, face_model, mimi_dir):
    from transformers import MimiModel

    from faceturn.checkpoint import load_model
    from faceturn.live.listener import PERSON, Listener, ListenerSettings

    model, _ = load_model(tiny_run)
    settings = ListenerSettings(mimi=MimiSettings(model=str(mimi_dir), device="cpu"),
                                face=FaceSettings(model=str(face_model)), video_wait_s=0.0)  # fmt: skip
    listener = Listener(model, MimiEncoder(settings.mimi, model=MimiModel.from_pretrained(mimi_dir)), settings)
    video = list(timed_video_frames(carphone))
    noise = np.random.default_rng(0).standard_normal(MIMI_RATE_HZ).astype(np.float32) * 0.1  # 1 s
    listener.push_video(video[0][1], video[0][0])
    listener.push_audio(PERSON, noise, MIMI_RATE_HZ)  # 12 whole frames, no video after t = 0: late at once
    first = listener.frames()
    assert len(first) == 12
    assert first[0].face_present and not any(f.face_present for f in first[1:])
    assert listener.counters.video_late == 11 and listener.counters.face_missing == 11
    listener.push_video(video[15][1], 0.2)  # a frame for instants already decided: dropped, counted
    assert listener.counters.video_dropped == 1
    with pytest.raises(Exception, match="rate mid-session"):
        listener.push_audio(PERSON, noise, 48_000)
    with pytest.raises(Exception, match="NaN"):
        listener.push_audio(PERSON, np.full(10, np.nan, np.float32), MIMI_RATE_HZ)
    with pytest.raises(Exception, match="silent agent"):
        listener.push_audio(0, noise, MIMI_RATE_HZ)


def test_an_agent_voice_plays_in_step_with_the_person(tiny_run, speech, mimi_dir):
    from transformers import MimiModel

    from faceturn.checkpoint import load_model
    from faceturn.live.listener import AGENT, PERSON, Listener, ListenerSettings

    wave, rate_hz = read_audio(speech)
    person = np.random.default_rng(3).standard_normal(rate_hz * 3).astype(np.float32) * 0.05  # 3 s, longer
    voice = resample(wave, rate_hz, MIMI_RATE_HZ)[: MIMI_RATE_HZ * 2]  # the agent speaks for 2 s, then is silent
    model, _ = load_model(tiny_run)
    settings = ListenerSettings(mimi=MimiSettings(model=str(mimi_dir), device="cpu"))
    mimi = MimiEncoder(settings.mimi, model=MimiModel.from_pretrained(mimi_dir))
    listener = Listener(model, mimi, settings, agent_voice=voice, video=False)
    frames = []
    for piece in np.array_split(person, 37):
        listener.push_audio(PERSON, piece, rate_hz)
        frames += listener.frames()
    frames += listener.close()
    codes = np.stack([f.codes for f in frames], axis=-1)
    person_24k = resample(person, rate_hz, MIMI_RATE_HZ)
    agent_24k = np.pad(voice, (0, len(person_24k) - len(voice)))
    np.testing.assert_array_equal(codes, mimi.encode([agent_24k, person_24k], MIMI_RATE_HZ))
    assert np.mean([f.va[AGENT] for f in frames[:20]]) > np.mean([f.va[AGENT] for f in frames[-8:]])
    with pytest.raises(Exception, match="plays its agent_voice"):
        listener.push_audio(AGENT, voice[:100], MIMI_RATE_HZ)
