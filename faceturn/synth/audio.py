"""What the generator makes a participant sound like: Mimi-shaped token streams and, optionally, a waveform.

Tokens: 8 codebooks of 2048. Codebook 0 has a silence vocabulary, a Zipf speech vocabulary with local continuity, and
a "falling pitch" vocabulary: the prosodic turn-end cue, present in the last `cue_window_s` of speech before a yield
with probability `cue_reliability`, and before some holds (false alarms). Acoustic codebooks are noisy functions of
codebook 0 and the speaker's voice.

Waveforms: a harmonic voice per participant whose pitch falls where the prosodic cue is planted, so the audio agrees
with the tokens.
"""

from __future__ import annotations

import io
import wave

import numpy as np

from faceturn.schema import CODEBOOK_SIZE, N_CODEBOOKS
from faceturn.synth.config import AudioConfig, SynthConfig
from faceturn.synth.floor import PlantedCues, Timeline
from faceturn.synth.participants import Traits
from faceturn.timebase import FRAME_S, n_frames_for

_ACOUSTIC_MULT = np.array([1, 3, 5, 7, 11, 13, 17, 19])  # codebook q reads codebook 0 through a different bijection
_WAVETABLE_SIZE = 4096


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
