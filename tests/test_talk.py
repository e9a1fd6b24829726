"""Step 4: the voice-activity reader recovers what a synthetic corpus's codes determine; a scripted speaker at known
frames gives exactly the expected take-over rates and latencies; face vs zeroed talk is paired over identical frames
and random numbers (a face that changes nothing gives identical talk); floor control holds a gated row silent; the
LM's implicit yield signal equals the forward pass's own semantic distribution; bad input is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from faceturn.cli import main
from faceturn.eval.talk import FORMAT, HOLD, ONSET, SHIFT, Talk, TalkConfig, interlocutor_events, talk
from faceturn.eval.timing import TimingConfig, event_outcomes, timing_metrics
from faceturn.eval.voice import fit_reader, p_silent_next, score_reader
from faceturn.labels import EventConfig, turn_labels
from faceturn.stats import paired_cluster_statistic, weighted_median, weighted_ratio, weighted_wasserstein
from faceturn.stream import MOSHI_SAMPLING, FloorGate, generate, sample_token

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SMALL = ["model.dim=32", "model.num_layers=1", "model.num_heads=2", "model.context=64"]


def _save_run(path, overrides, *, face_blind: bool = False, seed: int = 0):
    """A randomly initialised small model saved as a run (`face_blind`: its face encoding is exactly zero, with or
    without a face)."""
    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config

    train_cfg = load_train_config("aux", [*SMALL, *overrides])
    torch.manual_seed(seed)
    model = from_config(train_cfg.model)
    with torch.no_grad():
        model.yield_head[-1].bias.fill_(-0.5)
        if face_blind:
            model.face_encoder.proj[-1].weight.zero_()
            model.face_encoder.missing.zero_()
    save_checkpoint(path, 0, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(train_cfg), 1)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small synthetic corpus (train, val and test conversations of 20-24 s) and three runs: an aux model, the
    same recipe as a vanilla model (no yield loss), and an aux model whose face encoding is identically zero."""
    from faceturn.synth import generate_corpus, load_preset

    root = tmp_path_factory.mktemp("talk")
    cfg = load_preset("tight", ["floor.duration_min_s=20", "floor.duration_max_s=24", "conversations_per_group=2"])
    generate_corpus(cfg, root / "corpus", 6, seed=2, progress=False)  # three groups: 2 train, 2 val, 2 test
    generate_corpus(cfg, root / "other", 6, seed=4, progress=False)
    return {
        "root": root,
        "corpus": root / "corpus",
        "other": root / "other",
        "aux": _save_run(root / "aux", []),
        "vanilla": _save_run(root / "vanilla", ["loss.yield_weight=0"]),
        "blind": _save_run(root / "blind", [], face_blind=True),
        "mute": _save_run(root / "mute", ["loss.audio_weight=0"]),
    }


# ------------------------------------------------------------------------------------------------- the reader
def test_voice_reader_reads_activity_the_codes_determine(world):
    """The generator writes the semantic codebook's silence vocabulary exactly on unvoiced frames: the reader, fitted
    on the train split, reads the test split's voice activity with accuracy >= 0.95, and its silence classes are
    that vocabulary."""
    reader = fit_reader(world["corpus"])
    scores = score_reader(reader, world["corpus"], "test", n_resamples=100)
    assert scores["accuracy"]["value"] >= 0.95 and scores["auc"]["value"] >= 0.95
    assert scores["accuracy"]["ci"][0] <= scores["accuracy"]["value"] <= scores["accuracy"]["ci"][1]
    n_silence = 16  # presets/tight.toml: audio.n_silence_tokens
    assert set(reader.silence_tokens.tolist()) <= set(range(n_silence)) and reader.silence_tokens.size >= 8
    assert not reader.has_text  # synthetic corpora have no text


# ------------------------------------------------------------------------------------------- scripted timing
def _activity(n: int, runs: list[tuple[int, int]]) -> np.ndarray:
    a = np.zeros(n, bool)
    for s, e in runs:
        a[s:e] = True
    return a


