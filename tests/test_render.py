"""`faceturn render`: a valid MP4 with one video and one audio stream as long as the window, the playhead moving in
step with time, the sound aligned with who speaks, and the face video beside the timeline in sync."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceturn.cli import main
from faceturn.store import Corpus
from faceturn.timebase import FRAME_S
from faceturn.viz.figures import load_timeline, timeline_image
from faceturn.viz.media import conversation_audio, read_wav
from faceturn.viz.video import PLAYHEAD_RGB, render_video


def _streams(path, keep=()):
    """Stream facts, the number of video frames, those at indices `keep` as RGB, and the decoded sound."""
    import av

    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {
            "video_s": float(v.duration * v.time_base),
            "audio_s": float(a.duration * a.time_base),
            "size": (v.codec_context.width, v.codec_context.height),
            "rate": a.codec_context.sample_rate,
        }
        frames, n_frames = {}, 0
        for i, f in enumerate(c.decode(video=0)):
            if i in keep:
                frames[i] = f.to_ndarray(format="rgb24")
            n_frames += 1
    with av.open(str(path)) as c:
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return info, n_frames, frames, sound


def _playhead_x(rgb: np.ndarray, row: int) -> float:
    red = np.abs(rgb[row].astype(int) - np.array(PLAYHEAD_RGB)).sum(axis=1) < 90
    assert red.any(), "no playhead in this frame"
    return float(np.flatnonzero(red).mean())


def test_render_whole_conversation(tmp_path, viz_data):
    conv_id = viz_data.ids[0]
    n_frames = Corpus(viz_data.corpus).entry(conv_id).n_frames
    out = render_video(viz_data.pred, conv_id, tmp_path / "clip.mp4")
    checked = (0, n_frames // 3, n_frames - 1)
    info, n_video_frames, frames, sound = _streams(out, keep=checked)
    assert n_video_frames == n_frames  # 12.5 fps: one video frame per model frame
    assert info["video_s"] == pytest.approx(n_frames * FRAME_S, abs=0.01)
    assert info["audio_s"] == pytest.approx(n_frames * FRAME_S, abs=0.1)
    assert info["size"] == (1280, 720)
    # the playhead sits where the timeline maps each frame's time
    img = timeline_image(load_timeline(viz_data.pred, conv_id), 1280, 720)
    row = round((img.plot_top_px + img.plot_bottom_px) / 2)
    for i in checked:
        assert _playhead_x(frames[i], row) == pytest.approx(float(img.x_px(i * FRAME_S)), abs=3.0)
    # the sound is both participants mixed: loud where someone speaks, silent where nobody does
    va = np.asarray(Corpus(viz_data.corpus).load(conv_id).va, np.float32)
    per_frame = round(info["rate"] * FRAME_S)
    rms = np.sqrt(np.square(sound[: n_frames * per_frame].reshape(-1, per_frame)).mean(axis=1))
    speech, silence = (va >= 1).any(axis=0)[: rms.size], (va == 0).all(axis=0)[: rms.size]
    assert speech.any() and silence.any()
    assert np.median(rms[speech]) > 0.02 > 10 * np.median(rms[silence])


def test_render_window_with_face_video(tmp_path, viz_data, face_video):
    start_s, end_s = 4.0, 10.0
    out = render_video(viz_data.pred, viz_data.ids[0], tmp_path / "face.mp4", start_s=start_s, end_s=end_s,
                       video=face_video.path, fps=25.0, height_px=480, timeline_width_px=960)  # fmt: skip
    info, n_video_frames, frames, _ = _streams(out, keep=(10, 100))
    data = load_timeline(viz_data.pred, viz_data.ids[0], start_s=start_s, end_s=end_s)
    window_s = data.end_s - data.start_s
    assert info["video_s"] == pytest.approx(window_s, abs=0.05) and info["audio_s"] == pytest.approx(window_s, abs=0.1)
    assert n_video_frames == round(window_s * 25)
    video_w = info["size"][0] - 960
    assert info["size"][1] == 480 and 0 < video_w < 480  # 4:3 face video in a column of 480 px high
    scale = video_w / face_video.width_px
    for i in (10, 100):  # the square is where the face video had it at this conversation time
        t_s = data.start_s + i / 25
        panel = frames[i][:, :video_w].astype(int)
        yellow = (panel[..., 0] > 180) & (panel[..., 1] > 180) & (panel[..., 2] < 90)
        left = np.flatnonzero(yellow.any(axis=0)).min() / scale
        assert left == pytest.approx(face_video.square_x_px(t_s), abs=4.0)


def test_render_regenerates_synthetic_sound(tmp_path, viz_data):
    """A synthetic corpus written without --audio still renders with its sound: the same waveform as --audio wrote."""
    assert Corpus(viz_data.silent_corpus).entry(viz_data.ids[0]).audio is None
    regenerated, rate_hz = conversation_audio(Corpus(viz_data.silent_corpus), viz_data.ids[0])
    stored, stored_rate_hz = read_wav(viz_data.corpus / Corpus(viz_data.corpus).entry(viz_data.ids[0]).audio)
    assert rate_hz == stored_rate_hz and regenerated.shape == stored.shape
    assert np.abs(regenerated - stored).max() < 2 / 32768  # PCM16 rounding
    out = tmp_path / "silent.mp4"
    args = ["render", "--pred", str(viz_data.silent_pred), "--conversation", viz_data.ids[0], "--end", "3"]
    assert main([*args, "--out", str(out)]) == 0
    info, _, _, _ = _streams(out)
    assert info["audio_s"] == pytest.approx(3.04, abs=0.1)


def test_render_refuses_bad_input(tmp_path, viz_data, capsys):
    with pytest.raises(ValueError, match="fps must be between 1 and 60"):
        render_video(viz_data.pred, viz_data.ids[0], tmp_path / "x.mp4", fps=0.5)
    not_video = tmp_path / "face.mp4"
    not_video.write_bytes(b"\x00" * 100)
    args = ["render", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0], "--out", str(tmp_path / "x.mp4")]
    assert main([*args, "--video", str(not_video)]) == 2
    assert f"{not_video}: unreadable video" in capsys.readouterr().err
    # a corpus without audio that is not synthetic (truth.json gone) says so
    import shutil

    plain = tmp_path / "plain"  # a copy of the silent corpus (same manifest): the silent predictions' corpus
    shutil.copytree(viz_data.silent_corpus, plain)
    (plain / "truth.json").unlink()
    silent = ["render", "--pred", str(viz_data.silent_pred), "--conversation", viz_data.ids[0]]
    assert main([*silent, "--out", str(tmp_path / "x.mp4"), "--corpus", str(plain)]) == 2
    assert f"{plain / 'manifest.jsonl'}: conversation '{viz_data.ids[0]}' has no audio" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_render_refuses_another_corpus_with_the_same_ids(tmp_path, viz_data, capsys):
    """The silent corpus holds the same first conversation id with the same length: render used to play one
    corpus' predictions over the other's sound."""
    out = tmp_path / "x.mp4"
    assert main(["render", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0], "--corpus",
                 str(viz_data.silent_corpus), "--end", "2", "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"predictions made from corpus {Path(viz_data.corpus).resolve()}" in err
    assert f"not from {viz_data.silent_corpus}" in err and not out.exists()


def test_face_video_is_found_by_the_name_the_tracker_recorded(tmp_path):
    from types import SimpleNamespace

    from faceturn.viz.media import find_face_video

    conv = SimpleNamespace(meta={"face_tracks": [{"video": "V01_S1_I1_P0.mp4"}, {"video": "V01_S1_I1_P1.mp4"}]})
    (tmp_path / "media" / "dev").mkdir(parents=True)
    (tmp_path / "media" / "dev" / "V01_S1_I1_P1.mp4").write_bytes(b"")
    assert find_face_video(conv, 1, tmp_path / "media") == tmp_path / "media" / "dev" / "V01_S1_I1_P1.mp4"
    assert find_face_video(conv, 0, tmp_path / "media") is None  # not there: no face panel
    assert find_face_video(conv, 1, None) is None
    assert find_face_video(SimpleNamespace(meta={}), 1, tmp_path / "media") is None  # synthetic: no video
    with pytest.raises(ValueError, match="nowhere: media folder not found"):
        find_face_video(conv, 1, tmp_path / "nowhere")


@pytest.mark.slow
def test_trained_model_end_to_end(tmp_path, viz_data):
    """train a few steps → predict → plot, render and view the real prediction file."""
    from faceturn.eval.predict import predict
    from faceturn.recipe import load_train_config
    from faceturn.train import train

    overrides = ["optim.max_steps=2", "optim.warmup_steps=1", "data.window_s=8.0", "data.batch_size=2",
                 "eval_every_steps=0", "checkpoint_every_steps=0", "progress=false"]  # fmt: skip
    split = Corpus(viz_data.corpus).entry(viz_data.ids[0]).split  # both conversations share a group, so a split
    train(
        load_train_config("aux", [*overrides, f"data.train_split={split}", f"data.val_split={split}"]),
        viz_data.corpus,
        tmp_path / "run",
    )
    pred_path = tmp_path / "pred.npz"
    pred = predict(tmp_path / "run", viz_data.corpus, split, progress=False)
    pred.save(pred_path)
    conv_id = pred.meta["conversations"][0]
    args = ["--pred", str(pred_path), "--conversation", conv_id, "--end", "6"]
    assert main(["plot", "timeline", *args, "--out", str(tmp_path)]) == 0
    assert main(["render", *args, "--out", str(tmp_path / "clip.mp4")]) == 0
    assert main(["view", *args, "--out", str(tmp_path / "view.html")]) == 0
    info, n_video_frames, _, _ = _streams(tmp_path / "clip.mp4")
    assert n_video_frames == 76 and info["audio_s"] == pytest.approx(6.08, abs=0.1)
