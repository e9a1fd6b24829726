"""Streaming: frame-by-frame P(yield) and generation equal the full-sequence forward, past the context; batched rows
are independent; zero_groups hold; bad input is refused; alerts and their scores; the `faceturn stream` command."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from test_model import make_inputs, make_model  # the tiny-model helpers of the model's own tests

from faceturn.model import ModelConfig
from faceturn.schema import FACE_GROUPS, N_FACE
from faceturn.stream import AlertTrigger, Sampling, TurnYieldStream, generate, sample_token, score_alerts

CFG = ModelConfig(
    dim=32, num_layers=2, num_heads=2, context=16, card=16, text_card=24, depformer_dim=16, depformer_num_layers=1,
    depformer_num_heads=2, depformer_dim_feedforward=48, face_hidden=16, yield_hidden=16,
)  # fmt: skip
ATOL = 1e-5  # fp32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def listen(stream: TurnYieldStream, x: dict[str, torch.Tensor], logits: bool = True) -> torch.Tensor:
    """Every frame of x through step_batch → [B, T]."""
    out = []
    for k in range(x["text"].shape[1]):
        frame = [x["self_codes"][:, :, k], x["other_codes"][:, :, k], x["face"][:, k], x["face_present"][:, k]]
        out.append(stream.step_batch(*frame, x["text"][:, k], logits=logits))
    return torch.stack(out, dim=1)


# ---------------------------------------------------------------------------------------- equality with forward
def test_listening_equals_forward_for_500_frames_past_the_context():
    model = make_model(CFG)
    x = make_inputs(CFG, B=2, T=500)
    x["face"][0, 100:130] = float("nan")  # absent faces may hold anything
    x["face_present"][0, 100:130] = False
    with torch.no_grad():
        expected = model(**x, audio=False).yield_logits
    stream = TurnYieldStream(model, batch_size=2)
    got = listen(stream, x)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)
    assert stream.frames.tolist() == [500, 500]
    for cache in stream._caches:  # bounded by the context; positions count on past it
        assert cache.keys.shape[2] == CFG.context and int(cache.positions.max()) == 500
    # Probabilities, and the single-conversation API, give the same numbers.
    one = TurnYieldStream(model)
    p = [one.step(x["self_codes"][1, :, k], x["other_codes"][1, :, k], x["face"][1, k], bool(x["face_present"][1, k]),
                  int(x["text"][1, k])) for k in range(40)]  # fmt: skip
    torch.testing.assert_close(torch.tensor(p), torch.sigmoid(expected[1, :40]), rtol=0, atol=ATOL)


def test_generation_logits_equal_forward_for_500_frames_past_the_context():
    """Sampled talking: the forward pass teacher-forced on what was drawn reproduces every logit it was drawn from."""
    model = make_model(CFG)
    x = make_inputs(CFG, B=2, T=500, seed=1)
    g = torch.Generator().manual_seed(3)
    sampling = Sampling(audio_temperature=1.0, audio_top_k=12, text_temperature=1.0)
    gen = generate(model, x["other_codes"], x["face"], x["face_present"], sampling, generator=g, keep_logits=True)
    assert gen.codes.shape == (2, 8, 500) and gen.text.shape == (2, 500)
    assert gen.codes.min() >= 0 and gen.codes.max() < CFG.card and gen.text.min() >= 0  # every frame complete
    assert len(torch.unique(gen.codes[0, 3])) > 8  # really sampled, not a constant sequence
    with torch.no_grad():
        out = model(gen.text, gen.codes, x["other_codes"], x["face"], x["face_present"])
    torch.testing.assert_close(gen.text_logits, out.text_logits, rtol=0, atol=ATOL)
    mask = out.audio_mask  # the last frame's acoustic codebooks have no position in a T-frame forward
    assert mask[:, 0].all() and not mask[:, 1:, -1].any() and mask[:, 1:, :-1].all()
    torch.testing.assert_close(gen.audio_logits[mask], out.audio_logits[mask], rtol=0, atol=ATOL)
    torch.testing.assert_close(gen.p_yield, torch.sigmoid(out.yield_logits), rtol=0, atol=ATOL)
    # top-k: nothing outside the k largest logits was ever drawn
    rank = (gen.audio_logits > gen.audio_logits.gather(-1, gen.codes[..., None])).sum(-1)
    assert rank.max() < 12


def test_greedy_generation_is_the_argmax_of_forward_and_text_can_be_off():
    model = make_model(CFG, seed=4)
    x = make_inputs(CFG, B=2, T=40, seed=2)
    gen = generate(model, x["other_codes"], x["face"], x["face_present"], text=False, keep_logits=True)
    assert (gen.text == -1).all() and gen.text_logits is None
    with torch.no_grad():
        out = model(gen.text, gen.codes, x["other_codes"], x["face"], x["face_present"])
    mask = out.audio_mask
    torch.testing.assert_close(gen.audio_logits[mask], out.audio_logits[mask], rtol=0, atol=ATOL)
    assert torch.equal(gen.codes[mask], out.audio_logits.argmax(-1)[mask])
    again = generate(model, x["other_codes"], x["face"], x["face_present"], text=False)
    assert torch.equal(again.codes, gen.codes)  # greedy is deterministic
    # generate_step reports the newest complete frame (Moshi: k - 1), as generate assembled it.
    stream = TurnYieldStream(model, batch_size=2)
    for k in range(6):
        step = stream.generate_step(x["other_codes"][:, :, k], x["face"][:, k], x["face_present"][:, k], text=False)
        assert step.frame.tolist() == [k, k]
        if k == 0:
            assert (step.codes == -1).all()
        else:
            assert torch.equal(step.codes, gen.codes[:, :, k - 1])
        assert torch.equal(step.drawn[:, 1], gen.codes[:, 0, k])  # semantic of frame k, drawn at frame k


def test_sample_token_greedy_and_top_k():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    assert (sample_token(logits, 0.0, 0) == 1).all()
    drawn = sample_token(logits, 1.0, 2, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 3}  # only the two largest, both drawn
    with pytest.raises(ValueError, match="audio_temperature"):
        Sampling(audio_temperature=-1.0)


def test_batched_rows_start_at_different_times():
    """Rows are independent conversations with their own positions: a row reset mid-way equals a fresh stream."""
    model = make_model(CFG, seed=1)
    x = make_inputs(CFG, B=3, T=60, seed=5)
    stream = TurnYieldStream(model, batch_size=3)
    got = []
    for k in range(60):
        if k == 23:
            stream.reset([1])
        got.append(stream.step_batch(x["self_codes"][:, :, k], x["other_codes"][:, :, k], x["face"][:, k],
                                     x["face_present"][:, k], x["text"][:, k], logits=True))  # fmt: skip
    got = torch.stack(got, dim=1)
    assert stream.frames.tolist() == [60, 37, 60]
    with torch.no_grad():
        full = model(**x, audio=False).yield_logits
        later = {name: value[1:2, ..., 23:] for name, value in x.items() if name != "face"}
        restarted = model(**later, face=x["face"][1:2, 23:], audio=False).yield_logits
    torch.testing.assert_close(got[[0, 2]], full[[0, 2]], rtol=0, atol=ATOL)
    torch.testing.assert_close(got[1, 23:], restarted[0], rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match=r"rows must be indices in \[0, 3\)"):
        stream.reset([3])


def test_zero_groups_are_honoured():
    model = make_model(dataclasses.replace(CFG, zero_groups=("head_trans", "eye_gaze")))
    x = make_inputs(CFG, B=1, T=20, seed=6)
    base = listen(TurnYieldStream(model), x)
    varied = dict(x, face=x["face"].clone())
    varied["face"][..., list(FACE_GROUPS["eye_gaze"])] = 50 * torch.randn(1, 20, len(FACE_GROUPS["eye_gaze"]))
    assert torch.equal(listen(TurnYieldStream(model), varied), base)
    kept = dict(x, face=x["face"].clone())
    kept["face"][..., list(FACE_GROUPS["head_rot"])] += 1.0
    assert not torch.equal(listen(TurnYieldStream(model), kept), base)


# ------------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_a_clear_error_and_never_nan():
    model = make_model(CFG)
    stream = TurnYieldStream(model)
    codes, face = torch.zeros(8, dtype=torch.long), torch.zeros(N_FACE)
    cases = [
        ((torch.zeros(7, dtype=torch.long), codes, face, True), r"self_codes has shape \(1, 7\), expected \[1, 8\]"),
        ((codes, torch.full((8,), 16), face, True), r"other_codes values must lie in \[-1, 16\)"),
        ((codes, torch.full((8,), -2), face, True), r"other_codes values must lie in \[-1, 16\)"),
        ((codes.float(), codes, face, True), "self_codes must hold integer tokens"),
        ((codes, codes, torch.zeros(60), True), r"other_face must be floats of shape \[1, 61\]"),
        ((codes, codes, torch.full((N_FACE,), float("nan")), True), "NaN or infinite values where face_present"),
        ((codes, codes, face, 2), "face_present must be 0/1 or bool"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            stream.step(*args)
    with pytest.raises(ValueError, match=r"text values must lie in \[-1, 24\)"):
        stream.step(codes, codes, face, True, text=24)
    assert stream.frames.tolist() == [0]  # refused frames are not consumed
    p = stream.step(codes, codes, torch.full((N_FACE,), float("nan")), False)  # absent: the values are not read
    assert 0.0 < p < 1.0
    with pytest.raises(ValueError, match="use step_batch"):
        TurnYieldStream(model, batch_size=2).step(codes, codes, face, True)
    with torch.no_grad():
        model.yield_head[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite P\\(yield\\)"):
        TurnYieldStream(model).step(codes, codes, face, True)


# --------------------------------------------------------------------------------------------------------- alerts
def test_alert_trigger_hysteresis():
    trigger = AlertTrigger(threshold=0.5, hysteresis=0.1)
    ps = [0.1, 0.5, 0.6, 0.45, 0.55, 0.39, 0.41, 0.7, 0.2, 0.9]
    assert [trigger.update(p) for p in ps] == [False, True, False, False, False, False, False, True, False, True]
    for threshold, hysteresis in ((0.0, 0.0), (1.0, 0.1), (0.5, 0.5), (0.5, -0.1)):
        with pytest.raises(ValueError, match="threshold|hysteresis"):
            AlertTrigger(threshold, hysteresis)


def test_score_alerts():
    # horizon 13: an alert at a announces hand-overs in (a, a + 13]
    score = score_alerts(alert_frames=[5, 10, 30, 95, 99], handover_frames=[15, 50, 100, 200], horizon_frames=13)
    assert (score.n_handovers, score.n_announced, score.n_alerts, score.n_false) == (4, 2, 5, 1)  # 30 is false
    assert score.leads_s == pytest.approx((10 * 0.08, 5 * 0.08))  # 15 by 5 and 100 by 95 (the first ones)
    assert score.handover_leads_s == pytest.approx((10 * 0.08, None, 5 * 0.08, None))  # per hand-over
    assert score.median_lead_s == pytest.approx(7.5 * 0.08)
    assert score_alerts([13], [13, 26], 13).n_announced == 1  # an alert on the hand-over frame is too late for it
    empty = score_alerts([], [], 13)
    assert empty.median_lead_s is None and empty.n_false == 0


# ------------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def run_and_corpus(tmp_path_factory):
    """A randomly initialised tiny model saved as a run, and a two-conversation synthetic corpus."""
    from faceturn.checkpoint import save_checkpoint
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config
    from faceturn.synth import generate_corpus, load_preset

    root = tmp_path_factory.mktemp("stream")
    corpus = root / "corpus"
    cfg = load_preset("tight", ["floor.duration_min_s=20", "floor.duration_max_s=24", "conversations_per_group=1"])
    generate_corpus(cfg, corpus, 2, seed=5, progress=False)
    train_cfg = load_train_config(
        "aux", ["model.dim=32", "model.num_layers=1", "model.num_heads=2", "model.context=40"]
    )
    torch.manual_seed(0)
    model = from_config(train_cfg.model)
    with torch.no_grad():
        model.yield_head[-1].bias.fill_(-0.2)  # P(yield) around 0.45: some frames cross 0.5, most do not
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(root / "run", 0, model, optimizer, {}, resolved_config(train_cfg), keep_last=1)
    return root / "run", corpus


def test_stream_command_reports_what_the_forward_pass_implies(run_and_corpus, capsys):
    from faceturn.checkpoint import load_model
    from faceturn.cli import main
    from faceturn.labels import turn_labels
    from faceturn.store import Corpus

    run, corpus = run_and_corpus
    conv_id = Corpus(corpus).ids()[0]
    assert main(["stream", "--run", str(run), "--corpus", str(corpus), "--conversation", conv_id, "--self", "1",
                 "--threshold", "0.5", "--hysteresis", "0.02", "--threads", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()

    # The same numbers from the full-sequence forward, the alert rule and the scorer.
    model, train_cfg = load_model(run)
    conv = Corpus(corpus).load(conv_id)
    with torch.no_grad():
        p = torch.sigmoid(model(
            torch.from_numpy(np.array(conv.text[1:2], dtype=np.int64)),
            torch.from_numpy(np.array(conv.codes[1:2], dtype=np.int64)),
            torch.from_numpy(np.array(conv.codes[0:1], dtype=np.int64)),
            torch.from_numpy(np.array(conv.face[0:1], dtype=np.float32)),
            torch.from_numpy(np.array(conv.face_present[0:1], dtype=bool)),
            audio=False,
        ).yield_logits[0])  # fmt: skip
    trigger = AlertTrigger(0.5, 0.02)
    alerts = [k for k, pk in enumerate(p.tolist()) if trigger.update(pk)]
    labels = turn_labels(np.asarray(conv.va, dtype=np.float32), train_cfg.labels)
    score = score_alerts(alerts, labels.shift_frames, train_cfg.labels.horizon_frames)
    assert 0 < score.n_alerts < conv.n_frames // 4 and score.n_handovers > 0  # the fixture crosses the threshold
    assert sum("ALERT" in line for line in out) == score.n_alerts
    assert sum("hand-over:" in line for line in out) == score.n_handovers
    assert any(line.startswith(f"hand-overs: {score.n_handovers} real, {score.n_announced} announced") for line in out)
    assert f"alerts: {score.n_alerts}, {score.n_false} false (no hand-over within 1 s)" in out
    if score.median_lead_s is not None:
        assert f"median lead {score.median_lead_s:.2f} s" in out[-3]


def test_stream_command_realtime_pacing_and_bad_input(run_and_corpus, capsys):
    from faceturn.cli import main
    from faceturn.store import Corpus

    run, corpus = run_and_corpus
    conv_id = Corpus(corpus).ids()[0]
    start = time.perf_counter()
    assert main(["stream", "--run", str(run), "--corpus", str(corpus), "--conversation", conv_id, "--realtime",
                 "--seconds", "0.5", "--no-progress", "--threads", "1"]) == 0  # fmt: skip
    assert time.perf_counter() - start >= 7 * 0.08  # 0.5 s = 7 frames, each played no earlier than its end
    assert "stream:" not in capsys.readouterr().out  # --no-progress: the summary only
    assert main(["stream", "--run", str(run), "--corpus", str(corpus), "--conversation", "nope"]) == 2
    assert "no conversation 'nope'" in capsys.readouterr().err
    assert main(["stream", "--run", str(run), "--corpus", str(corpus), "--conversation", conv_id,
                 "--threshold", "0.3", "--hysteresis", "0.4"]) == 2  # fmt: skip
    assert "hysteresis must lie in [0, threshold=0.3)" in capsys.readouterr().err


def test_stream_says_when_the_run_was_trained_on_another_corpus(run_and_corpus, tmp_path, capsys):
    """Replaying a model on another corpus is legitimate (it is not refused), but the run's own corpus is named."""
    import hashlib
    import json
    import shutil

    from faceturn.cli import main
    from faceturn.store import Corpus

    run, corpus = run_and_corpus
    conv_id = Corpus(corpus).ids()[0]
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = ["stream", "--run", str(copy), "--corpus", str(corpus), "--conversation", conv_id, "--seconds", "0.5",
            "--no-progress", "--threads", "1"]  # fmt: skip
    (copy / "config.json").write_text(json.dumps({"corpus": {"path": "/data/tight", "fingerprint": "sha256:00"}}))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"note: {copy} was trained on corpus /data/tight, not on {corpus}" in err
    own = {"path": str(corpus.resolve()), "fingerprint": "sha256:" + hashlib.sha256(
        (corpus / "manifest.jsonl").read_bytes()).hexdigest()}  # fmt: skip
    (copy / "config.json").write_text(json.dumps({"corpus": own}))
    assert main(args) == 0
    assert "trained on corpus" not in capsys.readouterr().err
