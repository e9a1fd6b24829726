"""faceturn.stats: AUC equals scikit-learn, the fast bootstrap equals a brute-force one, controls, DeLong."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import roc_auc_score, roc_curve

from faceturn import stats
from faceturn.stats import (
    balanced_accuracy_at,
    best_threshold,
    circular_shift_labels,
    delong_test,
    frame_bootstrap,
    paired_cluster_bootstrap,
    paired_delta_over_seeds,
    roc_auc,
    shuffled_labels,
)


def _clustered(seed: int, n_clusters: int = 12, n_frames: int = 400, n_levels: int = 7):
    """Small clustered data with heavy ties; some conversations have no positives."""
    rng = np.random.default_rng(seed)
    clusters = np.sort(rng.integers(0, n_clusters, n_frames))
    y = rng.random(n_frames) < np.where(clusters % 4 == 0, 0.0, 0.3)
    y[:2] = [True, False] if clusters[0] % 4 else y[:2]
    y[-1], y[-2] = True, False
    base = clusters * 0.1 + y
    face = np.round(base + rng.normal(0, 1.0, n_frames), 1) % n_levels
    zeroed = np.round(base * 0.3 + rng.normal(0, 1.0, n_frames), 1) % n_levels
    return y.astype(int), face, zeroed, np.array([f"conv{c:02d}" for c in clusters])


def _brute_force_aucs(y, scores, units, n_units, n_resamples, seed, weight=None):
    """Per-resample scikit-learn AUC on explicitly repeated frames, from the same draws."""
    frames = np.arange(len(y))
    out = []
    for block in stats._draw_multiplicities(n_units, n_resamples, seed):
        for mult in block:
            idx = np.repeat(frames, mult[units])
            yy = y[idx]
            ok = yy.min() != yy.max() and (weight is None or (weight[idx][yy == 1].sum() > 0))
            out.append(
                roc_auc_score(yy, scores[idx], sample_weight=None if weight is None else weight[idx]) if ok else np.nan
            )
    return np.array(out)


# ----------------------------------------------------------------------------------------------------- AUC


@st.composite
def _tied_weighted_data(draw):
    n = draw(st.integers(2, 200))
    y = draw(hnp.arrays(np.int8, n, elements=st.integers(0, 1)))
    levels = draw(st.integers(1, 6))
    s = draw(hnp.arrays(np.float64, n, elements=st.integers(0, levels).map(float))) * draw(
        st.sampled_from([1.0, 1e-3, 0.1, 37.0])
    )
    w = draw(st.none() | hnp.arrays(np.float64, n, elements=st.floats(0.0, 10.0)))
    return y, s, w


@settings(max_examples=100, deadline=None)
@given(_tied_weighted_data())
def test_auc_equals_sklearn_with_heavy_ties_and_weights(data):
    y, s, w = data
    assume(0 < y.sum() < y.size)
    if w is not None:
        assume(w[y == 1].sum() > 0 and w[y == 0].sum() > 0)
    assert abs(roc_auc(y, s, w) - roc_auc_score(y, s, sample_weight=w)) <= 1e-12


def test_auc_known_values():
    assert roc_auc([0, 1], [0.1, 0.9]) == 1.0
    assert roc_auc([0, 1], [0.9, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one positive tied with one of two negatives: (1 + 0.5) / 2
    assert roc_auc([1, 0, 0], [1.0, 1.0, 0.0]) == 0.75
    # weights act like repeated frames
    assert roc_auc([1, 0, 0], [1.0, 1.0, 0.0], [1, 3, 1]) == roc_auc([1, 0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0, 0.0])


# ----------------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_bootstrap_equals_brute_force(weighted):
    y, face, zeroed, conv = _clustered(0)
    w = np.random.default_rng(5).uniform(0.2, 2.0, y.size) if weighted else None
    res = paired_cluster_bootstrap(y, {"face": face, "zeroed": zeroed}, conv, n_resamples=100, seed=11, sample_weight=w)
    units = np.unique(conv, return_inverse=True)[1]
    ref_face = _brute_force_aucs(y, face, units, 12, 100, 11, w)
    ref_zero = _brute_force_aucs(y, zeroed, units, 12, 100, 11, w)
    ok = ~np.isnan(ref_face)
    assert res.n_degenerate == int((~ok).sum())
    q = [0.025, 0.975]
    np.testing.assert_allclose(res.ci["face"], np.quantile(ref_face[ok], q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.ci["zeroed"], np.quantile(ref_zero[ok], q), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.delta_ci, np.quantile(ref_face[ok] - ref_zero[ok], q), rtol=0, atol=1e-12)
    assert res.auc["face"] == roc_auc(y, face, w)
    assert res.delta == res.auc["face"] - res.auc["zeroed"]
    assert (res.n_frames, res.n_positive, res.n_clusters, res.seed) == (y.size, y.sum(), 12, 11)


def test_frame_bootstrap_equals_brute_force():
    y, face, _, _ = _clustered(1, n_frames=150)
    res = frame_bootstrap(y, face, n_resamples=200, seed=4)
    ref = _brute_force_aucs(y, face, np.arange(y.size), y.size, 200, 4)
    assert res.resampling == "frame" and res.n_clusters == y.size and res.delta is None
    np.testing.assert_allclose(res.ci["scores"], np.quantile(ref, [0.025, 0.975]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_engines_agree(weighted):
    """The C × C quadratic form and the cumulative-sum path give the same resampled AUCs."""
    y, face, zeroed, conv = _clustered(2, n_clusters=30, n_frames=2000, n_levels=50)
    units = np.unique(conv, return_inverse=True)[1]
    w = np.random.default_rng(1).uniform(0, 3, y.size) if weighted else np.ones(y.size)
    conds = {"a": face, "b": zeroed}
    pos = y == 1
    quad, v1 = stats._resampled_aucs(pos, conds, units, 30, w, 500, 3, "quadratic")
    cums, v2 = stats._resampled_aucs(pos, conds, units, 30, w, 500, 3, "cumsum")
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_allclose(quad[:, v1], cums[:, v1], rtol=0, atol=1e-12)


def test_pair_matrix_on_continuous_scores_spanning_many_blocks():
    """Scores without ties over several blocks and chunks of the pair-matrix builder: equal to a direct count."""
    rng = np.random.default_rng(3)
    n, c = 3000, 9
    units = rng.integers(0, c, n)
    pos = rng.random(n) < 0.4
    s = rng.normal(size=n) + pos
    a = stats._pair_matrix(s, pos, np.ones(n), units, c)
    gt = (s[pos][:, None] > s[~pos][None, :]).astype(float)
    ref = np.zeros((c, c))
    np.add.at(ref, (units[pos][:, None], units[~pos][None, :]), gt)
    np.testing.assert_array_equal(a, ref)


def test_paired_identical_conditions_give_exact_zero_delta():
    y, face, _, conv = _clustered(3)
    res = paired_cluster_bootstrap(y, {"a": face, "b": face.copy()}, conv, n_resamples=200, seed=0)
    assert res.delta == 0.0 and res.delta_ci == (0.0, 0.0)
    assert res.ci["a"] == res.ci["b"]


def test_seed_reproducible_and_recorded():
    y, face, zeroed, conv = _clustered(4)
    a = paired_cluster_bootstrap(y, {"f": face, "z": zeroed}, conv, n_resamples=100, seed=7)
    b = paired_cluster_bootstrap(y, {"f": face, "z": zeroed}, conv, n_resamples=100, seed=7)
    c = paired_cluster_bootstrap(y, {"f": face, "z": zeroed}, conv, n_resamples=100, seed=8)
    assert a == b and a.ci != c.ci
    d = json.loads(json.dumps(a.to_dict()))
    assert d["seed"] == 7 and d["delta_of"] == ["f", "z"] and d["ci"]["f"] == list(a.ci["f"])
    assert d["resampling"] == "conversation" and d["n_resamples"] == 100


def test_multiplicities_are_draws_with_replacement():
    blocks = np.vstack(list(stats._draw_multiplicities(50, 600, 0)))
    assert blocks.shape == (600, 50)
    assert (blocks.sum(axis=1) == 50).all()
    assert abs(blocks.mean() - 1.0) < 0.02 and 0.9 < blocks.var() < 1.1  # Multinomial(50, 1/50): mean 1, var 0.98


def test_cluster_ci_wider_than_frame_ci_on_clustered_data():
    """Conversation offsets make frames dependent: only the cluster bootstrap sees the resulting uncertainty."""
    rng = np.random.default_rng(0)
    conv = np.repeat(np.arange(40), 100)
    y = (rng.random(conv.size) < 0.3).astype(int)
    s = y + rng.normal(0, 1.5, 40)[conv] * (1 + y) + rng.normal(0, 0.5, conv.size)
    cl = paired_cluster_bootstrap(y, s, conv, n_resamples=400, seed=0).ci["scores"]
    fr = frame_bootstrap(y, s, n_resamples=400, seed=0).ci["scores"]
    assert cl[1] - cl[0] > 2 * (fr[1] - fr[0])


# ----------------------------------------------------------------------------------------------------- controls


def test_one_seed_is_the_paired_cluster_bootstrap():
    y, face, zeroed, clusters = _clustered(5)
    one = paired_delta_over_seeds(y, [face], [zeroed], clusters, n_resamples=300, seed=2)
    ref = paired_cluster_bootstrap(y, {"a": face, "b": zeroed}, clusters, n_resamples=300, seed=2)
    assert one["delta"] == ref.delta and one["delta_ci"] == list(ref.delta_ci) and one["seed_sd"] is None
    assert one["reference_ci"] == list(ref.ci["a"]) and one["other_auc"] == ref.auc["b"]
    # k identical seeds: nothing varies between them, so the seed draw changes nothing
    same = paired_delta_over_seeds(y, [face] * 3, [zeroed] * 3, clusters, n_resamples=300, seed=2)
    assert same["delta_ci"] == pytest.approx(one["delta_ci"], abs=1e-12) and same["seed_sd"] == 0.0


def test_seed_draws_widen_the_ci_by_training_noise():
    """Three 'training seeds' whose models differ by a seed-specific shift of the scores: the ΔAUC CI over seeds and
    conversations spans the seed-to-seed spread, which a CI over conversations alone misses."""
    rng = np.random.default_rng(0)
    n, n_conv = 6000, 60
    clusters = np.repeat(np.arange(n_conv), n // n_conv)
    y = (rng.random(n) < 0.3).astype(int)
    signal = y + rng.normal(0, 1.5, n)
    noisy = [signal + rng.normal(0, 0.6 + 0.6 * i, n) for i in range(3)]  # seed 0 best, seed 2 worst
    res = paired_delta_over_seeds(y, [signal] * 3, noisy, clusters, n_resamples=400, seed=1)
    per_seed = [paired_cluster_bootstrap(y, {"a": signal, "b": x}, clusters, n_resamples=400, seed=1) for x in noisy]
    assert res["seed_deltas"] == pytest.approx([r.delta for r in per_seed], abs=1e-12)
    assert res["delta"] == pytest.approx(np.mean(res["seed_deltas"])) and res["seed_sd"] > 0
    lo, hi = res["delta_ci"]
    assert lo < min(res["seed_deltas"]) + 0.25 * res["seed_sd"] and hi > max(res["seed_deltas"]) - 0.25 * res["seed_sd"]
    widths = [r.delta_ci[1] - r.delta_ci[0] for r in per_seed]
    assert hi - lo > 1.5 * max(widths)


def test_shuffled_labels_keep_overall_count():
    y = (np.random.default_rng(0).random(500) < 0.2).astype(int)
    sh = shuffled_labels(y, seed=1)
    assert sh.sum() == y.sum() and not np.array_equal(sh, y)
    np.testing.assert_array_equal(sh, shuffled_labels(y, seed=1))


def test_circular_shift_rotates_within_each_conversation():
    rng = np.random.default_rng(0)
    conv = rng.permutation(np.repeat(np.array(["a", "b", "c", "d"]), [50, 80, 1, 30]))  # interleaved frames
    y = (rng.random(conv.size) < 0.3).astype(int)
    out = circular_shift_labels(y, conv, seed=3, min_shift_frames=5)
    for c in np.unique(conv):
        orig, new = y[conv == c], out[conv == c]
        assert new.sum() == orig.sum()
        if orig.size == 1:
            assert np.array_equal(new, orig)
            continue
        shifts = [k for k in range(orig.size) if np.array_equal(np.roll(orig, k), new)]
        assert any(5 <= k <= orig.size - 5 for k in shifts)
    np.testing.assert_array_equal(out, circular_shift_labels(y, conv, seed=3, min_shift_frames=5))
    with pytest.raises(ValueError, match="'d' has 30 frames"):
        circular_shift_labels(y, conv, seed=3, min_shift_frames=20)


# ----------------------------------------------------------------------------------------------------- DeLong


def test_delong_agrees_with_bootstrap_on_iid_data():
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.random(n) < 0.3).astype(int)
    shared = rng.normal(size=n)
    a = 1.0 * y + shared + rng.normal(0, 0.7, n)
    b = 0.8 * y + shared + rng.normal(0, 0.7, n)
    delta, p = delong_test(y, a, b)
    assert abs(delta - (roc_auc_score(y, a) - roc_auc_score(y, b))) < 1e-12
    se_delong = abs(delta) / norm.isf(p / 2)
    res = paired_cluster_bootstrap(y, {"a": a, "b": b}, np.arange(n), n_resamples=2000, seed=0)
    se_boot = (res.delta_ci[1] - res.delta_ci[0]) / (2 * norm.isf(0.025))
    assert abs(se_boot / se_delong - 1) < 0.12
    assert (p < 0.05) == (res.delta_ci[0] > 0 or res.delta_ci[1] < 0)
    assert delong_test(y, a, a) == (0.0, 1.0)


# ----------------------------------------------------------------------------------------------------- thresholds


def test_best_threshold_maximises_youden_j_and_balanced_accuracy():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    s = np.round(y + rng.normal(0, 1, 400), 1)
    thr = best_threshold(y, s)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert np.isclose(np.max(tpr - fpr), 2 * balanced_accuracy_at(y, s, thr) - 1, atol=1e-12)
    assert thr in s
    bas = [balanced_accuracy_at(y, s, t) for t in np.unique(s)]
    assert balanced_accuracy_at(y, s, thr) == max(bas)
    pred = s >= 0.3
    ref = 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())
    assert balanced_accuracy_at(y, s, 0.3) == ref


# ----------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    conv = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"1 NaN .* index 2"):
        roc_auc(y, [0.1, 0.4, np.nan, 0.8])
    with pytest.raises(ValueError, match="inf"):
        paired_cluster_bootstrap(y, {"a": s, "b": [0.1, np.inf, 0.3, 0.4]}, conv)
    with pytest.raises(ValueError, match="no positive labels"):
        roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no negative labels"):
        paired_cluster_bootstrap([1, 1, 1, 1], s, conv)
    with pytest.raises(ValueError, match=r"only 0 and 1, found \[2\]"):
        roc_auc([0, 2, 0, 1], s)
    with pytest.raises(ValueError, match="zero total sample_weight"):
        roc_auc(y, s, [1, 0, 1, 0])
    with pytest.raises(ValueError, match=">= 0"):
        roc_auc(y, s, [1, -1, 1, 1])
    with pytest.raises(ValueError, match="3 values but there are 4 labels"):
        roc_auc(y, s[:3])
    with pytest.raises(ValueError, match="one or two conditions"):
        paired_cluster_bootstrap(y, {"a": s, "b": s, "c": s}, conv)
    with pytest.raises(ValueError, match="one id per frame"):
        paired_cluster_bootstrap(y, s, conv[:3])
    with pytest.raises(ValueError, match="at least 2 conversations"):
        paired_cluster_bootstrap(y, s, np.zeros(4))
    with pytest.raises(ValueError, match="n_resamples"):
        paired_cluster_bootstrap(y, s, conv, n_resamples=0)
    with pytest.raises(ValueError, match="level"):
        paired_cluster_bootstrap(y, s, conv, level=95)


def test_degenerate_resamples_are_counted_and_all_degenerate_raises():
    """Conversation 'p' holds only positives, 'n' only negatives: a draw of 'p' twice (or 'n' twice) is degenerate."""
    y, s, conv = [1, 1, 0, 0], [0.9, 0.8, 0.1, 0.7], ["p", "p", "n", "n"]
    draws = np.vstack(list(stats._draw_multiplicities(2, 400, 0)))
    res = paired_cluster_bootstrap(y, s, conv, n_resamples=400, seed=0)
    assert res.n_degenerate == int((draws.min(axis=1) == 0).sum()) > 0
    assert res.ci["scores"] == (1.0, 1.0)
    seed = next(k for k in range(100) if next(stats._draw_multiplicities(2, 1, k)).min() == 0)
    with pytest.raises(ValueError, match="all 1 resamples lack positives or negatives"):
        paired_cluster_bootstrap(y, s, conv, n_resamples=1, seed=seed)


# ----------------------------------------------------------------------------------------------------- coverage


def _load_benchmark(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cluster_bootstrap_covers_and_frame_bootstrap_undercovers():
    cov = _load_benchmark("ci_coverage")
    res = cov.run_coverage(replications=80, resamples=500, n_conversations=80, seed=1)
    print(res)
    assert res["coverage_cluster"] >= 0.85
    assert res["coverage_frame"] <= 0.75


def test_cluster_bootstrap_ratio_matches_a_brute_force_loop():
    from faceturn.stats import _draw_multiplicities, cluster_bootstrap_ratio

    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(12), rng.integers(2, 9, size=12))
    num, den = rng.normal(1.0, 1.0, clusters.size), rng.uniform(0.5, 1.5, clusters.size)
    res = cluster_bootstrap_ratio(num, den, clusters, n_resamples=300, seed=5)
    assert res["value"] == pytest.approx(num.sum() / den.sum(), abs=1e-12)
    brute = []
    for block in _draw_multiplicities(12, 300, 5):
        for w in block:
            fw = w[clusters]
            brute.append((fw * num).sum() / (fw * den).sum())
    np.testing.assert_allclose(res["ci"], np.quantile(brute, [0.025, 0.975]), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        cluster_bootstrap_ratio(num, den, np.zeros(clusters.size))
