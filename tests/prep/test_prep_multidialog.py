"""`faceturn prepare multidialog`: tar.gz + JSONL (old and new keys), reconstructed and measured timelines, videos."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV missing: pip install -e '.[prep]'")
pytest.importorskip("transformers", reason="transformers missing: pip install -e '.[prep]'")

from fixtures_prep import (
    MD_CONV,
    babble,
    carphone_frames,
    noise_frames,
    run_prepare,
    write_mp4,
    write_multidialog_root,
    write_wav,
)

from faceturn.prep.media import resample
from faceturn.prep.multidialog import GapModel, locate_clip, reconstruct_offsets
from faceturn.store import Corpus
from faceturn.timebase import voiced_fraction

TRUE_OFFSETS_S = {"0a": 1.0, "1b": 2.6, "2a": 4.0}  # 2a starts 0.1 s before 1b ends: an overlap


def test_gap_model_rebuilds_order_with_gaps_and_overlaps():
    starts, total = reconstruct_offsets([1.0, 2.0, 0.5, 1.0], list("abba"), GapModel(), "c1")
    assert starts == pytest.approx([0.5, 1.7, 4.1, 4.8]) and total == pytest.approx(6.3)
    overlap = GapModel(turn_gap_s=-0.3, lead_s=0.0, tail_s=0.0)
    starts, _ = reconstruct_offsets([1.0, 1.0, 0.2, 1.0], list("abab"), overlap, "c1")
    assert starts == pytest.approx([0.0, 0.7, 1.4, 1.7])  # b's second turn waits for b's first to end
    jitter = GapModel(jitter_s=0.1)
    one = reconstruct_offsets([1.0] * 5, list("ababa"), jitter, "c1")[0]
    assert one == reconstruct_offsets([1.0] * 5, list("ababa"), jitter, "c1")[0]  # seeded by the id
    assert one != reconstruct_offsets([1.0] * 5, list("ababa"), jitter, "c2")[0]
    own = reconstruct_offsets([2.0, 0.2, 1.0], list("aba"), GapModel(turn_gap_s=-1.5, lead_s=0.0), "c")[0]
    assert own[2] >= own[0] + 2.0  # a speaker never overlaps themself


def test_clips_are_found_in_a_noisy_mixture():
    rng = np.random.default_rng(0)
    rate = 8000
    rec = 0.01 * rng.standard_normal(6 * rate)
    clips = [babble(1.0, rate, 1), babble(1.2, rate, 2)]
    rec[8000 : 8000 + len(clips[0])] += clips[0]
    rec[15000 : 15000 + len(clips[1])] += clips[1]
    rec[20000:28000] += babble(1.0, rate, 3)  # someone else talking over the end of clip 2
    at, score = locate_clip(rec, clips[0])
    assert at == 8000 and score > 0.9
    at, score = locate_clip(rec, clips[1], search_from=9000)
    assert at == 15000 and score > 0.8
    assert locate_clip(rec, babble(1.0, rate, 9))[1] < 0.5  # a clip that is not there


@pytest.fixture(scope="module")
def md_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("multidialog")
    clips = write_multidialog_root(root)
    broken = root / "data" / "valid_rare" / "valid_rare_chunks_0000.tar.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")  # a cut download
    return root, clips


def _argv(root, out, mimi_dir, *extra):
    return ["multidialog", "--root", str(root), "--out", str(out), "--mimi", str(mimi_dir), "--no-progress", *extra]


def test_reconstructed_timeline_from_archives_and_both_metadata_schemas(md_root, tmp_path, mimi_dir, spm_model,
                                                                       capsys):  # fmt: skip
    root, _ = md_root
    out = tmp_path / "corpus"
    argv = _argv(root, out, mimi_dir, "--va", "utterance", "--text-model", str(spm_model), "--audio")
    assert run_prepare(argv) == 0
    assert "this run wrote 2" in capsys.readouterr().out
    corpus = Corpus(out)
    assert corpus.validate_all(progress=False) == []
    new, old = corpus.entry(MD_CONV[0]), corpus.entry(MD_CONV[1])
    assert new.timeline == old.timeline == "reconstructed"
    assert (new.participants, new.split, old.participants, old.split) == (["a", "b"], "val", ["c", "d"], "test")
    assert new.framing == "none"  # no video
    skipped = {r["id"]: r["reason"] for r in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert set(skipped) == {MD_CONV[2], "valid_rare_chunks_0000.tar.gz"}
    assert "missing partner" in skipped[MD_CONV[2]]
    assert "valid_rare_chunks_0000.tar.gz: unreadable archive" in skipped["valid_rare_chunks_0000.tar.gz"]
    assert new.audio == f"audio/{MD_CONV[0]}.wav" and (out / new.audio).stat().st_size == 44 + 2 * 2 * 122400
    conv = corpus.load(MD_CONV[0])
    # 0.5 s lead; a 0a 0.5–1.7 s; b 1b 1.9–3.4 s (0.2 s turn gap); a 2a 3.6–4.6 s; 0.5 s tail → 5.1 s = 64 frames
    assert conv.n_frames == 64
    va = np.asarray(conv.va, dtype=np.float64)
    assert np.abs(va[0] - voiced_fraction([(0.5, 1.7), (3.6, 4.6)], 64)).max() < 0.01
    assert np.abs(va[1] - voiced_fraction([(1.9, 3.4)], 64)).max() < 0.01
    assert conv.meta["timeline"]["gap_model"]["turn_gap_s"] == 0.2
    text = np.asarray(conv.text)
    assert text[0, 5] == 0 and text[0, 6] not in (0, 3)  # EPAD, then the first word where 0a starts
    assert text[1, 22] == 0 and text[1, 23] not in (0, 3)  # "okay" at 1.9 s, in frame 23 (1.84–1.92 s)
    assert (np.asarray(corpus.load(MD_CONV[1]).text) > 3).any()  # old-key transcripts were read too
    assert "proportional" in conv.meta["word_times"]


def _mixture(clips: dict, conv: str, rate: int = 16000, total_s: float = 6.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    mix = (0.003 * rng.standard_normal(int(total_s * rate))).astype(np.float32)
    for u, t_s in TRUE_OFFSETS_S.items():
        c = resample(clips[f"{conv}_{u}.wav"], 16000, rate)
        mix[int(t_s * rate) : int(t_s * rate) + len(c)] += c
    return mix


def test_measured_timeline_from_full_length_recordings(md_root, tmp_path, mimi_dir, capsys):
    root, clips = md_root
    rec = tmp_path / "recordings"
    write_wav(rec / f"{MD_CONV[0]}.wav", _mixture(clips, MD_CONV[0]), 16000)
    out = tmp_path / "corpus"
    assert run_prepare(_argv(root, out, mimi_dir, "--va", "utterance", "--recordings", str(rec))) == 0
    printed = capsys.readouterr().out
    assert "this run wrote 1" in printed and "recording of conversation" in printed  # the old-layout one has none
    corpus = Corpus(out)
    assert corpus.entry(MD_CONV[0]).timeline == "measured"
    conv = corpus.load(MD_CONV[0])
    assert conv.n_frames == 75 and min(conv.meta["timeline"]["match_scores"]) > 0.9
    va = np.asarray(conv.va, dtype=np.float64)
    want_a = voiced_fraction([(1.0, 2.2), (4.0, 5.0)], 75)
    want_b = voiced_fraction([(2.6, 4.1)], 75)
    assert np.abs(va[0] - want_a).max() < 0.05 and np.abs(va[1] - want_b).max() < 0.05
    assert ((va[0] >= 0.5) & (va[1] >= 0.5)).any()  # the overlap is real now


def test_shared_video_with_sound_places_utterances_and_assigns_faces(md_root, tmp_path, mimi_dir, face_model,
                                                                    carphone):  # fmt: skip
    root, clips = md_root
    mix = _mixture(clips, MD_CONV[0], rate=48000)
    car = carphone_frames()
    frames = [np.concatenate([car[min(i, 119)], car[0]], axis=1) for i in range(180)]  # 6 s at 30 fps
    videos = tmp_path / "videos"
    write_mp4(videos / f"{MD_CONV[0]}.mp4", frames, Fraction(30), (mix, 48000))
    out = tmp_path / "corpus"
    argv = _argv(root, out, mimi_dir, "--subsets", "valid_freq", "--video-root", str(videos), "--video-layout",
                 "shared", "--face-model", str(face_model))  # fmt: skip
    assert run_prepare(argv) == 0
    corpus = Corpus(out)
    entry = corpus.entry(MD_CONV[0])
    assert entry.timeline == "measured" and entry.framing == "tight"
    conv = corpus.load(MD_CONV[0])
    assert np.asarray(conv.face_present).mean(axis=1).min() >= 0.9
    report = conv.meta["face_assignment"]
    assert sorted(report["slot_of_speaker"].values()) == [0, 1] and report["margin"] >= 0
    assert np.asarray(report["correlation"]).shape == (2, 2)


def test_per_participant_videos_without_sound_cannot_be_placed(md_root, tmp_path, mimi_dir, face_model):
    root, _ = md_root
    videos = tmp_path / "videos"
    for spk in "ab":
        write_mp4(videos / f"{MD_CONV[0]}_{spk}.mp4", noise_frames(30, (64, 64), 1), Fraction(30))
    out = tmp_path / "corpus"
    argv = _argv(root, out, mimi_dir, "--subsets", "valid_freq", "--video-root", str(videos), "--face-model",
                 str(face_model))  # fmt: skip
    assert run_prepare(argv) == 0
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert "video has no sound and no full-length recording" in reasons[MD_CONV[0]]
    assert not list(out.glob("*.safetensors"))
