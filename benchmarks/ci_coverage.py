"""Does the 95 % CI for paired ΔAUC cover the truth? Cluster bootstrap vs frame bootstrap on clustered frames.

Simulated data with a known population ΔAUC. Per conversation c and frame t:

    y_t    = 1 in the 13 frames (1 s) before each event of a Bernoulli event process: runs, like turn-yield targets
    s_face = (μ_face + v_c)·y + u_c + e_t + a_t
    s_zero =  μ_zero       ·y + u_c + e_t + b_t

u_c ~ N(0, τ²) is a conversation offset shared by both conditions, v_c ~ N(0, ω²) a conversation-specific face
benefit (some interlocutors are more expressive), e a shared stationary AR(1) (variance σ², coefficient ρ), and a, b
independent stationary AR(1) noises (variance η²) of each condition. Everything is independent of y, so a positive
and a negative frame from two different conversations (the pooled AUC's C → ∞ limit) differ by a normal variable:

    AUC_face = Φ(μ_face / sqrt(ω² + 2(τ² + σ² + η²)))       AUC_zero = Φ(μ_zero / sqrt(2(τ² + σ² + η²)))

The script checks that formula on one very large sample, then runs replications: a fresh small evaluation set each
time, both bootstraps on it, and counts how often each 95 % CI for ΔAUC contains the population value. Frames
inside a conversation share u_c, v_c and slow noise, so the frame bootstrap, which treats them as independent, gives
CIs that are too narrow; the cluster bootstrap should cover about 95 %.

    python benchmarks/ci_coverage.py --replications 500 --resamples 1000
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

from faceturn.stats import frame_bootstrap, paired_cluster_bootstrap, roc_auc


@dataclass(frozen=True)
class SimParams:
    """Simulation knobs; defaults give AUC ≈ 0.80 with face, 0.72 without, and strong clustering."""

    mu_face: float = 1.6
    mu_zero: float = 1.0
    offset_sd: float = 0.8  # τ: per-conversation score offset
    benefit_sd: float = 0.8  # ω: per-conversation face benefit
    shared_sd: float = 0.8  # σ: shared AR(1) noise
    own_sd: float = 0.5  # η: per-condition AR(1) noise
    ar_coef: float = 0.9  # ρ: frame-to-frame autocorrelation of the noises
    horizon_frames: int = 13  # labels are 1 within this many frames before an event
    mean_gap_frames: float = 60.0  # mean spacing of events (turn ends)
    min_frames: int = 100  # conversation length, uniform in [min_frames, max_frames]
    max_frames: int = 200


def population_aucs(p: SimParams) -> tuple[float, float]:
    """(AUC_face, AUC_zero) of the population: positive and negative frames from independent conversations."""
    between = 2.0 * (p.offset_sd**2 + p.shared_sd**2 + p.own_sd**2)

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    return phi(p.mu_face / math.sqrt(p.benefit_sd**2 + between)), phi(p.mu_zero / math.sqrt(between))


def _ar1(rng: np.random.Generator, shape: tuple[int, int], sd: float, rho: float) -> np.ndarray:
    """Stationary AR(1) along axis 1 with marginal standard deviation `sd`."""
    x = np.empty(shape)
    x[:, 0] = rng.normal(0.0, sd, shape[0])
    innovation_sd = sd * math.sqrt(1.0 - rho * rho)
    for t in range(1, shape[1]):
        x[:, t] = rho * x[:, t - 1] + rng.normal(0.0, innovation_sd, shape[0])
    return x


def simulate(
    rng: np.random.Generator, n_conversations: int, p: SimParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y, s_face, s_zero, conversation) for one evaluation set, frames of a conversation in time order."""
    lengths = rng.integers(p.min_frames, p.max_frames + 1, n_conversations)
    n_t = int(lengths.max())
    h = p.horizon_frames
    events = rng.random((n_conversations, n_t + h)) < 1.0 / p.mean_gap_frames
    ev_cum = np.concatenate([np.zeros((n_conversations, 1)), np.cumsum(events, axis=1)], axis=1)
    t = np.arange(n_t)
    y = (ev_cum[:, t + h + 1] - ev_cum[:, t + 1]) > 0  # an event in (t, t + h]
    offset = rng.normal(0.0, p.offset_sd, (n_conversations, 1))
    benefit = rng.normal(0.0, p.benefit_sd, (n_conversations, 1))
    shared = _ar1(rng, (n_conversations, n_t), p.shared_sd, p.ar_coef)
    s_face = (p.mu_face + benefit) * y + offset + shared + _ar1(rng, (n_conversations, n_t), p.own_sd, p.ar_coef)
    s_zero = p.mu_zero * y + offset + shared + _ar1(rng, (n_conversations, n_t), p.own_sd, p.ar_coef)
    keep = t[None, :] < lengths[:, None]
    conversation = np.broadcast_to(np.arange(n_conversations)[:, None], keep.shape)
    return y[keep].astype(np.int8), s_face[keep], s_zero[keep], conversation[keep]


