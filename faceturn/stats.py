"""Honest statistics for per-frame scores: ROC-AUC by ranks, a paired cluster bootstrap, label controls, DeLong.

Why cluster. Frames at 12.5 Hz are strongly autocorrelated: a 1 s yield target spans 13 consecutive frames, and
voices, faces and the model's state change slowly. N frames of an evaluation set therefore hold far fewer than N
independent observations, and a bootstrap that resamples frames treats them as independent and returns CIs that are
too narrow (`benchmarks/ci_coverage.py` measures the under-coverage). Conversations are the independent units, so
`paired_cluster_bootstrap` resamples conversations with replacement, and uses the *same* draw for both conditions
(face vs face zeroed), so that ΔAUC is paired over identical frames and conversation-level difficulty cancels.

Why it is fast ("one sort, then weighted sums per resample"). A cluster draw is a vector w of multiplicities, one per
conversation. With H(x) = 1 if x > 0, ½ if x = 0, else 0, the AUC of the resampled data is

    Σ_{pos i, neg j} w_c(i) w_c(j) H(s_i − s_j) / (W_pos W_neg)  =  wᵀ A w / ((w·p)(w·n)),

with A[c, d] = Σ_{pos i ∈ c, neg j ∈ d} H(s_i − s_j) and p, n the per-conversation positive / negative counts.
A is built once per condition after one sort (exact: ties are counted apart); each resample is then one row of a
BLAS matrix product, so 10,000 resamples of a million frames take seconds. When units are too many for a C × C
matrix (the frame bootstrap), resamples use weighted cumulative sums over the tie groups of the sorted scores,
in bounded blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.stats import rankdata

from faceturn.errors import FaceturnError

_DRAW_BLOCK = 256  # resamples per RNG call (fewer when units are many); fixed, so a seed always means the same draws
_BLOCK_ELEMENTS = 1 << 22  # bound on the entries of any dense per-block array (32 MiB in float64)
_MAX_QUADRATIC_UNITS = 4096  # the C × C pair matrix is at most 128 MiB per condition


# ---------------------------------------------------------------------------------------------------------------------
# input checks


def _as_labels(y: Any, name: str = "y") -> np.ndarray:
    """Boolean positives from labels that must be exactly 0/1 (or bool)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be 0/1 numbers or bools, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; labels must be 0 or 1")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        values = np.unique(arr[bad])[:5].tolist()
        raise ValueError(f"{name} must contain only 0 and 1, found {values}")
    return arr == 1


def _as_scores(scores: Any, n: int, name: str = "scores") -> np.ndarray:
    """Finite float64 scores of length n; NaN/inf are an error naming the count and the first index."""
    arr = np.asarray(scores)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values but there are {n} labels")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        n_nan = int(np.isnan(arr).sum())
        raise FaceturnError(
            f"{name} contains {n_nan} NaN and {bad.size - n_nan} inf values (first at index {bad[0]}); "
            "scores must be finite"
        )
    return arr


