"""Synthetic audio-visual conversations whose turn-taking cues are planted and known (DESIGN §9).

Why a generator: the study's claims ("the face carries the signal", "gaze matters on tight framing, not on wide")
can only be *tested* on data whose truth is known. Every number lives in a TOML preset (`presets/tight.toml`,
`presets/wide.toml`), every run writes its planted truth to `truth.json`, and the same (preset, seed, index) always
gives the same bytes.

The generative story, in the order the code runs:

1. **Floor process** (continuous time). Turns alternate between the two participants. A turn is 1 + Poisson IPUs
   (inter-pausal units) separated by pauses, some shorter than the 0.2 s IPU gap (invisible to the labels), some
   long (holds). Consecutive turns are separated by a floor-transfer offset (FTO) drawn from a clipped normal around
   +200 ms (negative = overlap). Listeners backchannel inside the holder's IPUs, away from turn ends.
2. **Audio tokens**: Mimi-shaped (8 codebooks of 2048). Codebook 0 has a silence vocabulary, a Zipf speech
   vocabulary with local continuity, and a "falling pitch" vocabulary: the prosodic turn-end cue, present in the last
   `cue_window_s` of speech before a yield with probability `cue_reliability`, and before some holds (false alarms).
   Acoustic codebooks are noisy functions of codebook 0 and the speaker's voice.
3. **Faces** (A61): idle dynamics (blinks, head sway, speech-driven mouth, smiles, brow noise unrelated to turns,
   gaze aversion while speaking), planted cues (the yielding speaker's gaze returns to the listener and the head
   lifts toward the listener; the next speaker raises the head and opens the mouth before taking the turn), and a
   per-clip constant head translation at camera scale (tens of cm).
4. **Camera framing** (observation model): per face group, observed = gain · true + white noise + slow drift, then
   face dropouts (face_present = 0, face zeros). `tight` keeps gaze clean; `wide` all but destroys it.
5. Optional **waveforms**: a harmonic voice per participant whose pitch falls where the prosodic cue is planted.

Randomness: conversation i draws from `np.random.default_rng([seed, i])`, split into independent child streams
(floor, cue draws, tokens, face, observation, waveform), so changing a face parameter leaves the floor process and
tokens of every conversation unchanged and waveforms never perturb the rest. Participant traits come from their own
stream keyed by participant index, so a participant looks and sounds the same in every conversation.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from faceturn.config import ConfigError, load_toml, to_dict
from faceturn.schema import CHANNEL_INDEX, CODEBOOK_SIZE, FACE_GROUPS, N_CODEBOOKS, N_FACE, gaze_vector
from faceturn.timebase import (
    FRAME_S,
    duration_to_frames,
    intervals_to_mask,
    n_frames_for,
    time_to_frame,
    voiced_fraction,
)

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("tight", "wide")
TRUTH_FILE = "truth.json"
AUDIO_DIR = "audio"
BC_MAX_S = 1.0  # labels' backchannel ceiling (DESIGN §3): every IPU of a turn must be longer than this
IPU_GAP_S = 0.2  # labels' IPU gap (DESIGN §3): shorter pauses are filled and do not split an IPU

# ---------------------------------------------------------------------------------------------------------------------
# configuration (every field is set by the preset TOML; units are in the names or the comments)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _check_probabilities(obj: Any) -> None:
    for f in dataclasses.fields(obj):
        if f.name.endswith(("_prob", "probability", "reliability")):
            v = getattr(obj, f.name)
            _check(0.0 <= v <= 1.0, f"{f.name} must lie in [0, 1], got {v}")


def _check_positive(obj: Any, names: Iterable[str]) -> None:
    for name in names:
        v = getattr(obj, name)
        _check(v > 0, f"{name} must be > 0, got {v}")


@dataclass(frozen=True)
class FloorConfig:
    """Turn-taking in continuous time (seconds). A turn = 1 + Poisson(pauses_per_turn) IPUs with pauses between."""

    duration_min_s: float  # conversation length ~ Uniform[min, max]
    duration_max_s: float
    lead_in_s: float  # silence before the first turn
    tail_s: float  # the last turn ends at least this long before the conversation does
    ipu_min_s: float  # shortest IPU; above the 1 s backchannel ceiling so a turn is never read as a backchannel
    ipu_mean_excess_s: float  # IPU = ipu_min_s + Gamma(ipu_shape, mean ipu_mean_excess_s)
    ipu_shape: float
    pauses_per_turn: float  # Poisson mean of pauses inside a turn
    short_pause_prob: float  # share of pauses shorter than the 0.2 s IPU gap: Uniform[short_pause_min_s, _max_s]
    short_pause_min_s: float
    short_pause_max_s: float
    long_pause_min_s: float  # the other pauses (holds): long_pause_min_s + Exponential(long_pause_mean_excess_s)
    long_pause_mean_excess_s: float
    fto_mean_s: float  # floor-transfer offset ~ Normal(fto_mean_s, fto_sd_s) clipped to [fto_min_s, fto_max_s]
    fto_sd_s: float
    fto_min_s: float  # most negative offset (longest overlap)
    fto_max_s: float
    backchannels_per_min: float  # listener backchannels per minute of room for one (at most one per IPU)
    backchannel_min_s: float  # backchannel length ~ Uniform[min, max]
    backchannel_max_s: float
    backchannel_margin_s: float  # a backchannel lies at least this far inside the holder's IPU ...
    backchannel_turn_margin_s: float  # ... and this far from the turn's first onset and last offset

    def __post_init__(self):
        _check_probabilities(self)
        _check_positive(self, ("duration_min_s", "ipu_mean_excess_s", "ipu_shape", "fto_sd_s", "backchannel_min_s"))
        _check(self.duration_min_s <= self.duration_max_s, "duration_min_s must be <= duration_max_s")
        _check(self.lead_in_s >= 0 and self.tail_s >= 0, "lead_in_s and tail_s must be >= 0")
        _check(self.ipu_min_s >= BC_MAX_S + 0.2, f"ipu_min_s must be >= {BC_MAX_S + 0.2} s (backchannel ceiling "
               f"{BC_MAX_S} s plus frame rounding), got {self.ipu_min_s}")  # fmt: skip
        _check(self.pauses_per_turn >= 0, "pauses_per_turn must be >= 0")
        _check(0 < self.short_pause_min_s <= self.short_pause_max_s < IPU_GAP_S - FRAME_S / 2,
               f"short pauses must satisfy 0 < min <= max < {IPU_GAP_S - FRAME_S / 2} s so frame rounding never "
               f"turns them into an IPU gap")  # fmt: skip
        _check(self.long_pause_min_s >= IPU_GAP_S + FRAME_S, f"long_pause_min_s must be >= {IPU_GAP_S + FRAME_S} s")
        _check(self.long_pause_mean_excess_s >= 0, "long_pause_mean_excess_s must be >= 0")
        _check(self.fto_min_s <= self.fto_mean_s <= self.fto_max_s, "need fto_min_s <= fto_mean_s <= fto_max_s")
        _check(self.ipu_min_s + self.fto_min_s > 0.5, "an overlap (-fto_min_s) must stay 0.5 s shorter than ipu_min_s "
               "so the incoming speaker outlasts the outgoing one")  # fmt: skip
        _check(
            self.backchannel_min_s <= self.backchannel_max_s <= BC_MAX_S - FRAME_S,
            f"need backchannel_min_s <= backchannel_max_s <= {BC_MAX_S - FRAME_S} s",
        )
        _check(self.backchannel_margin_s >= 0, "backchannel_margin_s must be >= 0")
        _check(self.backchannel_turn_margin_s >= max(0.0, -self.fto_min_s) + IPU_GAP_S + 2 * FRAME_S,
               "backchannel_turn_margin_s must exceed the longest overlap plus the IPU gap and two frames, or a "
               "backchannel could merge with the backchanneler's own turn")  # fmt: skip
        _check(self.backchannels_per_min >= 0, "backchannels_per_min must be >= 0")


@dataclass(frozen=True)
class AudioConfig:
    """Mimi-like token streams. Codebook-0 ids: [0, n_silence_tokens) silence, [2048 - n_cue_tokens, 2048) the
    falling-pitch turn-end prosody, the rest speech."""

    n_silence_tokens: int
    n_cue_tokens: int
    silence_token_prob: float  # silence token ids ~ Geometric(silence_token_prob) (low entropy)
    zipf_exponent: float  # speech token ranks ~ Zipf(exponent)
    continuation_prob: float  # P(a speech frame continues the previous one: id + 1), the local structure to learn
    cue_reliability: float  # P(the turn-end prosody precedes a yield): how far audio alone gets
    cue_false_alarm_prob: float  # P(the same prosody precedes a long within-turn pause, i.e. a hold)
    cue_window_s: float  # the prosody covers the last cue_window_s of speech before the yield / pause
    cue_token_prob: float  # share of speech frames inside a cue window whose codebook-0 token is a cue token
    acoustic_spread: int  # codebook q token = (m_q · codebook0 + voice_q + Uniform[0, acoustic_spread · q)) mod 2048

    def __post_init__(self):
        _check_probabilities(self)
        _check(self.n_silence_tokens >= 1 and self.n_cue_tokens >= 1, "token vocabularies must be non-empty")
        _check(
            self.n_silence_tokens + self.n_cue_tokens <= CODEBOOK_SIZE - 64,
            f"silence + cue vocabularies must leave at least 64 of {CODEBOOK_SIZE} ids for speech",
        )
        _check(self.zipf_exponent > 1, "zipf_exponent must be > 1")
        _check(self.silence_token_prob > 0, "silence_token_prob must be > 0")
        _check(self.cue_window_s > 0, "cue_window_s must be > 0")
        _check(self.acoustic_spread >= 1, "acoustic_spread must be >= 1")


@dataclass(frozen=True)
class FaceConfig:
    """Idle facial behaviour (no turn information except that speakers avert gaze and move the mouth while talking).
    Angles in radians (+pitch = down), blendshapes in [0, 1], translations in cm, rates per minute."""

    blinks_per_min: float
    blink_amplitude: float  # peak eyeBlink
    avert_yaw_rad: float  # typical gaze-aversion angle (per participant x Uniform[0.7, 1.3], random side)
    avert_pitch_rad: float  # vertical part of the aversion (per participant up or down)
    avert_dwell_s: float  # speaker: mean time per gaze aversion
    look_dwell_s: float  # speaker: mean time per mid-turn look at the listener
    turn_start_avert_s: float  # speakers look away for at least this long at the start of a turn
    listener_look_dwell_s: float  # listener: mean time looking at the speaker between glances away
    listener_away_dwell_s: float  # listener: mean time per glance away
    gaze_jitter_rad: float  # fixational jitter of gaze angles
    saccade_tau_s: float  # time constant of gaze shifts
    head_sway_rad: float  # stationary SD of slow head sway (AR(1), time constant head_sway_tau_s) per axis
    head_sway_tau_s: float
    speech_head_rad: float  # extra per-frame head motion SD while speaking
    head_gaze_coupling: float  # the head turns by this fraction of the gaze aversion
    head_gaze_tau_s: float  # the head follows gaze with this time constant
    nod_rad: float  # amplitude of idle nods (pitch down then up)
    nod_s: float  # duration of a nod
    backchannel_nod_prob: float  # P(a listener nods with a backchannel): head nods that are not turn ends
    emphasis_nods_per_min: float  # speaker nods mid-turn per minute of speech (head motion that is no cue)
    jaw_speech: float  # mean jawOpen while speaking
    mouth_speech_sd: float  # per-frame viseme variation while speaking
    smile_sd: float  # slow smile variation (also drives cheekSquint and eyeSquint)
    expression_tau_s: float  # time constant of slow expression noise (smile, brow)
    brow_sd: float  # slow brow noise, unrelated to turns
    brow_raises_per_min: float  # random brow raises, unrelated to turns
    brow_raise_amplitude: float
    brow_raise_s: float
    head_trans_mean_cm: tuple[float, float, float]  # per-clip constant head translation ~ Normal(mean, sd) per axis
    head_trans_sd_cm: tuple[float, float, float]

    def __post_init__(self):
        _check_probabilities(self)
        _check_positive(self, ("avert_dwell_s", "look_dwell_s", "listener_look_dwell_s", "listener_away_dwell_s",
                               "saccade_tau_s", "head_sway_tau_s", "head_gaze_tau_s", "nod_s",
                               "expression_tau_s", "brow_raise_s"))  # fmt: skip
        for name in ("blinks_per_min", "emphasis_nods_per_min", "brow_raises_per_min"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0")
        _check(min(self.head_trans_sd_cm) >= 0, "head_trans_sd_cm must be >= 0")


@dataclass(frozen=True)
class Cue:
    """One planted turn cue. `probability` per hand-over; the cue spans [event - lead, event) with lead ~
    Uniform[lead_min_s, lead_max_s]; the event is the yielding speaker's last speech offset (speaker cues) or the
    next speaker's onset (listener cues)."""

    probability: float
    amplitude: float  # in the units of the channel it moves (see CuesConfig)
    lead_min_s: float
    lead_max_s: float

    def __post_init__(self):
        _check_probabilities(self)
        _check(self.amplitude >= 0, "amplitude must be >= 0")
        _check(0 <= self.lead_min_s <= self.lead_max_s, "need 0 <= lead_min_s <= lead_max_s")


