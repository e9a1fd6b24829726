"""`faceturn prepare livelink`: two participants' WAVs and Live Link Face takes per folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers", reason="transformers missing: pip install -e '.[prep]'")
pytest.importorskip("silero_vad", reason="silero-vad missing: pip install silero-vad")

from fixtures_prep import run_prepare, speech_track, write_live_link_csv, write_wav

from faceturn.schema import CHANNEL_INDEX
from faceturn.store import Corpus


def test_live_link_takes_become_a_conversation(tmp_path, mimi_dir, capsys):
    root = tmp_path / "takes"
    for name, span, seed in (("alice", (0.5, 1.5), 1), ("bob", (1.8, 2.8), 2)):
        write_wav(root / "session1" / f"{name}.wav", speech_track(3.0, 48000, [span], seed), 48000)
        write_live_link_csv(root / "session1" / f"{name}.csv", 90, np.linspace(0, 1, 90), head_yaw_rad=seed / 10)
    write_wav(root / "session2" / "carol.wav", speech_track(1.0, 48000, [], 3), 48000)
    out = tmp_path / "corpus"
    assert run_prepare(["livelink", "--root", str(root), "--out", str(out), "--mimi", str(mimi_dir), "--no-progress",
                        "--audio"]) == 0  # fmt: skip
    assert "this run wrote 1" in capsys.readouterr().out
    corpus = Corpus(out)
    assert corpus.validate_all(progress=False) == []
    entry = corpus.entry("session1")
    assert entry.participants == ["alice", "bob"] and entry.framing == "arkit" and entry.audio == "audio/session1.wav"
    conv = corpus.load("session1")
    assert conv.n_frames == 38 and np.asarray(conv.face_present).all()
    face = np.asarray(conv.face, dtype=np.float32)
    assert face[:, 0, CHANNEL_INDEX["head_yaw"]] == pytest.approx([0.1, 0.2], abs=1e-3)
    va = np.asarray(conv.va, dtype=np.float32)
    assert va[0, 8:18].mean() > 0.5 and va[0, 25:].max() == 0  # alice talks 0.5–1.5 s, bob 1.8–2.8 s
    assert va[1, 25:34].mean() > 0.5 and va[1, :18].max() == 0
    import soundfile as sf

    info = sf.info(str(out / entry.audio))
    assert (info.channels, info.samplerate, info.frames) == (2, 24000, 72000)
    reason = json.loads((out / "skipped.jsonl").read_text())["reason"]
    assert "session2: need exactly two participants" in reason