def _as_weights(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = _as_scores(sample_weight, n, "sample_weight")
    if (w < 0).any():
        raise ValueError(f"sample_weight must be >= 0, found {w.min()} at index {int(np.argmin(w))}")
    return w


def _check_classes(pos: np.ndarray, weight: np.ndarray | None, name: str = "y") -> None:
    """AUC needs both classes (with positive total weight); the message says which one is missing."""
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise FaceturnError(f"{name} has no positive labels (all {pos.size} are 0): AUC is undefined")
    if n_pos == pos.size:
        raise FaceturnError(f"{name} has no negative labels (all {pos.size} are 1): AUC is undefined")
    if weight is not None:
        if weight[pos].sum() <= 0:
            raise FaceturnError("the positive labels carry zero total sample_weight: AUC is undefined")
        if weight[~pos].sum() <= 0:
            raise FaceturnError("the negative labels carry zero total sample_weight: AUC is undefined")


def _as_conditions(scores: Any, n: int) -> dict[str, np.ndarray]:
    if isinstance(scores, Mapping):
        if not 1 <= len(scores) <= 2:
            raise ValueError(f"scores must hold one or two conditions, got {len(scores)}: {list(scores)}")
        return {str(k): _as_scores(v, n, f"scores[{k!r}]") for k, v in scores.items()}
    return {"scores": _as_scores(scores, n)}


def _factorize(clusters: Any, n: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..C-1 for any comparable hashable ids (strings, ints)."""
    arr = np.asarray(clusters)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"clusters must be 1-D with one id per frame ({n}), got shape {arr.shape}")
    try:
        uniques, codes = np.unique(arr, return_inverse=True)
    except TypeError as e:
        raise ValueError(f"cluster ids must be mutually comparable (e.g. all str or all int): {e}") from None
    return codes.astype(np.int64), int(uniques.size)


# ---------------------------------------------------------------------------------------------------------------------
# AUC and thresholds


def roc_auc(y_true: Any, scores: Any, sample_weight: Any = None) -> float:
    """ROC-AUC by ranks with ties counted ½ (the Mann-Whitney form); equals scikit-learn's `roc_auc_score`."""
    pos = _as_labels(y_true, "y_true")
    s = _as_scores(scores, pos.size)
    w = _as_weights(sample_weight, pos.size)
    _check_classes(pos, w, "y_true")
    w = np.ones(pos.size) if w is None else w
    order = np.argsort(s, kind="stable")
    s, pos, w = s[order], pos[order], w[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos_w = np.add.reduceat(np.where(pos, w, 0.0), starts)  # per tie group, ascending score
    neg_w = np.add.reduceat(np.where(pos, 0.0, w), starts)
    pos_w /= pos_w.sum()  # each class sums to 1 first, so products of tiny weights cannot underflow
    neg_w /= neg_w.sum()
    return float(np.dot(pos_w, np.cumsum(neg_w) - 0.5 * neg_w))


def balanced_accuracy_at(y: Any, scores: Any, threshold: float) -> float:
    """Mean of TPR and TNR when frames with score >= threshold are called positive (MM-VAP's metric)."""
    pos = _as_labels(y)
    s = _as_scores(scores, pos.size)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    _check_classes(pos, None)
    called = s >= threshold
    return float(0.5 * (called[pos].mean() + (~called[~pos]).mean()))


def best_threshold(y: Any, scores: Any) -> float:
    """Threshold maximising Youden's J = TPR − FPR (pick it on validation data, apply it on test).

    Candidates are the observed scores (rule: score >= threshold); among equal J the highest threshold wins.
    """
    pos = _as_labels(y)
    s = _as_scores(scores, pos.size)
    _check_classes(pos, None)
    order = np.argsort(-s, kind="stable")
    s_desc, pos_desc = s[order], pos[order]
    last_of_group = np.r_[s_desc[1:] != s_desc[:-1], True]
    tpr = np.cumsum(pos_desc)[last_of_group] / pos.sum()
    fpr = np.cumsum(~pos_desc)[last_of_group] / (~pos).sum()
    return float(s_desc[last_of_group][int(np.argmax(tpr - fpr))])


# ---------------------------------------------------------------------------------------------------------------------
# controls


def shuffled_labels(y: Any, seed: int) -> np.ndarray:
    """I.i.d. permutation of the labels: the weak null (destroys everything, including label autocorrelation)."""
    arr = np.asarray(y)
    _as_labels(arr)
    return np.random.default_rng(seed).permutation(arr)


def circular_shift_labels(y: Any, clusters: Any, seed: int, *, min_shift_frames: int = 1) -> np.ndarray:
    """Rotate each conversation's labels by a random offset: the strict null that keeps label autocorrelation.

    Frames of a conversation are taken in their order in the arrays (time order). The offset is uniform in
    [min_shift_frames, n − min_shift_frames]; set min_shift_frames beyond the autocorrelation length (e.g. the
    horizon) so a shifted label never lands next to its origin. One-frame conversations have nothing to rotate and
    stay as they are; other conversations shorter than 2·min_shift_frames are an error.
    """
    arr = np.asarray(y)
    _as_labels(arr)
    if min_shift_frames < 1:
        raise ValueError(f"min_shift_frames must be >= 1, got {min_shift_frames}")
    codes, n_clusters = _factorize(clusters, arr.shape[0])
    sizes = np.bincount(codes, minlength=n_clusters)
    too_short = (sizes > 1) & (sizes < 2 * min_shift_frames)
    if too_short.any():
        c = int(np.flatnonzero(too_short)[0])
        ids = np.unique(np.asarray(clusters))
        raise FaceturnError(
            f"conversation {ids[c].item()!r} has {sizes[c]} frames, "
            f"fewer than 2 × min_shift_frames = {2 * min_shift_frames}"
        )
    rng = np.random.default_rng(seed)
    low = np.minimum(min_shift_frames, sizes)
    offsets = np.where(sizes > 1, rng.integers(low, np.maximum(sizes - min_shift_frames, low) + 1), 0)
    order = np.argsort(codes, kind="stable")  # frames grouped by conversation, time order kept
    c = codes[order]
    first = np.cumsum(sizes) - sizes
    rank = np.arange(arr.shape[0]) - first[c]  # position of each frame inside its conversation
    target = first[c] + (rank + offsets[c]) % sizes[c]
    out = np.empty_like(arr)
    out[order[target]] = arr[order]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# DeLong


def delong_test(y: Any, scores_a: Any, scores_b: Any) -> tuple[float, float]:
    """Paired DeLong test of AUC(a) − AUC(b): returns (ΔAUC, two-sided p).

    It treats frames as independent, so on autocorrelated frames its p is too small; it is a cross-check of the
    bootstrap on i.i.d. data, not a replacement for it. Fast midrank form of Sun & Xu (2014).
    """
    pos = _as_labels(y)
    a = _as_scores(scores_a, pos.size, "scores_a")
    b = _as_scores(scores_b, pos.size, "scores_b")
    _check_classes(pos, None)
    m, n = int(pos.sum()), int((~pos).sum())
    aucs, v10, v01 = [], [], []
    for s in (a, b):
        r_all = rankdata(s)
        r_pos = rankdata(s[pos])
        r_neg = rankdata(s[~pos])
        aucs.append((r_all[pos].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((r_all[pos] - r_pos) / n)
        v01.append(1.0 - (r_all[~pos] - r_neg) / m)
    s10 = np.cov(np.vstack(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack(v01)) if n > 1 else np.zeros((2, 2))
    contrast = np.array([1.0, -1.0])
    var = contrast @ s10 @ contrast / m + contrast @ s01 @ contrast / n
    delta = float(aucs[0] - aucs[1])
    if var <= 0:
        return delta, 1.0 if delta == 0 else 0.0
    return delta, float(math.erfc(abs(delta) / math.sqrt(2.0 * var)))


# ---------------------------------------------------------------------------------------------------------------------
# bootstrap engines


def _draw_multiplicities(n_units: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield [r, n_units] int64 blocks; a row counts how often each unit was drawn in n_units draws with replacement.

    Each resample is literally "draw n_units units uniformly with replacement" (a Multinomial(C, 1/C) vector).
    Blocks have a size that depends only on n_units, so a seed always defines the same resamples.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, min(_DRAW_BLOCK, _BLOCK_ELEMENTS // n_units))
    for start in range(0, n_resamples, rows):
        r = min(rows, n_resamples - start)
        idx = rng.integers(0, n_units, size=(r, n_units))
        idx += (np.arange(r, dtype=np.int64) * n_units)[:, None]
        yield np.bincount(idx.ravel(), minlength=r * n_units).reshape(r, n_units)


def _sort_for_auc(s: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order by ascending score with positives first inside ties, and tie-group ids in that order.

    With positives first inside a tie, "positive i sorted after negative j" ⇔ s_i > s_j strictly.
    """
    order = np.lexsort((~pos, s))
    s_sorted = s[order]
    group = np.r_[0, np.cumsum(s_sorted[1:] != s_sorted[:-1])]
    return order, group


def _pair_matrix(s: np.ndarray, pos: np.ndarray, w: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    """A[c, d] = Σ_{pos i ∈ c, neg j ∈ d} w_i w_j H(s_i − s_j), the AUC numerator as a quadratic form in unit weights.

    Strict pairs: the sorted frames are cut into blocks of m; pairs across blocks come from sparse per-block positive
    weights times cumulative negative weights, pairs inside a block are enumerated. Ties: ½ Σ_g P[g, c] N[g, d].
    """
    order, group = _sort_for_auc(s, pos)
    pos, w, units = pos[order], w[order], units[order]
    n, c = pos.size, n_units
    prevalence = pos.mean()
    m = int(np.clip(np.sqrt(c / max(prevalence * (1 - prevalence), 1e-3)), 8, 1024))  # balances the two pair costs
    pairs_per_block = prevalence * (1 - prevalence) * m * m / 2  # expected pairs enumerated inside one block
    chunk = m * max(1, int(_BLOCK_ELEMENTS / max(c, pairs_per_block)))  # whole blocks; bounded arrays per step
    a = np.zeros((c, c))
    neg_before = np.zeros(c)  # negative weight per unit in all earlier blocks
    for lo in range(0, n, chunk):
        p_loc = np.flatnonzero(pos[lo : lo + chunk])
        n_loc = np.flatnonzero(~pos[lo : lo + chunk])
        n_blocks = -(-min(chunk, n - lo) // m)
        p_block, n_block = p_loc // m, n_loc // m
        p_unit, n_unit = units[lo + p_loc], units[lo + n_loc]
        p_w, n_w = w[lo + p_loc], w[lo + n_loc]
        # across blocks
        neg_per_block = np.bincount(n_block * c + n_unit, weights=n_w, minlength=n_blocks * c).reshape(n_blocks, c)
        neg_earlier = np.empty_like(neg_per_block)
        neg_earlier[0] = 0.0
        np.cumsum(neg_per_block[:-1], axis=0, out=neg_earlier[1:])
        neg_earlier += neg_before
        pos_per_block = sparse.csr_matrix((p_w, (p_unit, p_block)), shape=(c, n_blocks))
        a += pos_per_block @ neg_earlier
        neg_before += neg_per_block.sum(axis=0)
        # inside blocks: negatives of the same block sorted before each positive (a contiguous run of n_loc)
        before = np.searchsorted(n_loc, p_loc)
        first = np.searchsorted(n_loc, p_block * m)
        counts = before - first
        total = int(counts.sum())
        if total:
            which = np.repeat(np.arange(p_loc.size), counts)
            neg_idx = np.arange(total) + np.repeat(first - (np.cumsum(counts) - counts), counts)
            a += np.bincount(
                p_unit[which] * c + n_unit[neg_idx], weights=p_w[which] * n_w[neg_idx], minlength=c * c
            ).reshape(c, c)
    # ties between a positive and a negative: only groups that hold both classes
    mixed = _mixed_tie_frames(group, pos)
    if mixed.any():
        g, u, ww, pp = group[mixed], units[mixed], w[mixed], pos[mixed]
        n_groups = int(g.max()) + 1
        tie_pos = sparse.csr_matrix((ww[pp], (u[pp], g[pp])), shape=(c, n_groups))
        tie_neg = sparse.csr_matrix((ww[~pp], (g[~pp], u[~pp])), shape=(n_groups, c))
        a += 0.5 * (tie_pos @ tie_neg).toarray()
    return a


class _Quadratic:
    """Resampled AUCs as wᵀ A w / ((w·p)(w·n)), one BLAS product per block of resamples."""

    def __init__(self, s: np.ndarray, pos: np.ndarray, w: np.ndarray, units: np.ndarray, n_units: int) -> None:
        self.a = _pair_matrix(s, pos, w, units, n_units)

    def numerators(self, mult: np.ndarray) -> np.ndarray:
        return np.einsum("rc,rc->r", mult @ self.a, mult)


class _CumulativeSums:
    """Resampled AUCs from per-resample weighted cumulative sums in sorted order (for many units: frames).

    In the positives-first order, the negative weight sorted before a positive is exactly the weight strictly below
    it, so the strict part is one cumulative sum over the negatives per resample; ties add ½ Σ_g P_g N_g over the
    tie groups that hold both classes.
    """

    def __init__(self, s: np.ndarray, pos: np.ndarray, w: np.ndarray, units: np.ndarray, n_units: int) -> None:
        order, group = _sort_for_auc(s, pos)
        pos, w, units = pos[order], w[order], units[order]
        self.pos_units, self.pos_w = units[pos], w[pos]
        self.neg_units, self.neg_w = units[~pos], w[~pos]
        self.neg_below = np.cumsum(~pos)[pos]  # negatives sorted before each positive: a column of the padded cumsum
        mixed = _mixed_tie_frames(group, pos)
        g = group[mixed]
        self.tie_units, self.tie_pos, self.tie_w = units[mixed], pos[mixed], w[mixed]
        self.tie_starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if g.size else g

    def numerators(self, mult: np.ndarray) -> np.ndarray:
        out = np.empty(mult.shape[0])
        rows = max(1, _BLOCK_ELEMENTS // (self.pos_w.size + self.neg_w.size))
        for lo in range(0, mult.shape[0], rows):
            m = mult[lo : lo + rows]
            neg_cum = np.zeros((m.shape[0], self.neg_w.size + 1))
            np.cumsum(np.take(m, self.neg_units, axis=1) * self.neg_w, axis=1, out=neg_cum[:, 1:])
            pos_mult = np.take(m, self.pos_units, axis=1) * self.pos_w
            num = np.einsum("rp,rp->r", pos_mult, np.take(neg_cum, self.neg_below, axis=1))
            if self.tie_starts.size:
                tie = np.take(m, self.tie_units, axis=1) * self.tie_w
                p = np.add.reduceat(np.where(self.tie_pos, tie, 0.0), self.tie_starts, axis=1)
                n = np.add.reduceat(np.where(self.tie_pos, 0.0, tie), self.tie_starts, axis=1)
                num += 0.5 * np.einsum("rg,rg->r", p, n)
            out[lo : lo + rows] = num
        return out


def _mixed_tie_frames(group: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Mask of the frames whose tie group holds both a positive and a negative (the only ties that count ½)."""
    has_pos = np.bincount(group, weights=pos.astype(np.float64)) > 0
    has_neg = np.bincount(group, weights=(~pos).astype(np.float64)) > 0
    return (has_pos & has_neg)[group]


def _resampled_aucs(
    pos: np.ndarray,
    conditions: dict[str, np.ndarray],
    units: np.ndarray,
    n_units: int,
    weight: np.ndarray,
    n_resamples: int,
    seed: int,
    method: Literal["auto", "quadratic", "cumsum"] = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """[conditions, resamples] AUCs of unit-resampled data (same draw for every condition) and a validity mask."""
    if method == "auto":
        small = n_units <= _MAX_QUADRATIC_UNITS and n_units * n_units <= 64 * pos.size
        method = "quadratic" if small else "cumsum"
    engine = {"quadratic": _Quadratic, "cumsum": _CumulativeSums}[method]
    engines = [engine(s, pos, weight, units, n_units) for s in conditions.values()]
    unit_pos = np.bincount(units, weights=np.where(pos, weight, 0.0), minlength=n_units)
    unit_neg = np.bincount(units, weights=np.where(pos, 0.0, weight), minlength=n_units)
    aucs = np.full((len(engines), n_resamples), np.nan)
    valid = np.zeros(n_resamples, dtype=bool)
    start = 0
    for block in _draw_multiplicities(n_units, n_resamples, seed):
        mult = block.astype(np.float64)
        stop = start + block.shape[0]
        denominator = (mult @ unit_pos) * (mult @ unit_neg)
        ok = denominator > 0
        valid[start:stop] = ok
        for k, e in enumerate(engines):
            aucs[k, start:stop][ok] = e.numerators(mult[ok]) / denominator[ok]
        start = stop
    return aucs, valid


# ---------------------------------------------------------------------------------------------------------------------
# bootstrap API


MIN_CONVERSATIONS = 10  # below this many conversations a cluster-bootstrap CI is not meaningful (it under-covers)


def few_conversations(n_conversations: int, minimum: int = MIN_CONVERSATIONS) -> str | None:
    """The warning every table, JSON and report carries for a CI from fewer than `minimum` conversations."""
    if n_conversations >= minimum:
        return None
    return f"too few conversations for a meaningful CI ({n_conversations} < {minimum})"


def flag_few_conversations(result: Any, minimum: int = MIN_CONVERSATIONS) -> list[str]:
    """Add `warning` to every block of a (nested) result that holds a conversation-clustered CI over fewer than
    `minimum` conversations (`n_clusters`); returns the distinct warnings, for the tables' footnotes."""
    found: list[str] = []
    if isinstance(result, dict):
        n = result.get("n_clusters")
        if isinstance(n, int) and result.get("resampling", "conversation") == "conversation":
            warning = few_conversations(n, minimum)
            if warning:
                result["warning"] = warning
                found.append(warning)
        for v in result.values():
            found += [w for w in flag_few_conversations(v, minimum) if w not in found]
    elif isinstance(result, list):
        for v in result:
            found += [w for w in flag_few_conversations(v, minimum) if w not in found]
    return found


def percentile_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile CI: the (1 − level)/2 and (1 + level)/2 quantiles of `values` (numpy's linear rule)."""
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class BootstrapResult:
    """Point AUCs, percentile CIs and paired ΔAUC (first condition minus second) with everything needed to redo it.

    CIs are the (1 − level)/2 and (1 + level)/2 quantiles (numpy's linear rule) of the non-degenerate resamples.
    """

    auc: dict[str, float]
    ci: dict[str, tuple[float, float]]
    delta: float | None
    delta_ci: tuple[float, float] | None
    n_frames: int
    n_positive: int
    n_clusters: int
    n_resamples: int
    n_degenerate: int  # resamples without positives or negatives, excluded from the CIs
    seed: int
    level: float
    resampling: str = "conversation"  # the unit drawn with replacement: "conversation" or "frame"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); `delta_of` names the two conditions of ΔAUC."""
        d = asdict(self)
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        d["delta_ci"] = None if self.delta_ci is None else list(self.delta_ci)
        d["delta_of"] = list(self.auc) if self.delta is not None else None
        return d


def _bootstrap(
    y: Any,
    scores: Any,
    units: np.ndarray | None,
    clusters: Any,
    *,
    n_resamples: int,
    seed: int,
    level: float,
    sample_weight: Any,
) -> BootstrapResult:
    pos = _as_labels(y)
    conditions = _as_conditions(scores, pos.size)
    weight = _as_weights(sample_weight, pos.size)
    _check_classes(pos, weight)
    if not isinstance(n_resamples, int | np.integer) or n_resamples < 1:
        raise FaceturnError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0 < level < 1:
        raise FaceturnError(f"level must be in (0, 1), got {level!r}")
    if units is None:
        units, n_units = _factorize(clusters, pos.size)
        resampling = "conversation"
    else:
        n_units, resampling = pos.size, "frame"
    if n_units < 2:
        raise FaceturnError(f"need at least 2 {resampling}s to bootstrap, got {n_units}")
    point = {k: roc_auc(pos, s, weight) for k, s in conditions.items()}
    w = np.ones(pos.size) if weight is None else weight
    aucs, valid = _resampled_aucs(pos, conditions, units, n_units, w, int(n_resamples), int(seed))
    if not valid.any():
        raise FaceturnError(f"all {n_resamples} resamples lack positives or negatives; positives are too rare")
    ci = {k: percentile_ci(aucs[i, valid], level) for i, k in enumerate(conditions)}
    delta = delta_ci = None
    if len(conditions) == 2:
        a, b = conditions
        delta = point[a] - point[b]
        delta_ci = percentile_ci(aucs[0, valid] - aucs[1, valid], level)
    return BootstrapResult(
        auc=point,
        ci=ci,
        delta=delta,
        delta_ci=delta_ci,
        n_frames=int(pos.size),
        n_positive=int(pos.sum()),
        n_clusters=int(n_units),
        n_resamples=int(n_resamples),
        n_degenerate=int((~valid).sum()),
        seed=int(seed),
        level=float(level),
        resampling=resampling,
    )


def paired_cluster_bootstrap(
    y: Any,
    scores: dict[str, np.ndarray] | np.ndarray,
    clusters: Any,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    sample_weight: Any = None,
) -> BootstrapResult:
    """Percentile CIs of AUC per condition and of paired ΔAUC (first minus second), resampling conversations.

    `scores` is one array or a dict of one or two conditions over the same frames (e.g. {"face": .., "zeroed": ..});
    `clusters` gives each frame's conversation id (any comparable hashable). Every resample draws C conversations
    with replacement and uses that same draw for both conditions. Resamples with no positives or no negatives are
    counted in `n_degenerate` and left out.
    """
    return _bootstrap(
        y, scores, None, clusters, n_resamples=n_resamples, seed=seed, level=level, sample_weight=sample_weight
    )


def paired_delta_over_seeds(
    y: Any,
    reference: Sequence[Any],
    other: Sequence[Any],
    clusters: Any,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """ΔAUC = mean over training seeds of AUC(reference[i]) − AUC(other[i]) on the same frames (seed i of both sides
    shares initialisation and data order), with a percentile CI from a two-level bootstrap: each resample draws
    conversations with replacement (the same draw for every model) and, with k > 1 seeds, draws k seed pairs with
    replacement, so the CI covers both what the test conversations and what training randomness could change. With
    one seed it is exactly `paired_cluster_bootstrap`'s ΔAUC and CI (training noise then unmeasured: `seed_sd` None).
    """
    if len(reference) != len(other) or not reference:
        raise ValueError(f"need one score array per seed on both sides, got {len(reference)} and {len(other)}")
    pos = _as_labels(y)
    _check_classes(pos, None)
    units, n_units = _factorize(clusters, pos.size)
    if n_units < 2:
        raise FaceturnError(f"need at least 2 conversations to bootstrap, got {n_units}")
    k = len(reference)
    conditions = {f"r{i}": _as_scores(s, pos.size, f"reference[{i}]") for i, s in enumerate(reference)}
    conditions |= {f"o{i}": _as_scores(s, pos.size, f"other[{i}]") for i, s in enumerate(other)}
    point = np.array([roc_auc(pos, s) for s in conditions.values()])
    aucs, valid = _resampled_aucs(pos, conditions, units, n_units, np.ones(pos.size), int(n_resamples), int(seed))
    if not valid.any():
        raise FaceturnError(f"all {n_resamples} resamples lack positives or negatives; positives are too rare")
    aucs = aucs[:, valid]
    if k > 1:  # seed pairs drawn with replacement, per resample (a stream apart from the conversation draws)
        pick = np.random.default_rng([int(seed), 1]).integers(0, k, size=(k, aucs.shape[1]))
        cols = np.arange(aucs.shape[1])
        ref_r = aucs[pick, cols].mean(axis=0)
        oth_r = aucs[k + pick, cols].mean(axis=0)
    else:
        ref_r, oth_r = aucs[0], aucs[1]
    seed_deltas = point[:k] - point[k:]
    return {
        "delta": float(seed_deltas.mean()),
        "delta_ci": list(percentile_ci(ref_r - oth_r, level)),
        "reference_auc": float(point[:k].mean()),
        "reference_ci": list(percentile_ci(ref_r, level)),
        "other_auc": float(point[k:].mean()),
        "other_ci": list(percentile_ci(oth_r, level)),
        "seed_deltas": [float(d) for d in seed_deltas],
        "seed_sd": float(seed_deltas.std(ddof=1)) if k > 1 else None,
        "n_frames": int(pos.size),
        "n_positive": int(pos.sum()),
        "n_clusters": int(n_units),
        "n_resamples": int(n_resamples),
        "n_degenerate": int((~valid).sum()),
        "seed": int(seed),
        "level": float(level),
    }


def frame_bootstrap(
    y: Any,
    scores: dict[str, np.ndarray] | np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    sample_weight: Any = None,
) -> BootstrapResult:
    """The naive bootstrap that resamples frames as if independent: only to show that its CIs are too narrow."""
    pos = _as_labels(y)
    units = np.arange(pos.size, dtype=np.int64)
    return _bootstrap(
        pos, scores, units, None, n_resamples=n_resamples, seed=seed, level=level, sample_weight=sample_weight
    )


def cluster_bootstrap_ratio(
    numerator: Any, denominator: Any, clusters: Any, *, n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """Σ numerator / Σ denominator with a conversation-clustered percentile CI.

    A mean of per-frame values is the ratio with denominator 1; a ratio of two means (e.g. a readout gain relative
    to a random baseline) passes frame sums of both. Resampling is the same "draw C conversations with replacement"
    as the AUC bootstrap.
    """
    num = _as_scores(numerator, np.size(numerator), "numerator")
    den = _as_scores(denominator, num.size, "denominator")
    units, n_units = _factorize(clusters, num.size)
    if n_units < 2:
        raise FaceturnError(f"need at least 2 conversations to bootstrap, got {n_units}")
    if den.sum() == 0:
        raise FaceturnError("the denominator sums to 0")
    per_unit = np.stack([np.bincount(units, num, n_units), np.bincount(units, den, n_units)], axis=1)  # [C, 2]
    values = []
    for block in _draw_multiplicities(n_units, int(n_resamples), int(seed)):
        sums = block @ per_unit  # [r, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            values.append(sums[:, 0] / sums[:, 1])
    v = np.concatenate(values)
    v = v[np.isfinite(v)]
    return {
        "value": float(num.sum() / den.sum()),
        "ci": list(percentile_ci(v, level)),
        "n_frames": int(num.size),
        "n_clusters": int(n_units),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "level": float(level),
    }


# ---------------------------------------------------------------------------------------------------------------------
# any statistic of weighted events, paired over conditions (step 4's turn-timing metrics)

WeightedStatistic = Callable[..., np.ndarray]  # (weights [r, n], *arrays [n]) -> [r]; NaN where undefined


def weighted_ratio(weights: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Σ w·numerator / Σ w·denominator per row of weights (a rate: events taken over events eligible); NaN where the
    denominator is 0."""
    den = weights @ np.asarray(denominator, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (weights @ np.asarray(numerator, np.float64)) / np.where(den > 0, den, 1.0), np.nan)


def weighted_median(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The lower weighted median per row of weights (the smallest value whose cumulative weight reaches half the
    total) of the finite entries of `values` (NaN marks an entry without a value); NaN where no weight is left."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    order = np.argsort(values[ok], kind="stable")
    v, w = values[ok][order], weights[:, ok][:, order]
    if v.size == 0:
        return np.full(weights.shape[0], np.nan)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    index = np.argmax(cum >= 0.5 * total[:, None] - 1e-9 * np.maximum(total[:, None], 1.0), axis=1)
    return np.where(total > 0, v[index], np.nan)


def weighted_wasserstein(weights: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 1-Wasserstein (earth mover's) distance between the weighted samples {a_i} and {b_i} (finite entries
    only; entry i weighs weights[:, i] in both), per row of weights: ∫ |F_a − F_b| dx, as scipy's
    `wasserstein_distance`; NaN where either sample has no weight."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    x = np.concatenate([a[fa], b[fb]])
    if not fa.any() or not fb.any():
        return np.full(weights.shape[0], np.nan)
    zeros_a, zeros_b = np.zeros((weights.shape[0], int(fb.sum()))), np.zeros((weights.shape[0], int(fa.sum())))
    wa = np.concatenate([weights[:, fa], zeros_a], axis=1)
    wb = np.concatenate([zeros_b, weights[:, fb]], axis=1)
    order = np.argsort(x, kind="stable")
    x, wa, wb = x[order], wa[:, order], wb[:, order]
    ta, tb = wa.sum(axis=1, keepdims=True), wb.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf_gap = np.abs(np.cumsum(wa, axis=1) / ta - np.cumsum(wb, axis=1) / tb)[:, :-1]
    out = cdf_gap @ np.diff(x)
    return np.where((ta[:, 0] > 0) & (tb[:, 0] > 0), out, np.nan)


def paired_cluster_statistic(
    statistic: WeightedStatistic,
    data: Mapping[str, Sequence[np.ndarray]],
    clusters: Any,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Any statistic of weighted events per condition, with percentile CIs from a paired conversation-cluster
    bootstrap and, for two conditions, the paired difference (first minus second).

    `data[condition]` is a tuple of arrays aligned with `clusters` (one entry per event, the same events for every
    condition: e.g. the same pauses answered with the face and with it zeroed); `statistic(weights, *arrays)` returns
    one value per row of `weights` [r, n] (the multiplicity of each event's conversation in a resample; all ones for
    the point estimate), NaN where undefined (a median of nothing). Every resample draws C conversations with
    replacement and uses that draw for every condition. Resamples where a value is undefined are counted
    (`n_undefined`) and left out of that CI.
    """
    if not data:
        raise ValueError("paired_cluster_statistic needs at least one condition")
    n = np.asarray(clusters).shape[0]
    arrays = {k: tuple(np.asarray(a) for a in v) for k, v in data.items()}
    for k, v in arrays.items():
        if any(a.ndim != 1 or a.shape[0] != n for a in v):
            raise ValueError(f"condition {k!r}: every array must be 1-D with one entry per cluster id ({n})")
    units, n_units = _factorize(clusters, n)
    if n_units < 2:
        raise FaceturnError(f"need at least 2 conversations to bootstrap, got {n_units}")
    if not 0 < level < 1:
        raise FaceturnError(f"level must be in (0, 1), got {level!r}")
    point = {k: float(statistic(np.ones((1, n)), *v)[0]) for k, v in arrays.items()}
    resampled = {k: [] for k in arrays}
    for block in _draw_multiplicities(n_units, int(n_resamples), int(seed)):
        weights = block[:, units].astype(np.float64)
        for k, v in arrays.items():
            resampled[k].append(statistic(weights, *v))
    values = {k: np.concatenate(v) for k, v in resampled.items()}

    def ci(x: np.ndarray) -> list[float] | None:
        x = x[np.isfinite(x)]
        return list(percentile_ci(x, level)) if x.size else None

    out: dict[str, Any] = {
        "value": {k: (v if math.isfinite(v) else None) for k, v in point.items()},
        "ci": {k: ci(v) for k, v in values.items()},
        "n_undefined": {k: int((~np.isfinite(v)).sum()) for k, v in values.items()},
    }
    if len(arrays) == 2:
        a, b = arrays
        d = point[a] - point[b]
        out["delta"] = d if math.isfinite(d) else None
        out["delta_ci"] = ci(values[a] - values[b])
        out["delta_of"] = [a, b]
    out.update(n_events=int(n), n_clusters=int(n_units), n_resamples=int(n_resamples), seed=int(seed),
               level=float(level))  # fmt: skip
    return out