@dataclass(frozen=True)
class CuesConfig:
    """Planted cues at every hand-over, each drawn independently so each face group carries unique information."""

    gaze_return: Cue  # eye_gaze: the yielding speaker looks back at the listener (amplitude: share of aversion removed)
    turn_end_head: Cue  # head_rot: the yielding speaker lifts the head toward the listener (-pitch, rad)
    listener_head: Cue  # head_rot: the next speaker raises the head (-pitch, rad) before the onset
    listener_mouth: Cue  # jaw_mouth: the next speaker opens the mouth (jawOpen) before the onset


@dataclass(frozen=True)
class GroupObservation:
    """How a camera framing sees one face group: observed = gain · true + N(0, noise_sd) + AR(1) drift."""

    gain: float  # 1 = faithful tracking; < 1 shrinks true motion toward neutral
    noise_sd: float  # per-frame white noise, group units (rad for gaze/head angles, cm for head_trans, else [0, 1])
    drift_sd: float  # stationary SD of slow tracking error
    drift_tau_s: float

    def __post_init__(self):
        _check(self.gain >= 0 and self.noise_sd >= 0 and self.drift_sd >= 0, "gain and noise SDs must be >= 0")
        _check(self.drift_tau_s > 0, "drift_tau_s must be > 0")


@dataclass(frozen=True)
class FramingConfig:
    """The camera framing's observation model (DESIGN §9). For eye_gaze the noise applies to the gaze angles (rad);
    the eyeLook blendshapes and the gaze vector are then computed from the noisy angles, as a tracker would."""

    name: str  # written to the manifest's `framing` field
    dropouts_per_min: float  # face-tracking dropouts (face_present = 0, face zeros) per minute per participant
    dropout_mean_s: float  # dropout length ~ Exponential(mean) + one frame
    eye_gaze: GroupObservation
    jaw_mouth: GroupObservation
    brow: GroupObservation
    cheek_nose: GroupObservation
    head_rot: GroupObservation
    head_trans: GroupObservation

    def __post_init__(self):
        _check(self.dropouts_per_min >= 0 and self.dropout_mean_s >= 0, "dropout rate and length must be >= 0")