def test_scripted_speaker_gives_exact_take_over_rates_and_latencies():
    labels, cfg = EventConfig(), TimingConfig()
    kinds = np.array([HOLD, SHIFT, SHIFT, HOLD, ONSET, ONSET])
    starts = np.array([100, 200, 300, 400, 500, 600])
    stops = np.array([110, 210, 310, 408, 530, 630])
    # pause at 100-110: starts a 20-frame IPU at 104 (a take-over); shift at 200: starts at 205 (0.40 s); shift at
    # 300: already speaking (not eligible); pause at 400: only a 5-frame backchannel (not a take-over); onset at 500:
    # speaking over it, stops at 512 (0.96 s); onset at 600: silent (not applicable)
    active = _activity(700, [(104, 124), (205, 240), (290, 320), (402, 407), (480, 512)])
    out = event_outcomes(active, kinds, starts, stops, labels, cfg)
    assert out["eligible"].tolist() == [True, True, False, True, True, False]
    assert out["taken"].tolist() == [True, True, False, False, True, False]
    np.testing.assert_allclose(out["latency_s"], [np.nan, 0.40, np.nan, np.nan, 0.96, np.nan])
    # a take-over 25 frames (2 s) after the turn end is too late; 24 frames (1.92 s) is in time
    for onset, taken in ((224, True), (225, False)):
        late = event_outcomes(_activity(300, [(onset, onset + 20)]), np.array([SHIFT]), np.array([200]),
                              np.array([210]), labels, cfg)  # fmt: skip
        assert late["taken"].tolist() == [taken]


def _scripted_talk() -> Talk:
    """Two conversations of 400 frames; participant 1 holds the floor with a pause (frames 150-160, resumed at 160)
    and yields at 250 to participant 0 (who starts at 260). The "model" talks as participant 0: with the face it
    answers the turn end 5 frames after the silence starts; with the face zeroed it takes the pause and answers 15
    frames late. Participant 0's perspective only; participant 1's rows are silent."""
    n = 400
    other = _activity(n, [(40, 150), (160, 250)])
    human = _activity(n, [(260, 400)])
    face, zeroed = _activity(n, [(205 + 50, 300)]), _activity(n, [(152, 170), (265, 300)])
    lab = turn_labels(np.stack([human, other]).astype(np.float32))
    events = [(c, s, *e) for c in range(2) for s in (0, 1) for e in interlocutor_events(lab, s)]
    assert sorted((k, a, b) for c, s, k, a, b in events if c == 0 and s == 0) == [(HOLD, 150, 160), (SHIFT, 250, 260)]
    rows = [(c, s, f) for c in range(2) for s in (0, 1) for f in (True, False)]
    voice = np.stack([(face if f else zeroed) if s == 0 else np.zeros(n, bool) for c, s, f in rows]).astype(np.float32)
    ev = np.asarray(events)
    arrays = {
        "codes": np.zeros((len(rows), 8, n), np.int16), "text": np.full((len(rows), n), -1, np.int32),
        "voice": voice, "p_yield": np.zeros((len(rows), n), np.float32), "held": np.zeros((len(rows), n), bool),
        "row_conversation": np.array([c for c, _, _ in rows], np.int32), "row_self": np.array([s for _, s, _ in rows],
        np.int8), "row_face": np.array([f for _, _, f in rows]), "row_gated": np.zeros(len(rows), bool),
        "row_run": np.zeros(len(rows), np.int16), "row_frames": np.full(len(rows), n, np.int32),
        "corpus_active": np.stack([np.stack([human, other])] * 2), "corpus_floor": np.stack([lab.floor] * 2),
        "conversation_frames": np.full(2, n, np.int32), "event_conversation": ev[:, 0].astype(np.int32),
        "event_self": ev[:, 1].astype(np.int8), "event_kind": ev[:, 2].astype(np.int8),
        "event_start": ev[:, 3].astype(np.int32), "event_stop": ev[:, 4].astype(np.int32),
    }  # fmt: skip
    scripted = {"value": None, "ci": None, "note": "scripted activity, not read"}
    meta = {"format": FORMAT, "labels": json.loads(json.dumps(EventConfig().__dict__)), "conversations": ["a", "b"],
            "runs": [{"sampling": "moshi", "seed": 0}], "split": "test", "corpus": "/nowhere",
            "corpus_fingerprint": "sha256:0", "reader": {"config": {"fit_split": "train"}, "split": "test",
                                                       "accuracy": scripted, "auc": scripted}}  # fmt: skip
    return Talk(arrays=arrays, meta=meta)


