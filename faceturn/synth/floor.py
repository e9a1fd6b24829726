"""The floor process: who speaks when (turns, IPUs, pauses, transfer offsets, backchannels), which hand-overs carry
which planted cue, and the statistics a large corpus of a preset should show, derived from its parameters alone.

Turns alternate between the two participants. A turn is 1 + Poisson IPUs (inter-pausal units) separated by pauses,
some shorter than the labels' IPU gap (invisible to the labels), some long (holds). Consecutive turns are separated
by a floor-transfer offset (FTO) drawn from a clipped normal (negative = overlap). Listeners backchannel inside the
holder's IPUs, away from turn ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from faceturn.synth.config import FloorConfig, SynthConfig

FACE_CUES = {  # PlantedCues field -> CuesConfig field
    "gaze": "gaze_return",
    "speaker_head": "turn_end_head",
    "listener_head": "listener_head",
    "listener_mouth": "listener_mouth",
}


# ---------------------------------------------------------------------------------------------------------------------
# analytic statistics


def _clipped_normal_moments(mean: float, sd: float, lo: float, hi: float) -> tuple[float, float]:
    """Mean and variance of clip(X, lo, hi) for X ~ Normal(mean, sd)."""
    z = NormalDist()
    a, b = (lo - mean) / sd, (hi - mean) / sd
    pa, pb = z.cdf(a), z.cdf(b)
    da, db = z.pdf(a), z.pdf(b)
    inner = pb - pa
    m1 = lo * pa + hi * (1 - pb) + mean * inner + sd * (da - db)
    m2 = lo**2 * pa + hi**2 * (1 - pb) + mean**2 * inner + 2 * mean * sd * (da - db) + sd**2 * (inner + a * da - b * db)
    return m1, m2 - m1**2


def expected_statistics(cfg: SynthConfig) -> dict[str, float | None]:
    """What `faceturn inspect` should measure on a large corpus of this preset, from the parameters alone.

    - IPU I = ipu_min + Gamma: E = ipu_min + m, Var = m² / shape. Pause P: the short/long mixture.
    - Turn T = I₀ + Σₙ₌₁ᴺ (Iₙ + Pₙ), N ~ Poisson(λ): E[T] = E[I] + λ(E[I] + E[P]), Var[T] = Var[I] + λ E[(I + P)²].
    - FTO F = clip(Normal(μ, σ), lo, hi): the median is μ; mean and variance in closed form.
    - Hand-overs: turn ends E_j = lead + T₀ + Σᵢ₌₁ʲ (Fᵢ₋₁ + Tᵢ) form a delayed renewal process with cycle C = F + T;
      turns are kept while E_j <= D - tail, so by the renewal theorem's second-order expansion
      E[#hand-overs | D] ≈ (D - tail - lead - E[T]) / E[C] + (Var[C] / E[C]² - 1) / 2, linear in D, so the
      corpus rate is 60 · E[#hand-overs | E[D]] / E[D] per minute.
    - Median gap: the median of F among transfers with F > 0 (silence between the turns).
    """
    f = cfg.floor
    ipu_mean = f.ipu_min_s + f.ipu_mean_excess_s
    ipu_var = f.ipu_mean_excess_s**2 / f.ipu_shape
    s_mean = (f.short_pause_min_s + f.short_pause_max_s) / 2
    s_m2 = (f.short_pause_min_s**2 + f.short_pause_min_s * f.short_pause_max_s + f.short_pause_max_s**2) / 3
    l_mean = f.long_pause_min_s + f.long_pause_mean_excess_s
    l_m2 = f.long_pause_mean_excess_s**2 + l_mean**2
    p_mean = f.short_pause_prob * s_mean + (1 - f.short_pause_prob) * l_mean
    p_m2 = f.short_pause_prob * s_m2 + (1 - f.short_pause_prob) * l_m2
    lam = f.pauses_per_turn
    turn_mean = ipu_mean + lam * (ipu_mean + p_mean)
    ip_m2 = (ipu_var + ipu_mean**2) + 2 * ipu_mean * p_mean + p_m2  # E[(I + P)²], I and P independent
    turn_var = ipu_var + lam * ip_m2
    fto_mean, fto_var = _clipped_normal_moments(f.fto_mean_s, f.fto_sd_s, f.fto_min_s, f.fto_max_s)
    cycle_mean, cycle_var = turn_mean + fto_mean, turn_var + fto_var
    duration_mean = (f.duration_min_s + f.duration_max_s) / 2
    n_handovers = (duration_mean - f.tail_s - f.lead_in_s - turn_mean) / cycle_mean
    n_handovers += (cycle_var / cycle_mean**2 - 1) / 2
    z = NormalDist(f.fto_mean_s, f.fto_sd_s)
    p_overlap = z.cdf(0.0)
    if f.fto_max_s <= 0:
        median_gap = None  # no gaps at all
    elif f.fto_min_s > 0:
        median_gap = f.fto_mean_s  # every transfer is a gap
    else:  # F > 0 exactly when the unclipped offset is, so it is the median of the normal above 0, clipped
        median_gap = min(z.inv_cdf(p_overlap + (1 - p_overlap) / 2), f.fto_max_s)
    return {
        "handovers_per_min": 60.0 * max(n_handovers, 0.0) / duration_mean,
        "median_fto_s": f.fto_mean_s,
        "median_gap_s": median_gap,
        "mean_fto_s": fto_mean,
        "overlap_fraction": p_overlap if f.fto_min_s < 0 else 0.0,
        "mean_turn_s": turn_mean,
        "holds_per_turn": lam * (1 - f.short_pause_prob),
        "mean_duration_s": duration_mean,
    }


# ---------------------------------------------------------------------------------------------------------------------
# sampling


@dataclass
class Timeline:
    """The planted floor process of one conversation (seconds)."""

    duration_s: float
    turn_speaker: np.ndarray  # [n_turns] int, alternating
    turn_start_s: np.ndarray  # [n_turns] first speech onset
    turn_end_s: np.ndarray  # [n_turns] last speech offset; turns 0..n-2 end with a hand-over
    ipu_speaker: np.ndarray  # [n_ipus] the turns' IPUs, in time order
    ipu_start_s: np.ndarray
    ipu_end_s: np.ndarray
    ipu_turn: np.ndarray  # [n_ipus] index of the IPU's turn
    ipu_before_hold: np.ndarray  # [n_ipus] bool: a long pause (a hold) follows
    bc_listener: np.ndarray  # [n_bc] participant who backchannels
    bc_start_s: np.ndarray
    bc_end_s: np.ndarray

    @property
    def n_handovers(self) -> int:
        return max(len(self.turn_speaker) - 1, 0)

    @property
    def handover_ipus(self) -> np.ndarray:
        """Index of the IPU that ends each hand-over's outgoing turn (the last IPU of turns 0..n-2)."""
        last_of_turn = np.flatnonzero(np.diff(np.append(self.ipu_turn, -1)) != 0)
        return last_of_turn[: self.n_handovers]

    def speech_intervals(self, participant: int) -> list[tuple[float, float]]:
        """A participant's IPUs and backchannels in time order: what their voice activity is made of."""
        mine = self.ipu_speaker == participant
        bc = self.bc_listener == participant
        pairs = zip(
            np.concatenate([self.ipu_start_s[mine], self.bc_start_s[bc]]).tolist(),
            np.concatenate([self.ipu_end_s[mine], self.bc_end_s[bc]]).tolist(),
            strict=True,
        )
        return sorted(pairs)


def sample_timeline(f: FloorConfig, rng: np.random.Generator) -> Timeline:
    """Draw turns, IPUs, pauses, transfer offsets and backchannels (vectorised; see FloorConfig)."""
    duration_s = float(rng.uniform(f.duration_min_s, f.duration_max_s))
    end_limit_s = duration_s - f.tail_s
    n_max = int(max(end_limit_s - f.lead_in_s, 0.0) / (f.ipu_min_s + min(f.fto_min_s, 0.0))) + 2  # cycles >= this
    n_ipus = 1 + rng.poisson(f.pauses_per_turn, n_max)
    total = int(n_ipus.sum())
    ipu = f.ipu_min_s + rng.gamma(f.ipu_shape, f.ipu_mean_excess_s / f.ipu_shape, total)
    short = rng.random(total) < f.short_pause_prob
    pause = np.where(
        short,
        rng.uniform(f.short_pause_min_s, f.short_pause_max_s, total),
        f.long_pause_min_s + rng.exponential(f.long_pause_mean_excess_s, total),
    )
    fto = np.clip(rng.normal(f.fto_mean_s, f.fto_sd_s, n_max), f.fto_min_s, f.fto_max_s)
    first_of_turn = np.cumsum(n_ipus) - n_ipus
    turn_of_ipu = np.repeat(np.arange(n_max), n_ipus)
    last = np.zeros(total, dtype=bool)
    last[first_of_turn + n_ipus - 1] = True
    pause = np.where(last, 0.0, pause)
    seg = ipu + pause
    excl = np.cumsum(seg) - seg
    offset_in_turn = excl - excl[first_of_turn][turn_of_ipu]
    turn_len = np.add.reduceat(seg, first_of_turn)
    turn_start = f.lead_in_s + np.concatenate([[0.0], np.cumsum(turn_len + fto)[:-1]])
    turn_end = turn_start + turn_len
    n_turns = int(np.searchsorted(turn_end, end_limit_s, side="right"))  # turn ends increase: a prefix fits
    keep_ipu = turn_of_ipu < n_turns
    turn_speaker = (int(rng.integers(2)) + np.arange(n_turns)) % 2
    ipu_turn = turn_of_ipu[keep_ipu]
    ipu_start = turn_start[ipu_turn] + offset_in_turn[keep_ipu]
    ipu_end = ipu_start + ipu[keep_ipu]
    before_hold = ~short[keep_ipu] & ~last[keep_ipu]

    # backchannels: at most one per IPU, inside it by the margin, by the other participant
    bc_len = rng.uniform(f.backchannel_min_s, f.backchannel_max_s, len(ipu_start))
    first = np.zeros(total, dtype=bool)
    first[first_of_turn] = True
    lo = ipu_start + np.where(first[keep_ipu], f.backchannel_turn_margin_s, f.backchannel_margin_s)
    hi = ipu_end - np.where(last[keep_ipu], f.backchannel_turn_margin_s, f.backchannel_margin_s)
    room = np.maximum(hi - lo - bc_len, 0.0)
    p_bc = 1.0 - np.exp(-f.backchannels_per_min / 60.0 * room)
    has_bc = rng.random(len(ipu_start)) < p_bc
    bc_start = lo + rng.random(len(ipu_start)) * room
    return Timeline(
        duration_s=duration_s,
        turn_speaker=turn_speaker,
        turn_start_s=turn_start[:n_turns],
        turn_end_s=turn_end[:n_turns],
        ipu_speaker=turn_speaker[ipu_turn],
        ipu_start_s=ipu_start,
        ipu_end_s=ipu_end,
        ipu_turn=ipu_turn,
        ipu_before_hold=before_hold,
        bc_listener=1 - turn_speaker[ipu_turn][has_bc],
        bc_start_s=bc_start[has_bc],
        bc_end_s=(bc_start + bc_len)[has_bc],
    )


@dataclass
class PlantedCues:
    """Which cue accompanies which hand-over (index j: turn j yields to turn j + 1) and which IPU ends with the
    falling-pitch prosody. Leads in seconds."""

    audio_ipu: np.ndarray  # [n_ipus] bool: the IPU ends with the prosodic cue (a yield cue or a false alarm)
    gaze: np.ndarray  # [n_handovers] bool
    gaze_lead_s: np.ndarray
    speaker_head: np.ndarray
    speaker_head_lead_s: np.ndarray
    listener_head: np.ndarray
    listener_head_lead_s: np.ndarray
    listener_mouth: np.ndarray
    listener_mouth_lead_s: np.ndarray


def sample_cues(cfg: SynthConfig, tl: Timeline, rng: np.random.Generator) -> PlantedCues:
    """Independent draws per hand-over; uniforms are compared with the probabilities so that changing a probability
    changes which cues are present but not the rest of the stream."""
    n = tl.n_handovers
    n_ipu = len(tl.ipu_start_s)
    u_ipu = rng.random(n_ipu)
    yield_ipu = np.zeros(n_ipu, dtype=bool)
    yield_ipu[tl.handover_ipus] = True
    audio_ipu = (yield_ipu & (u_ipu < cfg.audio.cue_reliability)) | (
        tl.ipu_before_hold & (u_ipu < cfg.audio.cue_false_alarm_prob)
    )
    out = {"audio_ipu": audio_ipu}
    for key, name in FACE_CUES.items():
        cue = getattr(cfg.cues, name)
        out[key] = rng.random(n) < cue.probability
        out[f"{key}_lead_s"] = rng.uniform(cue.lead_min_s, cue.lead_max_s, n)
    return PlantedCues(**out)
