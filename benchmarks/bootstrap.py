"""Target (docs/design.md, "Targets"): paired cluster bootstrap of 1 M frames, 2,000 conversations, 10,000 resamples
in ≤ 20 s on 2 cores, and ≥ 100× faster than a per-resample scikit-learn loop on the same data.

The naive loop (draw conversations with replacement, gather their frames, call `sklearn.metrics.roc_auc_score` for
both conditions) is timed on a few resamples in the same run and extrapolated linearly to the full count; the output
says so. Timings depend on what else runs on the machine.

    python benchmarks/bootstrap.py [--frames 1000000 --conversations 2000 --resamples 10000 --naive-resamples 5]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from faceturn.stats import paired_cluster_bootstrap


def make_data(n_frames: int, n_conversations: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Yield-like labels (13-frame runs), float32 P(yield) for face vs zeroed with per-conversation effects."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n_frames), n_conversations - 1, replace=False))
    conversation = np.zeros(n_frames, dtype=np.int64)
    conversation[cuts] = 1
    conversation = np.cumsum(conversation)
    events = rng.random(n_frames + 13) < 1 / 60
    cum = np.r_[0, np.cumsum(events)]
    t = np.arange(n_frames)
    y = (cum[t + 14] - cum[t + 1] > 0).astype(np.int8)
    offset = rng.normal(0, 0.8, n_conversations)[conversation]
    benefit = rng.normal(0, 0.8, n_conversations)[conversation]
    shared = rng.normal(0, 1, n_frames)
    logit_face = (2.0 + benefit) * y + offset + shared + rng.normal(0, 0.5, n_frames) - 2
    logit_zero = 1.2 * y + offset + shared + rng.normal(0, 0.5, n_frames) - 2
    scores = {
        "face": (1 / (1 + np.exp(-logit_face))).astype(np.float32),
        "zeroed": (1 / (1 + np.exp(-logit_zero))).astype(np.float32),
    }
    return y, scores, conversation


def naive_seconds_per_resample(
    y: np.ndarray, scores: dict[str, np.ndarray], conversation: np.ndarray, n_resamples: int, seed: int
) -> float:
    """Per-resample cost of the obvious loop: draw conversations, gather frames, scikit-learn AUC per condition."""
    from sklearn.metrics import roc_auc_score

    starts = np.flatnonzero(np.r_[True, conversation[1:] != conversation[:-1]])  # frames of a conversation: a run
    lengths = np.diff(np.r_[starts, conversation.size])
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(n_resamples):
        draw = rng.integers(0, starts.size, starts.size)
        idx = np.concatenate([np.arange(starts[c], starts[c] + lengths[c]) for c in draw])
        yy = y[idx]
        for s in scores.values():
            roc_auc_score(yy, s[idx])
    return (time.perf_counter() - t0) / n_resamples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--conversations", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--naive-resamples", type=int, default=5, help="resamples of the naive loop actually timed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    y, scores, conversation = make_data(args.frames, args.conversations, args.seed)
    print(
        f"data: {y.size} frames, {args.conversations} conversations, {int(y.sum())} positives, "
        f"2 conditions (float32 scores); cpu_count={os.cpu_count()}"
    )
    t0 = time.perf_counter()
    res = paired_cluster_bootstrap(y, scores, conversation, n_resamples=args.resamples, seed=args.seed)
    fast_s = time.perf_counter() - t0
    print(
        f"faceturn paired_cluster_bootstrap: {args.resamples} resamples in {fast_s:.2f} s "
        f"(AUC face {res.auc['face']:.4f}, zeroed {res.auc['zeroed']:.4f}, "
        f"ΔAUC {res.delta:+.4f} [{res.delta_ci[0]:+.4f}, {res.delta_ci[1]:+.4f}], degenerate {res.n_degenerate})"
    )
    per_resample_s = naive_seconds_per_resample(y, scores, conversation, args.naive_resamples, args.seed)
    naive_s = per_resample_s * args.resamples
    print(
        f"naive per-resample sklearn loop: timed {args.naive_resamples} resamples, {per_resample_s:.3f} s each; "
        f"extrapolated to {args.resamples} resamples: {naive_s:.0f} s"
    )
    ratio = naive_s / fast_s
    print(f"speed ratio (naive / faceturn): {ratio:.0f}x")
    print(f"targets: <= 20 s -> {'PASS' if fast_s <= 20 else 'FAIL'}; >= 100x -> {'PASS' if ratio >= 100 else 'FAIL'}")


if __name__ == "__main__":
    main()
