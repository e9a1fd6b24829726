"""One synthetic conversation: the floor process, its planted cues, tokens, faces and (optionally) the waveform.

Conversation i draws from `np.random.default_rng([seed, i])`, split into independent child streams (floor, cue draws,
tokens, face, observation, waveform), so changing a face parameter leaves the floor process and tokens of every
conversation unchanged and waveforms never perturb the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from faceturn.schema import N_CODEBOOKS, N_FACE
from faceturn.store import Conversation
from faceturn.synth.audio import sample_codes, synthesize_waveform
from faceturn.synth.config import LABELS, SynthConfig
from faceturn.synth.face import observe_face, sample_face
from faceturn.synth.floor import FACE_CUES, PlantedCues, Timeline, sample_cues, sample_timeline
from faceturn.synth.participants import participant_id, participant_traits
from faceturn.timebase import intervals_to_mask, n_frames_for, voiced_fraction


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
                **{k: getattr(c, k).astype(int).tolist() for k in FACE_CUES},
            },
            "holds_s": ms(tl.ipu_end_s[tl.ipu_before_hold]),
            "backchannels_s": ms(tl.bc_start_s),
        }


def conversation_id(index: int) -> str:
    """The id (and file stem) of conversation `index`: zero-padded so files sort in generation order."""
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
    speech = va16 >= LABELS.voiced_min_fraction  # from the stored values, so tokens and labels agree on every frame
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


def to_store(sc: SynthConversation, cfg: SynthConfig, seed: int) -> Conversation:
    """The store's Conversation for a generated one (text absent: -1)."""
    return Conversation(
        id=sc.id,
        codes=sc.codes,
        text=np.full((2, sc.n_frames), -1, dtype=np.int32),
        va=sc.va,
        face=sc.face,
        face_present=sc.face_present,
        meta={"synth": {"preset": cfg.name, "seed": seed, "index": sc.index, "events": sc.events()}},
    )
