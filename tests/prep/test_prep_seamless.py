"""`faceturn prepare seamless` on fixtures in the exact Seamless Interaction layouts, good and bad."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV missing: pip install -e '.[prep]'")
pytest.importorskip("transformers", reason="transformers missing: pip install -e '.[prep]'")
pytest.importorskip("silero_vad", reason="silero-vad missing: pip install silero-vad")

from fixtures_prep import (
    noise_frames,
    run_prepare,
    seamless_npz,
    voiced_frames,
    write_mp4,
    write_seamless_bundle,
    write_wav,
)

from faceturn.store import Corpus

PAD, EPAD = 3, 0


def test_folders_and_tars_pair_across_archives(seamless_corpus):
    corpus = Corpus(seamless_corpus)
    assert corpus.validate_all(progress=False) == []
    assert corpus.ids() == ["V00_S0001_I00000001", "V01_S0002_I00000002"]
    first, second = corpus.entry("V00_S0001_I00000001"), corpus.entry("V01_S0002_I00000002")
    assert first.participants == ["V00_P0001", "V00_P0002A"]  # the suffixed id is kept whole
    assert first.source["archives"] == ["0000/0000", "0000/0001"] and first.group == "V00_S0001"
    assert second.source["archives"] == ["0001/0000", "0001/0003"]  # read from two WebDataset tars
    assert first.split == second.split == "val"  # Seamless "dev"
    assert first.framing == "wide" and first.n_frames == second.n_frames == 50  # 4 s
    conv = corpus.load("V01_S0002_I00000002")
    assert conv.meta["video_fps"] == pytest.approx([29.97, 29.97], abs=0.01)
    codes = np.asarray(conv.codes)
    assert codes.shape == (2, 8, 50) and len(np.unique(codes)) > 10


def test_voice_activity_and_text_land_on_the_right_frames(seamless_corpus, spm_model):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_model))
    conv = Corpus(seamless_corpus).load("V00_S0001_I00000001")
    va = np.asarray(conv.va, dtype=np.float64)
    # participant 0: VAD 0.5–1.9 s → frames 6 (¾ voiced) … 23 (¾); participant 1: 2.0–3.5 s → frames 25 … 43 (¾)
    assert voiced_frames(va[0]).tolist() == list(range(6, 24))
    assert va[0, 6] == pytest.approx(0.75) and va[0, 23] == pytest.approx(0.75)
    assert voiced_frames(va[1]).tolist() == list(range(25, 44))
    text = np.asarray(conv.text)
    hi, there = sp.encode("Hi"), sp.encode("there.")
    assert text[0, 5] == EPAD and text[0, 6 : 6 + len(hi)].tolist() == hi
    assert text[0, 10] == EPAD and text[0, 11 : 11 + len(there)].tolist() == there
    right, so = sp.encode("Right."), sp.encode("so")
    assert text[1, 24] == EPAD and text[1, 25 : 25 + len(right)].tolist() == right
    assert text[1, 32 : 32 + len(so)].tolist() == so  # "okay" has null times and is left out
    assert conv.meta["words_without_times"] == [0, 1]
    assert conv.meta["va_source"] == ["metadata:vad", "metadata:vad"]


def test_small_face_is_found_through_the_keypoint_crop(seamless_corpus):
    conv = Corpus(seamless_corpus).load("V00_S0001_I00000001")
    present = np.asarray(conv.face_present)
    assert present[0].mean() >= 0.9 and present[1].sum() == 0  # the partner's video has no face
    assert conv.meta["face_tracks"][0]["crop_frames"]["keypoints"] >= 40
    face = np.asarray(conv.face, dtype=np.float32)
    assert np.isfinite(face).all() and not face[1].any()


def test_inspect_accepts_the_prepared_corpus(seamless_corpus, capsys):
    from faceturn.cli import main

    assert main(["inspect", str(seamless_corpus)]) == 0
    assert "V00_S0001_I00000001" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# bad input

WORDS = [("yes", 0.3, 0.9)]
GOOD = Fraction(30)


def _bundle(folder: Path, fid: str, seed: int, duration_s: float = 2.0, n_frames: int = 60, words=WORDS):
    return write_seamless_bundle(folder, fid, noise_frames(n_frames, (64, 112), seed), GOOD, words,
                                 duration_s=duration_s, seed=seed)  # fmt: skip


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seamless-bad")
    d = root / "improvised" / "test" / "0000" / "0000"
    e = root / "improvised" / "test" / "0000" / "0007"
    # a clean dyad whose transcript has words with null times
    _bundle(d, "V00_S0100_I00000001_P0001", 1, words=[("yes", 0.3, 0.9), ("um", None, None)])
    _bundle(e, "V00_S0100_I00000001_P0002", 2)
    # header-only WAV
    _bundle(d, "V00_S0100_I00000002_P0003", 3)
    _bundle(e, "V00_S0100_I00000002_P0004", 4)
    write_wav(e / "V00_S0100_I00000002_P0004.wav", np.zeros(0, np.float32), 48000)
    # MP4 without a video stream
    _bundle(d, "V00_S0100_I00000003_P0005", 5)
    _bundle(e, "V00_S0100_I00000003_P0006", 6)
    import av

    with av.open(str(e / "V00_S0100_I00000003_P0006.mp4"), "w") as c:
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        fr.sample_rate, fr.pts = 48000, 0
        for pkt in [*a.encode(fr), *a.encode()]:
            c.mux(pkt)
    # truncated MP4 (moov atom missing)
    _bundle(d, "V00_S0100_I00000004_P0007", 7)
    p = _bundle(e, "V00_S0100_I00000004_P0008", 8)["mp4"]
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    # NPZ with N = 0
    _bundle(d, "V00_S0100_I00000005_P0009", 9)
    _bundle(e, "V00_S0100_I00000005_P0010", 10)
    np.savez_compressed(e / "V00_S0100_I00000005_P0010.npz", **seamless_npz(0, None))
    # missing partner (listed in filelist.csv, archive absent)
    _bundle(d, "V00_S0100_I00000006_P0011", 11)
    # video/audio length mismatch: 2 s of audio, 0.5 s of video
    _bundle(d, "V00_S0100_I00000007_P0013", 13)
    _bundle(e, "V00_S0100_I00000007_P0014", 14)
    write_mp4(e / "V00_S0100_I00000007_P0014.mp4", noise_frames(15, (64, 112), 14), GOOD)
    # three files for one interaction, one of them empty: the two good ones make the dyad
    _bundle(d, "V00_S0100_I00000008_P0015", 15)
    _bundle(e, "V00_S0100_I00000008_P0016", 16)
    _bundle(e, "V00_S0100_I00000008_P0016B", 17)
    write_wav(e / "V00_S0100_I00000008_P0016B.wav", np.zeros(0, np.float32), 48000)
    # not a file id at all
    (d / "notes_P12.json").write_text("{}")
    (root / "filelist.csv").write_text(
        "file_id,label,split,batch_idx,archive_idx,has_imitator_movement,has_annotation_1p,has_annotation_3p\n"
        "V00_S0100_I00000006_P0011,improvised,test,0,0,0,0,0\nV00_S0100_I00000006_P0012,improvised,test,0,40,0,0,0\n"
    )
    return root


EXPECTED_SKIPS = {
    "V00_S0100_I00000002": r"P0004\.wav: audio has no samples \(header-only file\)",
    "V00_S0100_I00000003": r"P0006\.mp4: no video stream",
    "V00_S0100_I00000004": r"P0008\.mp4: unreadable video \(",  # ffmpeg: moov atom not found
    "V00_S0100_I00000005": r"P0010\.npz: NPZ has no frames \(N = 0\)",
    "V00_S0100_I00000006": r"P0011: missing partner .*V00_S0100_I00000006_P0012 \(archive 0000/0040\)",
    "V00_S0100_I00000007": r"P0014\.mp4: video lasts 0\.50 s but the audio 2\.00 s",
    "notes_P12": r"notes_P12\.json.* is not a Seamless file id",
}


def test_bad_input_is_skipped_with_a_reason_and_resume_redoes_nothing(bad_root, tmp_path, mimi_dir, face_model,
                                                                     capsys):  # fmt: skip
    import re

    out = tmp_path / "corpus"
    argv = ["seamless", "--root", str(bad_root), "--out", str(out), "--mimi", str(mimi_dir), "--face-model",
            str(face_model), "--no-progress"]  # fmt: skip
    assert run_prepare(argv) == 0
    printed = capsys.readouterr().out
    assert "this run wrote 2" in printed and "skipped 7" in printed
    written = sorted(p.stem for p in out.glob("*.safetensors"))
    assert written == ["V00_S0100_I00000001", "V00_S0100_I00000008"]  # never a partial conversation
    skipped = {r["id"]: r for r in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert set(skipped) == set(EXPECTED_SKIPS)
    for conv_id, pattern in EXPECTED_SKIPS.items():
        assert re.search(pattern, skipped[conv_id]["reason"]), (conv_id, skipped[conv_id]["reason"])
        assert skipped[conv_id]["kind"] == "bad_input"
    corpus = Corpus(out)
    assert corpus.validate_all(progress=False) == []
    clean = corpus.load("V00_S0100_I00000001")
    assert clean.meta["words_without_times"] == [0, 0]  # no tokenizer given: text is absent (-1)
    assert (np.asarray(clean.text) == -1).all()
    trio = corpus.load("V00_S0100_I00000008")
    assert corpus.entry("V00_S0100_I00000008").participants == ["V00_P0015", "V00_P0016"]
    assert "P0016B.wav: audio has no samples" in trio.meta["dropped_participants"][0]

    # a crash: one finished file lost, a half-written temporary left behind; the re-run redoes only that one
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    (out / "V00_S0100_I00000008.safetensors").unlink()
    (out / ".V00_S0100_I00000008.safetensors.x1y2.tmp").write_bytes(b"half")
    log_size = (out / "skipped.jsonl").stat().st_size
    assert run_prepare(argv) == 0
    printed = capsys.readouterr().out
    assert "this run wrote 1, found 1 already done, skipped 0 (+7 skipped by earlier runs)" in printed
    assert (out / "V00_S0100_I00000001.safetensors").stat().st_mtime_ns == mtimes["V00_S0100_I00000001.safetensors"]
    assert not list(out.glob("*.tmp")) and (out / "skipped.jsonl").stat().st_size == log_size
    assert Corpus(out).validate_all(progress=False) == []


def test_shards_split_the_work_and_together_cover_it(bad_root, tmp_path, mimi_dir, face_model, capsys):
    out = tmp_path / "corpus"
    base = ["seamless", "--root", str(bad_root), "--out", str(out), "--mimi", str(mimi_dir), "--face-model",
            str(face_model), "--no-progress", "--set", "max_av_mismatch_s=10"]  # fmt: skip
    assert run_prepare([*base, "--shard", "0/2"]) == 0
    assert run_prepare([*base, "--shard", "1/2"]) == 0
    capsys.readouterr()
    logs = sorted(p.name for p in out.glob("skipped*.jsonl"))
    assert logs == ["skipped.0-of-2.jsonl", "skipped.1-of-2.jsonl"]
    ids = [json.loads(line)["id"] for p in out.glob("skipped*.jsonl") for line in p.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6  # the 0.5 s video is now tolerated (--set), the rest still skipped
    assert sorted(Corpus(out).ids()) == ["V00_S0100_I00000001", "V00_S0100_I00000007", "V00_S0100_I00000008"]


def test_unknown_override_is_a_clear_error(bad_root, tmp_path, capsys):
    argv = ["seamless", "--root", str(bad_root), "--out", str(tmp_path / "c"), "--set", "face.crop_margn=1"]
    assert run_prepare(argv) == 2
    assert "crop_margn" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_work(seamless_root, tmp_path, mimi_dir, face_model):
    """SIGKILL `prepare` once the first conversation is written, run it again: it finishes the rest only."""
    out = tmp_path / "corpus"
    cmd = [sys.executable, "-m", "faceturn", "prepare", "seamless", "--root", str(seamless_root), "--out", str(out),
           "--mimi", str(mimi_dir), "--face-model", str(face_model), "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("*.safetensors")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    assert len(first) == 1
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "this run wrote 1, found 1 already done" in done.stdout
    assert all((out / name).stat().st_mtime_ns == t for name, t in first.items())
    assert Corpus(out).validate_all(progress=False) == []


@pytest.mark.slow
def test_worker_processes_give_the_same_corpus(seamless_root, seamless_corpus, tmp_path, mimi_dir, face_model,
                                               spm_model):  # fmt: skip
    out = tmp_path / "corpus"
    argv = ["seamless", "--root", str(seamless_root), "--out", str(out), "--mimi", str(mimi_dir), "--face-model",
            str(face_model), "--text-model", str(spm_model), "--no-progress", "--jobs", "2"]  # fmt: skip
    assert run_prepare(argv) == 0
    for conv_id in Corpus(seamless_corpus).ids():
        name = f"{conv_id}.safetensors"
        assert (out / name).read_bytes() == (seamless_corpus / name).read_bytes()  # same bytes as one process