@dataclass(frozen=True)
class WaveformConfig:
    """Optional audio (`--audio`): a harmonic voice per participant, silence elsewhere."""

    sample_rate_hz: int
    f0_min_hz: float  # per-participant base pitch ~ Uniform[f0_min_hz, f0_max_hz]
    f0_max_hz: float
    n_harmonics: int
    syllable_rate_hz: float  # amplitude and pitch modulation rate
    declination: float  # share of f0 lost over an IPU
    pitch_fall: float  # extra share of f0 lost over a cue window (the audible turn-end prosody)
    level: float  # peak amplitude as a share of 16-bit full scale

    def __post_init__(self):
        _check(self.sample_rate_hz > 0 and self.n_harmonics >= 1, "sample_rate_hz and n_harmonics must be >= 1")
        _check(0 < self.f0_min_hz <= self.f0_max_hz, "need 0 < f0_min_hz <= f0_max_hz")
        _check(
            self.f0_max_hz * self.n_harmonics < self.sample_rate_hz / 2,
            "the highest harmonic (f0_max_hz · n_harmonics) must stay below the Nyquist frequency",
        )
        _check(0 <= self.declination < 1 and 0 <= self.pitch_fall < 1, "declination and pitch_fall must be in [0, 1)")
        _check(0 < self.level <= 1, "level must be in (0, 1]")


@dataclass(frozen=True)
class SynthConfig:
    """A complete synthetic-corpus preset."""

    name: str  # preset name, recorded in truth.json and used as the default corpus name
    participants_per_group: int  # a group is a closed pool of participants: groups make participant-disjoint splits
    conversations_per_group: int
    floor: FloorConfig
    audio: AudioConfig
    face: FaceConfig
    cues: CuesConfig
    framing: FramingConfig
    waveform: WaveformConfig

    def __post_init__(self):
        _check(self.participants_per_group >= 2, "participants_per_group must be >= 2")
        _check(self.conversations_per_group >= 1, "conversations_per_group must be >= 1")