def large_sample_delta(p: SimParams, n_conversations: int, seed: int) -> tuple[float, int]:
    """ΔAUC on one very large simulated set (checks the analytic formula) and its number of frames."""
    y, s_face, s_zero, _ = simulate(np.random.default_rng(seed), n_conversations, p)
    return roc_auc(y, s_face) - roc_auc(y, s_zero), int(y.size)


def run_coverage(
    replications: int,
    resamples: int,
    n_conversations: int,
    seed: int = 0,
    p: SimParams | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Coverage of the 95 % ΔAUC CI by the cluster and the frame bootstrap over `replications` simulated sets."""
    p = p or SimParams()
    auc_face, auc_zero = population_aucs(p)
    truth = auc_face - auc_zero
    hits = {"cluster": 0, "frame": 0}
    widths: dict[str, list[float]] = {"cluster": [], "frame": []}
    n_frames = []
    for rep, child in enumerate(np.random.SeedSequence(seed).spawn(replications)):
        y, s_face, s_zero, conv = simulate(np.random.default_rng(child), n_conversations, p)
        scores = {"face": s_face, "zeroed": s_zero}
        results = {
            "cluster": paired_cluster_bootstrap(y, scores, conv, n_resamples=resamples, seed=rep),
            "frame": frame_bootstrap(y, scores, n_resamples=resamples, seed=rep),
        }
        for kind, r in results.items():
            lo, hi = r.delta_ci
            hits[kind] += lo <= truth <= hi
            widths[kind].append(hi - lo)
        n_frames.append(y.size)
        if progress and (rep + 1) % 50 == 0:
            print(f"  {rep + 1}/{replications}: cluster {hits['cluster']}, frame {hits['frame']} covered", flush=True)
    return {
        "truth_delta": truth,
        "auc_face": auc_face,
        "auc_zero": auc_zero,
        "coverage_cluster": hits["cluster"] / replications,
        "coverage_frame": hits["frame"] / replications,
        "width_cluster": float(np.mean(widths["cluster"])),
        "width_frame": float(np.mean(widths["frame"])),
        "mean_frames": float(np.mean(n_frames)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replications", type=int, default=500, help="simulated evaluation sets (>= 300 for the target)")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per set")
    ap.add_argument("--conversations", type=int, default=100, help="conversations per simulated set")
    ap.add_argument("--truth-conversations", type=int, default=20000, help="size of the large-sample truth check")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = SimParams()
    auc_face, auc_zero = population_aucs(p)
    print(f"population (analytic): AUC face {auc_face:.4f}, zeroed {auc_zero:.4f}, ΔAUC {auc_face - auc_zero:.4f}")
    if args.truth_conversations > 0:
        big_delta, big_frames = large_sample_delta(p, args.truth_conversations, args.seed + 10**6)
        print(
            f"large-sample check: {args.truth_conversations} conversations, {big_frames} frames: ΔAUC {big_delta:.4f}",
            flush=True,
        )
    t0 = time.perf_counter()
    res = run_coverage(args.replications, args.resamples, args.conversations, args.seed, p, progress=True)
    elapsed_s = time.perf_counter() - t0
    n = args.replications
    print(
        f"{n} replications × {args.resamples} resamples, {args.conversations} conversations "
        f"(mean {res['mean_frames']:.0f} frames) per set, {elapsed_s:.0f} s"
    )
    for kind, label in (("cluster", "cluster bootstrap (conversations)"), ("frame", "frame bootstrap (frames)")):
        cov = res[f"coverage_{kind}"]
        se = math.sqrt(max(cov * (1 - cov), 1e-12) / n)
        note = "  <- under-coverage: frames are not independent" if kind == "frame" and cov < 0.92 else ""
        width = res[f"width_{kind}"]
        print(f"  {label:36s} coverage {100 * cov:5.1f} % ± {100 * se:.1f}  mean width {width:.4f}{note}")
    print("target for the cluster bootstrap: 92-98 %")


if __name__ == "__main__":
    main()