def test_scripted_talk_file_gives_exact_paired_rates(tmp_path):
    talk_file = _scripted_talk()
    res = timing_metrics(talk_file, TimingConfig(resamples=50))
    m = res["policies"]["moshi"]["metrics"]
    # the face row answers at frame 255 (5 frames after the silence at 250); the zeroed row takes the pause at 152
    # and answers the turn end at 265 (15 frames)
    assert m["pause_takeover_rate"]["value"] == {"face": 0.0, "zeroed": 1.0}
    assert m["pause_takeover_rate"]["delta"] == -1.0 and m["pause_takeover_rate"]["delta_ci"] == [-1.0, -1.0]
    assert m["shift_takeover_rate"]["value"] == {"face": 1.0, "zeroed": 1.0}
    assert m["response_latency_median_s"]["value"] == pytest.approx({"face": 0.40, "zeroed": 1.20})
    assert m["takeover_margin"]["value"] == pytest.approx({"face": 1.0, "zeroed": 0.0})
    # the recording's self answered at 260: 0.80 s
    assert res["corpus_reference"]["response_latency_median_s"]["value"]["corpus"] == pytest.approx(0.80)
    assert m["response_latency_vs_corpus_s"]["value"] == pytest.approx({"face": -0.40, "zeroed": 0.40})
    assert m["response_latency_wasserstein_s"]["value"] == pytest.approx({"face": 0.40, "zeroed": 0.40})
    assert res["corpus_reference"]["pause_takeover_rate"]["value"]["corpus"] == 0.0
    assert res["policies"]["moshi"]["events"]["face"]["hold"] == {"events": 2, "eligible": 2}  # participant 1 pauses
    # the same file through save and load, and through the command
    talk_file.save(tmp_path / "t.npz")
    assert Talk.load(tmp_path / "t.npz").arrays["voice"].tolist() == talk_file.arrays["voice"].tolist()
    assert main(["timing", "--talk", str(tmp_path / "t.npz"), "--out", str(tmp_path / "r"), "--set",
                 "resamples=50"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "r" / "timing.json").read_text())["policies"]["moshi"]["metrics"][
        "pause_takeover_rate"]["value"] == {"face": 0.0, "zeroed": 1.0}  # fmt: skip


