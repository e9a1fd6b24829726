"""Faces (A61): the true facial behaviour of a participant, the planted turn cues, and what a camera framing's tracker
reports of it.

Idle dynamics carry no turn information beyond what people really show while talking: blinks, head sway,
speech-driven mouth, smiles, brow noise unrelated to turns, gaze aversion while speaking. The planted cues: the
yielding speaker's gaze returns to the listener and the head lifts toward the listener; the next speaker raises the
head and opens the mouth before taking the turn. A per-clip constant head translation sits at camera scale (tens of
cm). The observation model then sees each face group as gain · true + white noise + slow drift, with face dropouts
(face_present = 0, face zeros): `tight` framing keeps gaze clean, `wide` all but destroys it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter, lfilter_zi

from faceturn.schema import CHANNEL_INDEX, FACE_GROUPS, N_FACE, gaze_vector
from faceturn.synth.config import GroupObservation, SynthConfig
from faceturn.synth.floor import PlantedCues, Timeline
from faceturn.synth.participants import Traits
from faceturn.timebase import FRAME_S, duration_to_frames, intervals_to_mask, time_to_frame


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], sd: float, tau_s: float) -> np.ndarray:
    """Stationary AR(1) noise along the last axis with standard deviation `sd` and time constant `tau_s`."""
    if sd == 0:
        return np.zeros(shape)
    a = math.exp(-FRAME_S / tau_s)
    x = rng.standard_normal(shape) * (sd * math.sqrt(1 - a * a))
    x[..., 0] = rng.standard_normal(shape[:-1]) * sd
    return lfilter([1.0], [1.0, -a], x, axis=-1)


def _smooth(x: np.ndarray, tau_s: float) -> np.ndarray:
    """One-pole low-pass (unit DC gain) along the last axis, started at the first value."""
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