def preset_path(name: str) -> Path:
    """The TOML file of a built-in preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; built-in presets: {', '.join(PRESETS)} (or give a TOML path)")
    return PRESET_DIR / f"{name}.toml"


def load_preset(name_or_path: str | Path, overrides: Sequence[str] = ()) -> SynthConfig:
    """A built-in preset by name, or a preset TOML file by path, with type-checked `key=value` overrides."""
    text = str(name_or_path)
    path = preset_path(text) if text in PRESETS else Path(text)
    if text not in PRESETS and not path.is_file():
        raise ConfigError(f"unknown preset {text!r}: not one of {', '.join(PRESETS)} and no such file")
    return load_toml(SynthConfig, path, overrides)


# ---------------------------------------------------------------------------------------------------------------------
# analytic statistics of the floor process


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
# per-participant traits


@dataclass(frozen=True)
class Traits:
    """What stays the same for a participant across conversations."""

    avert_yaw_rad: float  # signed: which side this person looks away to
    avert_pitch_rad: float
    blink_factor: float
    smile_base: float
    neutral: np.ndarray  # [52] resting blendshape offsets
    voice: np.ndarray  # [8] acoustic-codebook offsets (timbre)
    f0_hz: float


def participant_traits(cfg: SynthConfig, seed: int, participant: int) -> Traits:
    rng = np.random.default_rng([seed, participant, 0x7A175])  # a stream no conversation index can reach
    fc = cfg.face
    neutral = rng.uniform(0.0, 0.08, 52)
    neutral[CHANNEL_INDEX["tongueOut"]] = 0.0
    return Traits(
        avert_yaw_rad=fc.avert_yaw_rad * rng.uniform(0.7, 1.3) * rng.choice([-1.0, 1.0]),
        avert_pitch_rad=fc.avert_pitch_rad * rng.uniform(0.7, 1.3) * rng.choice([-1.0, 1.0]),
        blink_factor=rng.uniform(0.6, 1.4),
        smile_base=rng.uniform(0.0, 0.2),
        neutral=neutral,
        voice=rng.integers(0, CODEBOOK_SIZE, N_CODEBOOKS),
        f0_hz=rng.uniform(cfg.waveform.f0_min_hz, cfg.waveform.f0_max_hz),
    )


def participant_id(cfg: SynthConfig, participant: int) -> str:
    return f"{cfg.name}-p{participant:05d}"


# ---------------------------------------------------------------------------------------------------------------------
# 1. floor process


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


_FACE_CUES = {  # PlantedCues field -> CuesConfig field
    "gaze": "gaze_return",
    "speaker_head": "turn_end_head",
    "listener_head": "listener_head",
    "listener_mouth": "listener_mouth",
}


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
    for key, name in _FACE_CUES.items():
        cue = getattr(cfg.cues, name)
        out[key] = rng.random(n) < cue.probability
        out[f"{key}_lead_s"] = rng.uniform(cue.lead_min_s, cue.lead_max_s, n)
    return PlantedCues(**out)


# ---------------------------------------------------------------------------------------------------------------------
# 2. audio tokens


_ACOUSTIC_MULT = np.array([1, 3, 5, 7, 11, 13, 17, 19])  # codebook q reads codebook 0 through a different bijection


def sample_codes(
    ac: AudioConfig, speech: np.ndarray, cue: np.ndarray, voice: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """[8, T] int16 tokens of one participant from frame-level speech and cue masks."""
    t = speech.shape[0]
    n_speech = CODEBOOK_SIZE - ac.n_silence_tokens - ac.n_cue_tokens
    silence_tok = np.minimum(rng.geometric(ac.silence_token_prob, t) - 1, ac.n_silence_tokens - 1)
    rank = (rng.zipf(ac.zipf_exponent, t) - 1) % n_speech
    cont = (rng.random(t) < ac.continuation_prob) & speech & np.concatenate([[False], speech[:-1]])
    idx = np.arange(t)
    last_fresh = np.maximum.accumulate(np.where(cont, 0, idx))  # frame 0 is never a continuation
    speech_tok = ac.n_silence_tokens + (rank[last_fresh] + (idx - last_fresh)) % n_speech
    cue_tok = CODEBOOK_SIZE - ac.n_cue_tokens + rng.integers(0, ac.n_cue_tokens, t)
    use_cue = cue & speech & (rng.random(t) < ac.cue_token_prob)
    c0 = np.where(speech, np.where(use_cue, cue_tok, speech_tok), silence_tok)
    q = np.arange(1, N_CODEBOOKS)[:, None]
    jitter = (rng.random((N_CODEBOOKS - 1, t)) * (ac.acoustic_spread * q)).astype(np.int64)
    acoustic = (_ACOUSTIC_MULT[1:, None] * c0[None, :] + voice[1:, None] + jitter) % CODEBOOK_SIZE
    return np.concatenate([c0[None, :], acoustic]).astype(np.int16)


# ---------------------------------------------------------------------------------------------------------------------
# 3. faces


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], sd: float, tau_s: float) -> np.ndarray:
    """Stationary AR(1) noise along the last axis with standard deviation `sd` and time constant `tau_s`."""
    from scipy.signal import lfilter

    if sd == 0:
        return np.zeros(shape)
    a = math.exp(-FRAME_S / tau_s)
    x = rng.standard_normal(shape) * (sd * math.sqrt(1 - a * a))
    x[..., 0] = rng.standard_normal(shape[:-1]) * sd
    return lfilter([1.0], [1.0, -a], x, axis=-1)


def _smooth(x: np.ndarray, tau_s: float) -> np.ndarray:
    """One-pole low-pass (unit DC gain) along the last axis, started at the first value."""
    from scipy.signal import lfilter, lfilter_zi

    a = math.exp(-FRAME_S / tau_s)
    zi = lfilter_zi([1 - a], [1.0, -a]) * x[..., :1]
    return lfilter([1 - a], [1.0, -a], x, axis=-1, zi=zi)[0]


def _two_state(rng: np.random.Generator, n_frames: int, on_s: float, off_s: float, start_on: bool) -> np.ndarray:
    """A two-state Markov chain at the frame rate with mean dwell times `on_s` and `off_s` (bool [n_frames])."""
    pairs = int(n_frames * FRAME_S / (on_s + off_s)) + 4
    p_on, p_off = min(FRAME_S / on_s, 1.0), min(FRAME_S / off_s, 1.0)
    durations = np.empty((0, 2), dtype=np.int64)
    while durations.sum() < n_frames:
        on, off = rng.geometric(p_on, pairs), rng.geometric(p_off, pairs)
        durations = np.concatenate([durations, np.stack([on, off] if start_on else [off, on], axis=1)])
    states = np.tile(np.array([start_on, not start_on]), len(durations))
    return np.repeat(states, durations.ravel())[:n_frames]


def _frames(times_s: Iterable[float], n_frames: int) -> np.ndarray:
    """Frame indices of instants, kept inside the grid."""
    return np.clip(np.array([time_to_frame(t) for t in times_s], dtype=np.int64), 0, max(n_frames - 1, 0))


def _add_bumps(x: np.ndarray, start_frames: np.ndarray, amplitudes: np.ndarray, length_frames: int) -> None:
    """Add sin-shaped bumps (a nod, a blink, a raise) starting at the given frames, in place."""
    if len(start_frames) == 0:
        return
    shape = np.sin(np.pi * (np.arange(length_frames) + 0.5) / length_frames)
    idx = start_frames[:, None] + np.arange(length_frames)[None, :]
    ok = idx < x.shape[-1]
    np.add.at(x, idx[ok], (amplitudes[:, None] * shape[None, :])[ok])


def _ramps(n_frames: int, ends_s: np.ndarray, leads_s: np.ndarray, decay_s: float) -> np.ndarray:
    """Sum (capped at 1) of linear ramps 0 → 1 over [end - lead, end), each followed by an exponential decay with
    time constant `decay_s` (cut after five time constants)."""
    out = np.zeros(n_frames)
    tail = np.exp(-np.arange(duration_to_frames(5 * decay_s)) * FRAME_S / decay_s)
    for end_s, lead_s in zip(ends_s.tolist(), leads_s.tolist(), strict=True):
        k0, k1 = time_to_frame(end_s - lead_s), time_to_frame(end_s)
        shape = np.concatenate([np.arange(1, k1 - k0 + 1) / max(k1 - k0, 1), tail])
        lo = max(k0, 0)
        hi = min(k0 + len(shape), n_frames)
        if hi > lo:
            out[lo:hi] += shape[lo - k0 : hi - k0]
    return np.minimum(out, 1.0)


_BLINK = [CHANNEL_INDEX["eyeBlinkLeft"], CHANNEL_INDEX["eyeBlinkRight"]]
_SQUINT = [CHANNEL_INDEX["eyeSquintLeft"], CHANNEL_INDEX["eyeSquintRight"]]
_WIDE = [CHANNEL_INDEX["eyeWideLeft"], CHANNEL_INDEX["eyeWideRight"]]
_SMILE = [CHANNEL_INDEX["mouthSmileLeft"], CHANNEL_INDEX["mouthSmileRight"]]
_CHEEK_SQUINT = [CHANNEL_INDEX["cheekSquintLeft"], CHANNEL_INDEX["cheekSquintRight"]]
_JAW_OPEN = CHANNEL_INDEX["jawOpen"]
_LOWER_DOWN = [CHANNEL_INDEX["mouthLowerDownLeft"], CHANNEL_INDEX["mouthLowerDownRight"]]
_VISEMES = [CHANNEL_INDEX[n] for n in (
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthStretchRight", "mouthRollLower",
    "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
)]  # fmt: skip
_MOUTH_SMALL = [CHANNEL_INDEX[n] for n in ("jawForward", "jawLeft", "jawRight", "mouthLeft", "mouthRight",
                                           "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
                                           "cheekPuff", "noseSneerLeft", "noseSneerRight")]  # fmt: skip
_BROW_UP = [CHANNEL_INDEX[n] for n in ("browInnerUp", "browOuterUpLeft", "browOuterUpRight")]
_BROW_DOWN = [CHANNEL_INDEX["browDownLeft"], CHANNEL_INDEX["browDownRight"]]
# +yaw = toward the subject's left: the left eye looks out and the right eye in; +pitch = down
_LOOK_POS_YAW = [CHANNEL_INDEX["eyeLookOutLeft"], CHANNEL_INDEX["eyeLookInRight"]]
_LOOK_NEG_YAW = [CHANNEL_INDEX["eyeLookInLeft"], CHANNEL_INDEX["eyeLookOutRight"]]
_LOOK_DOWN = [CHANNEL_INDEX["eyeLookDownLeft"], CHANNEL_INDEX["eyeLookDownRight"]]
_LOOK_UP = [CHANNEL_INDEX["eyeLookUpLeft"], CHANNEL_INDEX["eyeLookUpRight"]]
_EYE_LOOK = frozenset(_LOOK_POS_YAW + _LOOK_NEG_YAW + _LOOK_DOWN + _LOOK_UP)
_EYE_LOOK_FULL_RAD = 0.6  # a gaze angle that drives an eyeLook blendshape to 1
_ROT = [CHANNEL_INDEX[n] for n in ("head_pitch", "head_yaw", "head_roll")]
_TRANS = [CHANNEL_INDEX[n] for n in ("head_tx", "head_ty", "head_tz")]
_GAZE = [CHANNEL_INDEX[n] for n in ("gaze_x", "gaze_y", "gaze_z")]


@dataclass
class LatentFace:
    """True facial behaviour of one participant before the camera sees it."""

    blendshapes: np.ndarray  # [52, T] float32, eyeLook shapes left at rest (the tracker derives them from gaze)
    gaze_yaw_pitch: np.ndarray  # [2, T] rad
    head_rot: np.ndarray  # [3, T] pitch, yaw, roll (rad)
    head_trans: np.ndarray  # [3] cm, constant over the clip


def sample_face(
    cfg: SynthConfig,
    tl: Timeline,
    cues: PlantedCues,
    participant: int,
    va: np.ndarray,
    traits: Traits,
    rng: np.random.Generator,
) -> LatentFace:
    """Idle dynamics plus the planted cues for one participant (see FaceConfig and CuesConfig)."""
    fc, cc = cfg.face, cfg.cues
    t = va.shape[0]
    mine = tl.turn_speaker == participant
    holding = np.zeros(t, dtype=bool)  # speaker mode: from own turn onset to own last offset
    for s, e in zip(tl.turn_start_s[mine].tolist(), tl.turn_end_s[mine].tolist(), strict=True):
        holding[time_to_frame(s) : time_to_frame(e)] = True
    n_h = tl.n_handovers
    out_idx = np.flatnonzero(mine[:n_h])  # hand-overs this participant yields
    in_idx = np.flatnonzero(tl.turn_speaker[1 : n_h + 1] == participant)  # hand-overs this participant takes
    yield_s = tl.turn_end_s[out_idx]
    onset_s = tl.turn_start_s[in_idx + 1]

    # gaze: aversion while speaking (state 1), looking at the partner while listening, the planted return
    spk = _two_state(rng, t, fc.avert_dwell_s, fc.look_dwell_s, start_on=True)
    lst = _two_state(rng, t, fc.listener_away_dwell_s, fc.listener_look_dwell_s, start_on=False)
    averted = np.where(holding, spk, lst).astype(np.float64)
    for s in tl.turn_start_s[mine].tolist():
        averted[time_to_frame(s) : time_to_frame(s + fc.turn_start_avert_s)] = 1.0
    g = cues.gaze[out_idx]
    for e, lead in zip(yield_s[g].tolist(), cues.gaze_lead_s[out_idx][g].tolist(), strict=True):
        averted[time_to_frame(e - lead) : time_to_frame(e)] *= 1.0 - cc.gaze_return.amplitude
    averted = _smooth(averted, fc.saccade_tau_s)
    gaze = averted[None, :] * np.array([[traits.avert_yaw_rad], [traits.avert_pitch_rad]])
    gaze += rng.standard_normal((2, t)) * fc.gaze_jitter_rad

    # head rotation: sway, speech motion, following the gaze, idle nods, the planted lifts
    rot = _ar1(rng, (3, t), fc.head_sway_rad, fc.head_sway_tau_s)
    rot += rng.standard_normal((3, t)) * fc.speech_head_rad * va[None, :]
    rot[:2] += fc.head_gaze_coupling * _smooth(gaze[::-1], fc.head_gaze_tau_s)  # (yaw, pitch) -> (pitch, yaw) rows
    bc = tl.bc_start_s[(tl.bc_listener == participant) & (rng.random(len(tl.bc_start_s)) < fc.backchannel_nod_prob)]
    n_emph = rng.poisson(fc.emphasis_nods_per_min * float(va.sum()) * FRAME_S / 60.0)
    candidates = np.flatnonzero(holding & (va >= 0.5))
    emph = rng.choice(candidates, n_emph) if len(candidates) else np.zeros(0, dtype=np.int64)
    nods = np.concatenate([_frames(bc, t), emph])
    _add_bumps(rot[0], nods, np.full(len(nods), fc.nod_rad), duration_to_frames(fc.nod_s))
    sh = cues.speaker_head[out_idx]
    rot[0] -= cc.turn_end_head.amplitude * _ramps(t, yield_s[sh], cues.speaker_head_lead_s[out_idx][sh], decay_s=0.4)
    lh = cues.listener_head[in_idx]
    rot[0] -= cc.listener_head.amplitude * _ramps(t, onset_s[lh], cues.listener_head_lead_s[in_idx][lh], decay_s=0.5)

    # blendshapes, channel-major [52, T]
    bs = np.repeat(traits.neutral.astype(np.float32)[:, None], t, axis=1)
    n_blinks = rng.poisson(fc.blinks_per_min * traits.blink_factor * t * FRAME_S / 60.0)
    blink = np.zeros(t)
    _add_bumps(blink, rng.integers(0, t, n_blinks), rng.uniform(0.7, 1.0, n_blinks) * fc.blink_amplitude,
               duration_to_frames(0.2))  # fmt: skip
    bs[_BLINK] += blink
    smile = np.maximum(traits.smile_base + _ar1(rng, (t,), fc.smile_sd, fc.expression_tau_s), 0.0)
    bs[_SMILE] += smile
    bs[_CHEEK_SQUINT] += 0.6 * smile
    bs[_SQUINT] += 0.3 * smile
    bs[_WIDE] += np.abs(rng.standard_normal((2, t), dtype=np.float32)) * 0.03
    jaw = va * np.clip(fc.jaw_speech + fc.mouth_speech_sd * rng.standard_normal(t), 0, 1)
    bs[_VISEMES] += va * np.abs(rng.standard_normal((len(_VISEMES), t), dtype=np.float32)) * fc.mouth_speech_sd
    bs[_MOUTH_SMALL] += np.abs(rng.standard_normal((len(_MOUTH_SMALL), t), dtype=np.float32)) * 0.02
    lm = cues.listener_mouth[in_idx]
    mouth_cue = _ramps(t, onset_s[lm], cues.listener_mouth_lead_s[in_idx][lm], decay_s=0.2)
    mouth_cue *= cc.listener_mouth.amplitude
    bs[_JAW_OPEN] += jaw + mouth_cue
    bs[_LOWER_DOWN] += 0.5 * mouth_cue
    brow = _ar1(rng, (t,), fc.brow_sd, fc.expression_tau_s)
    raises = np.zeros(t)
    n_raises = rng.poisson(fc.brow_raises_per_min * t * FRAME_S / 60.0)
    _add_bumps(raises, rng.integers(0, t, n_raises), np.full(n_raises, fc.brow_raise_amplitude),
               duration_to_frames(fc.brow_raise_s))  # fmt: skip
    bs[_BROW_UP] += np.maximum(brow, 0) + raises
    bs[_BROW_DOWN] += np.maximum(-brow, 0)

    trans = rng.normal(fc.head_trans_mean_cm, fc.head_trans_sd_cm)
    return LatentFace(np.clip(bs, 0.0, 1.0, out=bs), gaze, rot, trans)


_OBSERVED_ROWS = {  # blendshape rows each group's observation noise applies to (eyeLook shapes follow the gaze)
    g: [i for i in FACE_GROUPS[g] if i < 52 and i not in _EYE_LOOK]
    for g in ("eye_gaze", "jaw_mouth", "brow", "cheek_nose")
}


def observe_face(cfg: SynthConfig, face: LatentFace, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """What the camera framing's tracker reports: ([T, 61] float32 A61 values, [T] uint8 face_present)."""
    fr = cfg.framing
    t = face.blendshapes.shape[1]

    def seen(x: np.ndarray, obs: GroupObservation) -> np.ndarray:  # x: [channels, T]
        y = obs.gain * x
        if obs.noise_sd > 0:
            y += rng.standard_normal(x.shape, dtype=np.float32) * obs.noise_sd
        if obs.drift_sd > 0:
            y += _ar1(rng, x.shape, obs.drift_sd, obs.drift_tau_s)
        return y

    out = np.empty((N_FACE, t), dtype=np.float32)
    bs = out[:52]
    bs[:] = face.blendshapes
    for g, rows in _OBSERVED_ROWS.items():
        bs[rows] = seen(bs[rows], getattr(fr, g))
    yaw, pitch = seen(face.gaze_yaw_pitch, fr.eye_gaze)
    for rows, angle in ((_LOOK_POS_YAW, yaw), (_LOOK_NEG_YAW, -yaw), (_LOOK_DOWN, pitch), (_LOOK_UP, -pitch)):
        bs[rows] = angle / _EYE_LOOK_FULL_RAD
    np.clip(bs, 0.0, 1.0, out=bs)
    out[_GAZE] = np.moveaxis(gaze_vector(yaw, pitch), -1, 0)
    out[_ROT] = seen(face.head_rot, fr.head_rot)
    out[_TRANS] = seen(np.repeat(face.head_trans[:, None], t, axis=1), fr.head_trans)

    n_drop = rng.poisson(fr.dropouts_per_min * t * FRAME_S / 60.0)
    starts = rng.uniform(0.0, t * FRAME_S, n_drop)
    lengths = (
        rng.exponential(fr.dropout_mean_s, n_drop) + FRAME_S if fr.dropout_mean_s > 0 else np.full(n_drop, FRAME_S)
    )
    missing = intervals_to_mask(zip(starts.tolist(), (starts + lengths).tolist(), strict=True), t)
    out[:, missing] = 0.0
    return out.T, (~missing).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# 5. waveforms


