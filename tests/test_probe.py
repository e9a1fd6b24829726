"""The step-1 probe recovers a cue planted in one face group, and its controls sit at chance."""

from dataclasses import replace

import numpy as np
import pytest

from faceturn.eval.probe import ProbeConfig, format_probe, run_probe
from faceturn.labels import turn_labels
from faceturn.schema import CHANNEL_INDEX, GAZE, HEAD_ROTATION, N_FACE
from faceturn.store import Conversation, Corpus, CorpusWriter, ManifestEntry
from faceturn.timebase import voiced_fraction


def _alternating_turns(rng, n_frames):
    """Two speakers alternating turns of 2-5 s with 0.1-0.5 s gaps."""
    t, speaker, spans = 0.3, 0, ([], [])
    end_s = n_frames * 0.08
    while t < end_s:
        d = rng.uniform(2.0, 5.0)
        spans[speaker].append((t, min(t + d, end_s)))
        t += d + rng.uniform(0.1, 0.5)
        speaker = 1 - speaker
    return np.stack([voiced_fraction(spans[s], n_frames) for s in (0, 1)])


@pytest.fixture(scope="module")
def planted_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_corpus")
    rng = np.random.default_rng(0)
    writer = CorpusWriter(root, corpus="planted")
    n_frames = 1000
    for i in range(16):
        va = _alternating_turns(rng, n_frames)
        y = turn_labels(va).y.astype(np.float32)
        face = rng.uniform(0.1, 0.5, size=(2, n_frames, N_FACE)).astype(np.float32)  # blendshapes in [0, 1]
        face[:, :, [CHANNEL_INDEX[c] for c in HEAD_ROTATION]] = rng.normal(0, 0.2, size=(2, n_frames, 3))
        face[:, :, CHANNEL_INDEX["head_tx"]] = rng.normal(0, 30)  # per-clip constant: carries nothing
        gaze = rng.normal(0, 1, size=(2, n_frames, 3)) + np.array([0.0, 0.0, 3.0])
        face[:, :, [CHANNEL_INDEX[c] for c in GAZE]] = gaze / np.linalg.norm(gaze, axis=-1, keepdims=True)
        # the planted cue: browInnerUp of both faces rises in the second before a hand-over
        face[:, :, CHANNEL_INDEX["browInnerUp"]] += 0.5 * y
        conv = Conversation(
            id=f"c{i:03d}",
            codes=rng.integers(0, 2048, size=(2, 8, n_frames)).astype(np.int16),
            text=np.full((2, n_frames), -1, np.int32),
            va=va.astype(np.float16),
            face=face.astype(np.float16),
            face_present=np.ones((2, n_frames), np.uint8),
            meta={},
        )
        entry = ManifestEntry(
            id=conv.id, file=f"{conv.id}.safetensors", split="train", n_frames=n_frames, corpus="planted",
            framing="", participants=[f"p{2 * i}", f"p{2 * i + 1}"], group=conv.id, source="test",
        )  # fmt: skip
        writer.write(conv, entry)
    writer.finalize()
    return Corpus(root)


def test_probe_finds_the_planted_group_and_controls_are_at_chance(planted_corpus):
    res = run_probe(planted_corpus, ProbeConfig(resamples=200, stride_frames=4, folds=3), progress=False)
    probes, controls = res["probes"], res["controls"]
    assert probes["all"]["auc"] > 0.8
    assert probes["only:brow"]["auc"] > 0.8
    assert probes["without:brow"]["auc"] < 0.58, "no other group carries the cue"
    assert abs(probes["only:head_trans"]["auc"] - 0.5) < 0.05, "a per-clip constant cannot predict hand-overs"
    lo, hi = probes["only:brow"]["ci"]
    assert lo < probes["only:brow"]["auc"] < hi
    for name in ("shuffled", "circular_shift"):
        assert abs(controls[name]["auc"] - 0.5) < 0.05, name
    assert res["n_conversations"] == 16


def test_probe_cli_writes_results(planted_corpus, tmp_path, capsys):
    from faceturn.cli import main

    rc = main(["probe", "--corpus", str(planted_corpus.root), "--out", str(tmp_path), "--no-groups",
               "--set", "resamples=50"])  # fmt: skip
    assert rc == 0
    assert (tmp_path / "probe.json").exists() and "control:circular_shift" in capsys.readouterr().out


def test_a_ci_from_too_few_conversations_carries_a_warning(planted_corpus):
    """16 conversations are enough for the default minimum (10); under a minimum of 20 every CI is flagged, in the
    JSON (per block and in `warnings`) and in the printed table."""
    config = ProbeConfig(resamples=50, stride_frames=8, folds=3)
    res = run_probe(planted_corpus, config, groups=False, progress=False)
    assert res["warnings"] == [] and "⚠" not in format_probe(res)
    res = run_probe(planted_corpus, replace(config, min_conversations=20), groups=False, progress=False)
    assert res["warnings"] == ["too few conversations for a meaningful CI (16 < 20)"]
    assert all(r["warning"] == res["warnings"][0] for r in (res["probes"]["all"], *res["controls"].values()))
    table = format_probe(res)
    assert table.count(" ⚠ |") == 3 and "⚠ too few conversations for a meaningful CI (16 < 20)" in table


def test_probe_rejects_an_empty_split(planted_corpus):
    with pytest.raises(ValueError, match="no conversations in split 'test'"):
        run_probe(planted_corpus, ProbeConfig(split="test"), progress=False)
