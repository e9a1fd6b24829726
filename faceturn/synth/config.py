"""Synthetic-corpus presets: the dataclasses a preset TOML fills, their checks, and `load_preset`.

Every number of the generator is a field here, set by `faceturn/presets/<name>.toml`; units are in the names or the
comments. The checks keep a preset where the turn labels read back exactly the floor process that was planted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceturn.config import load_toml
from faceturn.errors import ConfigError
from faceturn.labels import EventConfig
from faceturn.schema import CODEBOOK_SIZE
from faceturn.timebase import FRAME_S

PRESET_DIR = Path(__file__).parent.parent / "presets"
PRESETS = ("tight", "wide")
LABELS = EventConfig()  # the turn-label definitions (voicing threshold, IPU gap, backchannel ceiling) to agree with


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


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
    ipu_min_s: float  # shortest IPU; above the labels' backchannel ceiling so a turn is never read as a backchannel
    ipu_mean_excess_s: float  # IPU = ipu_min_s + Gamma(ipu_shape, mean ipu_mean_excess_s)
    ipu_shape: float
    pauses_per_turn: float  # Poisson mean of pauses inside a turn
    short_pause_prob: float  # share of pauses shorter than the labels' IPU gap: Uniform[short_pause_min_s, _max_s]
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
        bc_max_s, ipu_gap_s = LABELS.bc_max_s, LABELS.ipu_gap_s
        _check_probabilities(self)
        _check_positive(self, ("duration_min_s", "ipu_mean_excess_s", "ipu_shape", "fto_sd_s", "backchannel_min_s"))
        _check(self.duration_min_s <= self.duration_max_s, "duration_min_s must be <= duration_max_s")
        _check(self.lead_in_s >= 0 and self.tail_s >= 0, "lead_in_s and tail_s must be >= 0")
        _check(self.ipu_min_s >= bc_max_s + 0.2, f"ipu_min_s must be >= {bc_max_s + 0.2} s (backchannel ceiling "
               f"{bc_max_s} s plus frame rounding), got {self.ipu_min_s}")  # fmt: skip
        _check(self.pauses_per_turn >= 0, "pauses_per_turn must be >= 0")
        _check(0 < self.short_pause_min_s <= self.short_pause_max_s < ipu_gap_s - FRAME_S / 2,
               f"short pauses must satisfy 0 < min <= max < {ipu_gap_s - FRAME_S / 2} s so frame rounding never "
               f"turns them into an IPU gap")  # fmt: skip
        _check(self.long_pause_min_s >= ipu_gap_s + FRAME_S, f"long_pause_min_s must be >= {ipu_gap_s + FRAME_S} s")
        _check(self.long_pause_mean_excess_s >= 0, "long_pause_mean_excess_s must be >= 0")
        _check(self.fto_min_s <= self.fto_mean_s <= self.fto_max_s, "need fto_min_s <= fto_mean_s <= fto_max_s")
        _check(self.ipu_min_s + self.fto_min_s > 0.5, "an overlap (-fto_min_s) must stay 0.5 s shorter than ipu_min_s "
               "so the incoming speaker outlasts the outgoing one")  # fmt: skip
        _check(
            self.backchannel_min_s <= self.backchannel_max_s <= bc_max_s - FRAME_S,
            f"need backchannel_min_s <= backchannel_max_s <= {bc_max_s - FRAME_S} s",
        )
        _check(self.backchannel_margin_s >= 0, "backchannel_margin_s must be >= 0")
        _check(self.backchannel_turn_margin_s >= max(0.0, -self.fto_min_s) + ipu_gap_s + 2 * FRAME_S,
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
    """The camera framing's observation model, per face group. For eye_gaze the noise applies to the gaze angles
    (rad); the eyeLook blendshapes and the gaze vector are then computed from the noisy angles, as a tracker would."""

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