_WAVETABLE_SIZE = 4096


def synthesize_waveform(
    cfg: SynthConfig, tl: Timeline, cues: PlantedCues, participant: int, traits: Traits, rng: np.random.Generator
) -> np.ndarray:
    """[n_samples] float32 in [-1, 1]: a harmonic voice during this participant's IPUs and backchannels.

    Pitch declines over each IPU and falls by `pitch_fall` over the cue window of IPUs that carry the prosodic cue,
    so the audio agrees with the tokens. One period of the harmonic spectrum is tabulated and read at the running
    phase, which is what makes a three-minute stereo conversation take a fraction of a second."""
    wc = cfg.waveform
    sr = wc.sample_rate_hz
    n_total = n_frames_for(tl.duration_s) * round(sr * FRAME_S)
    sig = np.zeros(n_total, dtype=np.float32)
    mine = tl.ipu_speaker == participant
    bc = tl.bc_listener == participant
    starts = np.concatenate([tl.ipu_start_s[mine], tl.bc_start_s[bc]])
    ends = np.concatenate([tl.ipu_end_s[mine], tl.bc_end_s[bc]])
    cue = np.concatenate([cues.audio_ipu[mine], np.zeros(int(bc.sum()), dtype=bool)])
    s0 = np.round(starts * sr).astype(np.int64)
    lens = np.maximum(np.minimum(np.round(ends * sr).astype(np.int64), n_total) - s0, 0)
    phase0 = rng.uniform(0, 2 * np.pi, len(lens))
    x = np.arange(_WAVETABLE_SIZE) / _WAVETABLE_SIZE
    h = np.arange(1, wc.n_harmonics + 1)[:, None]
    table = (np.sin(2 * np.pi * h * x) / h).sum(axis=0)
    table = (wc.level * table / np.abs(table).max()).astype(np.float32)
    n_fade = round(0.02 * sr)  # 20 ms fades, no clicks
    window_s = cfg.audio.cue_window_s
    for start, n, has_cue, phi in zip(s0.tolist(), lens.tolist(), cue.tolist(), phase0.tolist(), strict=True):
        # one segment at a time: its arrays stay in cache, which beats whole-signal vector ops several times over
        dur_s = n / sr
        tau = np.arange(n, dtype=np.float32) / np.float32(sr)
        syllable = np.float32(2 * np.pi * wc.syllable_rate_hz) * tau + np.float32(phi)
        f0 = (traits.f0_hz * (1 - wc.declination * tau / dur_s)) * (1 + 0.04 * np.sin(syllable))
        if has_cue:
            f0 *= 1 - wc.pitch_fall * np.clip((tau - (dur_s - window_s)) / window_s, 0.0, 1.0)
        cycles = np.cumsum(f0, dtype=np.float64)
        voice = table[(cycles * (_WAVETABLE_SIZE / sr)).astype(np.int64) % _WAVETABLE_SIZE]
        voice *= 0.6 + 0.4 * np.abs(np.sin(0.5 * syllable))
        fade = min(n_fade, n // 2)
        ramp = np.arange(1, fade + 1, dtype=np.float32) / np.float32(n_fade)
        voice[:fade] *= ramp
        voice[n - fade :] *= ramp[::-1]
        sig[start : start + n] = voice
    return sig


def wav_bytes(channels: np.ndarray, sample_rate_hz: int) -> bytes:
    """A 16-bit PCM WAV (stdlib `wave`) of [n_channels, n_samples] floats in [-1, 1]."""
    pcm = np.round(np.clip(channels, -1.0, 1.0) * 32767).astype("<i2").T.copy()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate_hz)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# one conversation