def test_weighted_statistics_equal_their_references():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(1.0, 2.0, size=40)
    a[::7] = np.nan
    w = rng.integers(0, 4, size=(3, 40)).astype(float)
    for row in w:
        ok_a, ok_b = np.isfinite(a) & (row > 0), row > 0
        ref = wasserstein_distance(a[ok_a], b[ok_b], row[ok_a], row[ok_b])
        assert weighted_wasserstein(row[None], a, b)[0] == pytest.approx(ref)
        expanded = np.sort(np.repeat(a[ok_a], row[ok_a].astype(int)))
        assert weighted_median(row[None], a)[0] == expanded[(expanded.size - 1) // 2]  # the lower median
        assert weighted_ratio(row[None], b, np.ones(40))[0] == pytest.approx(np.average(b, weights=row))
    clusters = np.repeat(np.arange(8), 5)
    same = paired_cluster_statistic(weighted_median, {"face": (b,), "zeroed": (b.copy(),)}, clusters, n_resamples=200)
    assert same["delta"] == 0.0 and same["delta_ci"] == [0.0, 0.0] and same["n_clusters"] == 8


# ----------------------------------------------------------------------------------------------------- talking
def test_sample_token_pairs_rows_and_draws_the_softmax():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).repeat(20000, 1)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    drawn = sample_token(logits, 1.0, 0, uniforms=u)
    np.testing.assert_allclose(np.bincount(drawn.numpy(), minlength=4) / 20000, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    paired = sample_token(logits[:64], 0.8, 3, uniforms=u[:8].repeat(8))  # rows i and i + 8 share their number
    assert torch.equal(paired[:8].repeat(8), paired) and set(paired.tolist()) <= {1, 2, 3}
    masked = logits.clone()
    masked[:, 3] = float("-inf")
    assert (sample_token(masked, 1.0, 0, uniforms=u) != 3).all()


def test_face_vs_zeroed_talk_uses_identical_frames_and_random_numbers(world, tmp_path):
    """A model whose face encoding is zero talks identically with the face and zeroed (same frames, same draws), so
    every face-vs-zeroed difference is exactly 0; the same talk is reproduced by its seed, another seed differs."""
    cfg = TalkConfig(seeds=(0, 1), greedy=True, max_seconds=8.0, resamples=50, batch_size=3)
    blind = talk(world["blind"], world["corpus"], "test", cfg, progress=False)
    a = blind.arrays
    face, zeroed = a["row_face"], ~a["row_face"]
    key = np.stack([a["row_run"], a["row_conversation"], a["row_self"]], axis=1)
    assert (key[face] == key[zeroed]).all() and (a["row_frames"][face] == a["row_frames"][zeroed]).all()
    assert np.array_equal(a["codes"][face], a["codes"][zeroed]) and np.array_equal(a["voice"][face], a["voice"][zeroed])
    assert not np.array_equal(a["codes"][face & (a["row_run"] == 1)], a["codes"][face & (a["row_run"] == 2)])
    res = timing_metrics(blind, TimingConfig(resamples=50))
    for policy in res["policies"].values():
        for name, m in policy["metrics"].items():
            if m.get("delta") is not None:
                assert m["delta"] == 0.0 and m["delta_ci"] == [0.0, 0.0], name
    one = TalkConfig(seeds=(0,), greedy=False, max_seconds=8.0, resamples=50)
    again = talk(world["blind"], world["corpus"], "test", one, progress=False)

    def by_row(t: Talk, run: int) -> np.ndarray:
        x = t.arrays
        sel = np.flatnonzero(x["row_run"] == run)
        return x["codes"][sel[np.lexsort((x["row_self"][sel], x["row_conversation"][sel], x["row_face"][sel]))]]

    assert np.array_equal(by_row(again, 0), by_row(blind, 1))  # a seed is its talk, whatever the batching or runs
    # a model that sees the face: paired rows over the same frames and events, and the talk differs
    seeing = talk(world["aux"], world["corpus"], "test", one, progress=False)
    s = seeing.arrays
    assert np.array_equal(s["row_frames"][s["row_face"]], s["row_frames"][~s["row_face"]])
    assert not np.array_equal(s["codes"][s["row_face"]], s["codes"][~s["row_face"]])


def test_floor_gate_holds_a_gated_row_silent_while_the_interlocutor_holds_the_floor():
    from faceturn.model import ModelConfig, from_config

    torch.manual_seed(0)
    model = from_config(ModelConfig(dim=32, num_layers=1, num_heads=2, context=32, card=32, text_card=24,
                                    depformer_dim=16, depformer_num_heads=2, depformer_dim_feedforward=48,
                                    face_hidden=16, yield_hidden=16)).eval()  # fmt: skip
    b, t = 4, 60
    other = torch.randint(0, 32, (b, 8, t))
    other_active = torch.zeros(b, t, dtype=torch.bool)
    other_active[:, 5:40] = True  # the interlocutor speaks from frame 5 to 39: it holds the floor from then on
    silence = torch.arange(8)  # tokens 0-7 are "silence" for this test
    theta = torch.tensor([float("nan"), float("nan"), 2.0, 2.0])  # rows 2, 3: P(yield) never reaches θ
    gate = FloorGate(theta, other_active, silence)
    uniforms = torch.rand(2, t + 1, 9, generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1)
    gen = generate(model, other, torch.zeros(b, t, 61), torch.zeros(b, t), MOSHI_SAMPLING, text=False,
                   uniforms=uniforms, gate=gate)  # fmt: skip
    semantic = gen.codes[:, 0]
    speaking = ~torch.isin(semantic, silence)
    assert speaking[:2].any()  # the ungated rows talk
    held = gate.held
    assert not held[:2].any() and held[2:].any()
    for r in (2, 3):  # once the interlocutor has spoken and the row was silent, it stays silent
        first_other = 5
        silent_from = next(k for k in range(first_other + 1, t) if not speaking[r, k - 1])
        assert not speaking[r, silent_from:].any(), r
        assert held[r, silent_from:].all()


# --------------------------------------------------------------------------------------------- implicit signal
def test_implicit_signal_is_the_forward_pass_semantic_distribution(world):
    from faceturn.checkpoint import load_model
    from faceturn.data import WindowDataset

    model, train_cfg = load_model(world["aux"])
    ds = WindowDataset(world["corpus"], "test", 40, event_config=train_cfg.labels)
    batch = ds.batch([(0, 0, 0, False), (0, 1, 10, False)])
    with torch.no_grad():
        out = model(*batch.model_inputs())
    silence = np.arange(16)
    p = p_silent_next(model, out.hidden[:, :-1].reshape(-1, out.hidden.shape[-1]), silence, None)
    ref = torch.softmax(out.audio_logits[:, 0, 1:].float(), -1)[..., :16].sum(-1).reshape(-1)  # frame k + 1
    np.testing.assert_allclose(p["audio"], ref.numpy(), atol=1e-5)
    assert p["text"] is None


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_by_name(world, tmp_path, capsys):
    out = tmp_path / "t.npz"
    args = ["talk", "--corpus", str(world["corpus"]), "--out", str(out), "--set", "seeds=[0]", "--set",
            "greedy=false", "--set", "resamples=50", "--set", "max_seconds=10", "--no-progress"]  # fmt: skip
    assert main([*args, "--run", str(world["vanilla"]), "--gate"]) == 2
    err = capsys.readouterr().err
    assert "--gate needs a trained yield head" in err and "yield_weight = 0" in err and err.count("\n") == 1
    assert main([*args, "--run", str(world["mute"])]) == 2
    assert "audio_weight = 0" in capsys.readouterr().err
    assert main([*args, "--run", str(world["aux"]), "--set", "seeds=[1,1]"]) == 2
    assert "distinct" in capsys.readouterr().err
    assert main([*args, "--run", str(world["aux"]), "--gate"]) == 0
    capsys.readouterr()
    talk_file = Talk.load(out)
    assert talk_file.meta["gate"]["split"] == "val" and talk_file.arrays["row_gated"].any()
    for bad, message in ((["--corpus", str(world["other"])], "a different corpus"),
                         (["--split", "val"], "made for split 'test', not 'val'")):  # fmt: skip
        assert main(["timing", "--talk", str(out), *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["timing", "--talk", str(out), "--corpus", str(world["corpus"]), "--split", "test", "--set",
                 "resamples=50"]) == 0  # fmt: skip
    capsys.readouterr()
    # a prediction file is not a talk file, and a damaged talk file is named
    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    assert main(["timing", "--talk", str(tmp_path / "bad.npz")]) == 2
    assert "bad.npz" in capsys.readouterr().err
    # another talk in the place of an earlier one needs --force
    assert main([*args, "--run", str(world["blind"])]) == 2
    assert "pass --force" in capsys.readouterr().err
