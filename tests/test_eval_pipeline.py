"""predict → evaluate / analyze on a tiny trained model: file contract, coverage, statistics wiring, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceturn.cli import main
from faceturn.errors import FaceturnError
from faceturn.eval.analyze import AnalyzeConfig, analyze
from faceturn.eval.evaluate import check_predictions, evaluate_predictions, format_results, frame_metrics
from faceturn.eval.predict import Predictions, predict, predict_zero_sets, window_starts
from faceturn.labels import turn_labels
from faceturn.recipe import load_train_config
from faceturn.stats import roc_auc
from faceturn.store import Corpus
from faceturn.synth import generate_corpus, load_preset
from faceturn.train import train
from faceturn.viz.figures import load_timeline


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_pipeline")
    corpus = root / "corpus"
    cfg = load_preset("tight", ["floor.duration_min_s=50.0", "floor.duration_max_s=70.0"])
    generate_corpus(cfg, corpus, n_conversations=30, seed=2, progress=False)
    train_cfg = load_train_config(
        "aux",
        ["optim.max_steps=4", "optim.warmup_steps=1", "data.window_s=8.0", "data.batch_size=4", "eval_every_steps=0",
         "checkpoint_every_steps=0", "progress=false"],
    )  # fmt: skip
    train(train_cfg, corpus, root / "run")
    split = max(("val", "test"), key=lambda s: len(Corpus(corpus).ids(s)))
    return corpus, root / "run", split


@pytest.fixture(scope="module")
def predictions(trained):
    corpus, run, split = trained
    return predict(run, corpus, split, batch_size=8, hidden=True, progress=False)


def test_window_tiling_keeps_every_frame_once():
    for n, w in [(5, 10), (10, 10), (11, 10), (95, 20), (100, 20), (31, 20)]:
        starts = window_starts(n, w)
        kept = []
        for i, (start, keep) in enumerate(starts):
            stop = starts[i + 1][1] if i + 1 < len(starts) else n
            assert start <= keep and stop <= start + w
            kept += range(keep, stop)
        assert kept == list(range(n)), (n, w)


def test_predictions_cover_every_frame_and_match_the_labels(trained, predictions):
    corpus, _, split = trained
    store = Corpus(corpus)
    pred = predictions
    assert pred.meta["conversations"] == store.ids(split)
    assert ((pred.p_face >= 0) & (pred.p_face <= 1)).all() and np.isfinite(pred.p_zeroed).all()
    assert pred.hidden_face.shape == (pred.p_face.size, 64)
    for ci, conv_id in enumerate(pred.meta["conversations"]):
        conv = store.load(conv_id)
        lab = turn_labels(np.asarray(conv.va, np.float32))
        for s in (0, 1):
            rows = (pred.conversation == ci) & (pred.perspective == s)
            assert np.array_equal(np.sort(pred.frame[rows]), np.arange(conv.n_frames))
            order = np.argsort(pred.frame[rows])
            assert np.array_equal(pred.y[rows][order], lab.y) and np.array_equal(pred.m[rows][order], lab.m)
            assert np.array_equal(pred.holder[rows][order], lab.floor_relative(s))
    assert pred.meta["zero_groups"] == ["head_trans"]
    assert pred.meta["yield_weight"] == pred.meta["train_config"]["loss"]["yield_weight"] > 0


def test_round_trip_and_evaluate(tmp_path, trained, predictions):
    corpus, _, split = trained
    path = tmp_path / "pred.npz"
    predictions.save(path)
    pred = Predictions.load(path)
    check_predictions(pred, corpus=corpus, split=split)
    res = evaluate_predictions(pred, n_resamples=200)
    scored = pred.m.astype(bool)
    block = res["frames"]["all"]
    assert block["auc"]["face"] == pytest.approx(roc_auc(pred.y[scored], pred.p_face[scored]), abs=1e-12)
    assert block["delta"] == pytest.approx(block["auc"]["face"] - block["auc"]["zeroed"], abs=1e-12)
    assert block["n_clusters"] == len(pred.meta["conversations"])
    assert res["frames"]["self_holds"]["n_frames"] + res["frames"]["interlocutor_holds"]["n_frames"] == scored.sum()
    assert "shift_hold" in res["events"] and "shift_prediction" in res["events"]
    # CIs from fewer conversations than the minimum say they are not meaningful, in the JSON and the table
    n = block["n_clusters"]
    flagged = evaluate_predictions(pred, n_resamples=50, min_conversations=n + 1)
    assert flagged["warnings"][0] == f"too few conversations for a meaningful CI ({n} < {n + 1})"
    assert flagged["frames"]["all"]["warning"] == flagged["warnings"][0] and "⚠" in format_results(flagged)
    unflagged = evaluate_predictions(pred, n_resamples=50, min_conversations=n)
    assert "warning" not in unflagged["frames"]["all"]  # events from fewer conversations keep theirs
    out = tmp_path / "eval"
    assert main(["evaluate", "--pred", str(path), "--corpus", str(corpus), "--split", split, "--out", str(out),
                 "--resamples", "100"]) == 0  # fmt: skip
    assert json.loads((out / "results.json").read_text())["predictions"]["split"] == split


def test_evaluate_refuses_mismatched_or_broken_predictions(tmp_path, trained, predictions, capsys):
    corpus, _, split = trained
    other = "train" if split != "train" else "val"
    with pytest.raises(ValueError, match=f"for split '{split}', not '{other}'"):
        check_predictions(predictions, corpus=corpus, split=other)
    with pytest.raises(ValueError, match="manifest not found"):  # not a corpus: nothing to pair the file with
        check_predictions(predictions, corpus=tmp_path, split=split)
    first = predictions.conversation == 0
    partial = Predictions(meta=predictions.meta, **{k: getattr(predictions, k)[~first] for k in (
        "p_face", "p_zeroed", "y", "m", "holder", "conversation", "perspective", "frame")})  # fmt: skip
    with pytest.raises(ValueError, match="lack 1 conversations"):
        check_predictions(partial, corpus=corpus, split=split)
    nan = Predictions(**{**predictions.__dict__, "p_face": predictions.p_face.copy()})
    nan.p_face[3] = np.nan
    nan.save(tmp_path / "nan.npz")
    assert main(["evaluate", "--pred", str(tmp_path / "nan.npz")]) == 2
    assert "non-finite values in p_face" in capsys.readouterr().err
    no_pos = Predictions(**{**predictions.__dict__, "y": np.zeros_like(predictions.y)})
    with pytest.raises(ValueError, match="no scored frames with both classes"):
        frame_metrics(no_pos)


def test_analyze_reports_every_figure_with_a_ci(trained):
    corpus, run, split = trained
    res = analyze(run, corpus, AnalyzeConfig(split=split, max_windows=16, resamples=100))
    for key in ("delta_nll_semantic", "delta_nll_acoustic", "kl_semantic"):
        v = res["prediction_change"][key]
        assert np.isfinite(v["value"]) and v["ci"][0] <= v["ci"][1]
    assert res["prediction_change"]["kl_semantic"]["value"] >= 0
    assert set(res["hidden_probe"]["auc"]) == {"face", "zeroed"}
    assert res["readout_gain_ratio"]["audio"]["value"] > 0 and "text" not in res["readout_gain_ratio"]


def test_no_zeroed_predictions_serve_attribution_but_not_evaluate(tmp_path, trained, predictions, capsys):
    """`predict --no-zeroed` skips the face-zeroed pass: P(yield) with the face is the same, the file round-trips
    without p_zeroed, and everything that needs the zeroed condition refuses it by name."""
    corpus, run, split = trained
    out = tmp_path / "face-only.npz"
    assert main(["predict", "--run", str(run), "--corpus", str(corpus), "--split", split, "--out", str(out),
                 "--no-zeroed", "--batch-size", "8"]) == 0  # fmt: skip
    pred = Predictions.load(out)
    assert pred.p_zeroed is None and pred.meta["zeroed"] is False
    np.testing.assert_allclose(pred.p_face, predictions.p_face, rtol=0, atol=1e-6)
    assert np.array_equal(pred.y, predictions.y) and np.array_equal(pred.frame, predictions.frame)
    assert main(["evaluate", "--pred", str(out)]) == 2
    assert "written with --no-zeroed" in capsys.readouterr().err
    with pytest.raises(ValueError, match="the timeline needs P\\(yield\\) with the face zeroed"):
        load_timeline(pred, pred.meta["conversations"][0])
    with np.load(out) as z:  # a header that claims p_zeroed while the array is missing is refused
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop("meta")).decode())
    meta["zeroed"] = True
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "lying.npz", **arrays)
    with pytest.raises(ValueError, match="disagree on whether p_zeroed was written"):
        Predictions.load(tmp_path / "lying.npz")


def test_posthoc_zero_sets_are_forward_arguments_with_typed_headers(tmp_path, trained, predictions):
    """Post-hoc zero sets are arguments of the forward pass: the trained set reproduces `predict` exactly, every
    header holds sorted lists of group names (valid only for the trained set), and a header whose zero set is text
    instead of such a list is refused."""
    corpus, run, split = trained
    same, extra = predict_zero_sets(
        run, corpus, split, [[], ["eye_gaze", "brow"]], batch_size=8, progress=False, zeroed=False
    )
    assert np.array_equal(same.p_face, predictions.p_face)
    assert same.meta["eval_zero_groups"] == same.meta["zero_groups"] == ["head_trans"] and same.meta["valid"]
    assert extra.meta["eval_zero_groups"] == ["brow", "eye_gaze", "head_trans"] and not extra.meta["valid"]
    assert not np.array_equal(extra.p_face, same.p_face)
    extra.save(tmp_path / "extra.npz")
    assert Predictions.load(tmp_path / "extra.npz").meta["eval_zero_groups"] == ["brow", "eye_gaze", "head_trans"]
    text = Predictions(**{**extra.__dict__, "meta": {**extra.meta, "eval_zero_groups": "brow,eye_gaze,head_trans"}})
    text.save(tmp_path / "text.npz")
    with pytest.raises(FaceturnError, match="eval_zero_groups must be a list of face group names"):
        Predictions.load(tmp_path / "text.npz")