@dataclass
class SynthConversation:
    """Everything generated for conversation `index`: store-ready arrays plus the planted truth."""

    id: str
    index: int
    group: str
    participants: tuple[str, str]
    timeline: Timeline
    cues: PlantedCues
    codes: np.ndarray  # [2, 8, T] int16
    va: np.ndarray  # [2, T] float16
    face: np.ndarray  # [2, T, 61] float16
    face_present: np.ndarray  # [2, T] uint8
    waveform: np.ndarray | None  # [2, n_samples] float32 when audio was requested

    @property
    def n_frames(self) -> int:
        return self.va.shape[1]

    def events(self) -> dict[str, Any]:
        """Compact planted truth for the file header (times rounded to ms)."""
        tl, c = self.timeline, self.cues

        def ms(x: np.ndarray) -> list[float]:
            return [round(float(v), 3) for v in x]

        return {
            "duration_s": round(tl.duration_s, 3),
            "turn_speaker": tl.turn_speaker.tolist(),
            "turn_start_s": ms(tl.turn_start_s),
            "turn_end_s": ms(tl.turn_end_s),
            "handover_cues": {
                "audio": c.audio_ipu[tl.handover_ipus].astype(int).tolist(),
                **{k: getattr(c, k).astype(int).tolist() for k in _FACE_CUES},
            },
            "holds_s": ms(tl.ipu_end_s[tl.ipu_before_hold]),
            "backchannels_s": ms(tl.bc_start_s),
        }


