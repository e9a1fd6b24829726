"""Per-participant traits: what makes a participant look and sound the same in every conversation they are in.

Traits come from their own random stream keyed by (seed, participant), which no conversation's stream can reach, so a
participant's face and voice do not depend on which conversations were generated or in which order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceturn.schema import CHANNEL_INDEX, CODEBOOK_SIZE, N_CODEBOOKS
from faceturn.synth.config import SynthConfig


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
    """The traits of participant `participant` of the corpus generated with `seed`."""
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
    """The manifest's participant id: the preset name keeps participants of different presets apart."""
    return f"{cfg.name}-p{participant:05d}"
