"""Voice activity per 12.5 Hz frame: from a corpus' own annotations when it has them, else Silero VAD.

The stored value is the voiced *fraction* of each frame (`timebase.voiced_fraction`), so the labels' "at least half
voiced" rule is applied later and can change without re-preparing. Silero's model ships inside the `silero-vad`
wheel: nothing is downloaded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from faceturn.prep.media import resample

SILERO_RATE_HZ = 16_000


@dataclass
class SileroSettings:
    """Silero VAD thresholds (the package's defaults, which suit conversational speech)."""

    threshold: float = 0.5  # speech probability above which a 32 ms window is speech
    min_speech_ms: int = 250  # shorter bursts are dropped
    min_silence_ms: int = 100  # shorter pauses do not split a segment
    speech_pad_ms: int = 30  # added on both sides of each segment


_MODEL = None


def _silero_model():
    """The Silero model, loaded once per process. Importing silero_vad sets torch to one thread; undo that."""
    global _MODEL
    if _MODEL is None:
        n_threads = torch.get_num_threads()
        with warnings.catch_warnings():  # silero-vad's own deprecated calls (importlib path, torch.jit.load)
            warnings.simplefilter("ignore", DeprecationWarning)
            from silero_vad import load_silero_vad

            _MODEL = load_silero_vad()
        torch.set_num_threads(n_threads)
    return _MODEL


def silero_intervals(
    wave: np.ndarray, rate_hz: int, settings: SileroSettings | None = None
) -> list[tuple[float, float]]:
    """Speech segments [(start_s, end_s)] found by Silero VAD in a mono waveform."""
    from silero_vad import get_speech_timestamps

    s = settings or SileroSettings()
    model = _silero_model()
    x = torch.from_numpy(resample(wave, rate_hz, SILERO_RATE_HZ))
    stamps = get_speech_timestamps(
        x,
        model,
        threshold=s.threshold,
        sampling_rate=SILERO_RATE_HZ,
        min_speech_duration_ms=s.min_speech_ms,
        min_silence_duration_ms=s.min_silence_ms,
        speech_pad_ms=s.speech_pad_ms,
    )
    model.reset_states()
    return [(d["start"] / SILERO_RATE_HZ, d["end"] / SILERO_RATE_HZ) for d in stamps]