def conversation_id(index: int) -> str:
    return f"synth-{index:06d}"


def generate_conversation(cfg: SynthConfig, seed: int, index: int, audio: bool = False) -> SynthConversation:
    """Conversation `index` of the corpus generated with `seed`: a pure function of (cfg, seed, index)."""
    streams = np.random.default_rng([seed, index]).spawn(6)
    r_floor, r_cues, r_codes, r_face, r_obs, r_wave = streams
    group = index // cfg.conversations_per_group
    pair = r_floor.choice(cfg.participants_per_group, 2, replace=False) + group * cfg.participants_per_group
    traits = [participant_traits(cfg, seed, int(p)) for p in pair]
    tl = sample_timeline(cfg.floor, r_floor)
    cues = sample_cues(cfg, tl, r_cues)
    t = n_frames_for(tl.duration_s)
    va = np.stack([voiced_fraction(tl.speech_intervals(p), t) for p in range(2)])
    va16 = va.astype(np.float16)
    speech = va16 >= 0.5  # from the stored values, so tokens and labels agree on every frame
    w = cfg.audio.cue_window_s
    codes = np.empty((2, N_CODEBOOKS, t), dtype=np.int16)
    face = np.empty((2, t, N_FACE), dtype=np.float16)
    present = np.empty((2, t), dtype=np.uint8)
    for p in range(2):
        sel = (tl.ipu_speaker == p) & cues.audio_ipu
        cue_mask = intervals_to_mask(zip((tl.ipu_end_s[sel] - w).tolist(), tl.ipu_end_s[sel].tolist(), strict=True), t)
        codes[p] = sample_codes(cfg.audio, speech[p], cue_mask, traits[p].voice, r_codes)
        latent = sample_face(cfg, tl, cues, p, va[p], traits[p], r_face)
        obs, present[p] = observe_face(cfg, latent, r_obs)
        face[p] = obs.astype(np.float16)
    waveform = None
    if audio:
        waveform = np.stack([synthesize_waveform(cfg, tl, cues, p, traits[p], r_wave) for p in range(2)])
    return SynthConversation(
        id=conversation_id(index),
        index=index,
        group=f"{cfg.name}-g{group:05d}",
        participants=(participant_id(cfg, int(pair[0])), participant_id(cfg, int(pair[1]))),
        timeline=tl,
        cues=cues,
        codes=codes,
        va=va16,
        face=face,
        face_present=present,
        waveform=waveform,
    )


# ---------------------------------------------------------------------------------------------------------------------
# truth and corpus writing


_GROUP_CUES = {"eye_gaze": ("gaze_return",), "head_rot": ("turn_end_head", "listener_head"),
               "jaw_mouth": ("listener_mouth",), "brow": (), "cheek_nose": (), "head_trans": ()}  # fmt: skip
_CUE_UNITS = {"gaze_return": "rad of gaze angle", "turn_end_head": "rad of head pitch",
              "listener_head": "rad of head pitch", "listener_mouth": "jawOpen"}  # fmt: skip


def truth(cfg: SynthConfig, seed: int, n_conversations: int) -> dict[str, Any]:
    """The planted truth of a corpus: per face group the cues (probability, amplitude, units) and the framing's
    observation noise; the audio cue reliability; the expected floor statistics; the full config."""
    groups = {}
    for g, cue_names in _GROUP_CUES.items():
        planted = []
        for name in cue_names:
            cue = getattr(cfg.cues, name)
            amp = cue.amplitude * (cfg.face.avert_yaw_rad if name == "gaze_return" else 1.0)
            planted.append({"cue": name, "probability": cue.probability, "amplitude": amp, "units": _CUE_UNITS[name],
                            "lead_s": [cue.lead_min_s, cue.lead_max_s]})  # fmt: skip
        obs = getattr(cfg.framing, g)
        groups[g] = {
            "cue_strength": sum(
                c["probability"] * c["amplitude"] for c in planted
            ),  # expected displacement per hand-over
            "cues": planted,
            "observation_gain": obs.gain,
            "observation_noise_sd": obs.noise_sd,
            "observation_drift_sd": obs.drift_sd,
        }
    return {
        "generator": "faceturn.synth",
        "preset": cfg.name,
        "framing": cfg.framing.name,
        "seed": seed,
        "conversations": n_conversations,
        "audio_cue_reliability": cfg.audio.cue_reliability,
        "audio_cue_false_alarm_prob": cfg.audio.cue_false_alarm_prob,
        "groups": groups,
        "expected_statistics": expected_statistics(cfg),
        "config": to_dict(cfg),
    }


@dataclass(frozen=True)
class SynthSummary:
    conversations: int  # in the corpus after this run
    generated: int  # written by this run (the rest were already there)
    hours: float  # of conversation in the corpus
    seconds: float  # wall time of this run


def _extraction(cfg: SynthConfig, seed: int) -> dict[str, Any]:
    return {"generator": "faceturn.synth", "preset": cfg.name, "seed": seed}


def _write_one(cfg: SynthConfig, out: Path, seed: int, audio: bool, corpus: str, index: int) -> None:
    """Generate and write conversation `index` (and its WAV first, so a finished .safetensors implies its audio)."""
    from faceturn.io import atomic_write_bytes
    from faceturn.store import CorpusWriter, ManifestEntry

    writer = CorpusWriter(out, corpus=corpus, framing=cfg.framing.name, extraction=_extraction(cfg, seed))
    sc = generate_conversation(cfg, seed, index, audio=audio)
    audio_rel = None
    if sc.waveform is not None:
        audio_rel = f"{AUDIO_DIR}/{sc.id}.wav"
        atomic_write_bytes(out / audio_rel, wav_bytes(sc.waveform, cfg.waveform.sample_rate_hz))
    entry = ManifestEntry(
        id=sc.id,
        file=writer.path(sc.id).name,
        split="",
        n_frames=sc.n_frames,
        corpus=corpus,
        framing=cfg.framing.name,
        participants=list(sc.participants),
        group=sc.group,
        source=f"faceturn.synth preset={cfg.name} seed={seed} index={index}",
        audio=audio_rel,
    )
    writer.write(to_store(sc, cfg, seed), entry)


def generate_corpus(
    cfg: SynthConfig,
    out_dir: str | Path,
    n_conversations: int,
    seed: int,
    *,
    audio: bool = False,
    corpus_name: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> SynthSummary:
    """Generate conversations 0..n-1 into `out_dir` (store format) plus truth.json, then (re)build the manifest.

    Resumable and deterministic: finished conversations are skipped, and every file is a pure function of
    (cfg, seed, index), whatever `workers` is. A folder generated with another preset, seed, config or audio
    setting is refused rather than mixed into; asking for more conversations extends it.
    """
    import functools
    import time

    from tqdm import tqdm

    from faceturn.io import atomic_write_json
    from faceturn.store import CorpusError, CorpusWriter

    if n_conversations < 1:
        raise ValueError(f"the number of conversations must be >= 1, got {n_conversations}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    out = Path(out_dir)
    info = {**truth(cfg, seed, n_conversations), "waveforms": audio}
    truth_path = out / TRUTH_FILE
    if truth_path.exists():
        try:
            old = json.loads(truth_path.read_text())
        except json.JSONDecodeError as e:
            raise CorpusError(truth_path, f"not valid JSON ({e})") from None
        changed = sorted(k for k in set(old) | set(info) if k != "conversations" and old.get(k) != info.get(k))
        if changed:
            raise CorpusError(truth_path, f"this folder holds a corpus generated with other settings (differs in "
                              f"{', '.join(changed)}); choose another output folder")  # fmt: skip
        info["conversations"] = max(n_conversations, int(old.get("conversations", 0)))
    name = corpus_name or cfg.name
    writer = CorpusWriter(out, corpus=name, framing=cfg.framing.name, extraction=_extraction(cfg, seed))
    atomic_write_json(truth_path, info)
    pending = [i for i in range(n_conversations) if not writer.done(conversation_id(i))]
    job = functools.partial(_write_one, cfg, out, seed, audio, name)
    bar = tqdm(total=len(pending), desc=f"synth {cfg.name}", unit="conv", disable=not progress)
    if workers > 1 and len(pending) > 1:
        from concurrent.futures import ProcessPoolExecutor

        import scipy.signal  # noqa: F401  (imported once here, so forked workers inherit it instead of re-importing)

        with ProcessPoolExecutor(min(workers, len(pending))) as pool:
            for _ in pool.map(job, pending, chunksize=4):
                bar.update()
    else:
        for i in pending:
            job(i)
            bar.update()
    bar.close()
    entries = writer.finalize()
    hours = sum(e.n_frames for e in entries) * FRAME_S / 3600.0
    return SynthSummary(len(entries), len(pending), hours, time.perf_counter() - started)


def to_store(sc: SynthConversation, cfg: SynthConfig, seed: int):
    """The store's Conversation for a generated one (text absent: -1)."""
    from faceturn.store import Conversation

    return Conversation(
        id=sc.id,
        codes=sc.codes,
        text=np.full((2, sc.n_frames), -1, dtype=np.int32),
        va=sc.va,
        face=sc.face,
        face_present=sc.face_present,
        meta={"synth": {"preset": cfg.name, "seed": seed, "index": sc.index, "events": sc.events()}},
    )
