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

from faceturn.prep.media import StreamingResampler, resample
from faceturn.timebase import FRAME_S

SILERO_RATE_HZ = 16_000


@dataclass
class SileroSettings:
    """Silero VAD thresholds (the package's defaults, which suit conversational speech)."""

    threshold: float = 0.5  # speech probability above which a 32 ms window is speech
    min_speech_ms: int = 250  # shorter bursts are dropped
    min_silence_ms: int = 100  # shorter pauses do not split a segment
    speech_pad_ms: int = 30  # added on both sides of each segment


SILERO_WINDOW = 512  # samples at 16 kHz (32 ms): the window Silero scores
_MODEL = None


def _load_silero():
    """A fresh Silero model (it carries state between windows). Importing silero_vad sets torch to one thread; undo
    that."""
    n_threads = torch.get_num_threads()
    with warnings.catch_warnings():  # silero-vad's own deprecated calls (importlib path, torch.jit.load)
        warnings.simplefilter("ignore", DeprecationWarning)
        from silero_vad import load_silero_vad

        model = load_silero_vad()
    torch.set_num_threads(n_threads)
    return model


def _silero_model():
    """The Silero model of whole-file VAD, loaded once per process."""
    global _MODEL
    if _MODEL is None:
        _MODEL = _load_silero()
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


class SileroStream:
    """Live voice activity of one side: Silero's speech probability on each 32 ms window as the audio arrives, as the
    voiced fraction of each 80 ms frame.

    It cannot look ahead, so it has none of `silero_intervals`' minimum durations and padding: a window is speech when
    its probability reaches the threshold. That is for display; a recorded session's stored voice activity is
    `silero_intervals` of the whole recording, as `prepare` computes it. The part of a frame whose window is not
    complete yet takes the newest window's decision, so a frame never waits for the VAD.
    """

    def __init__(self, rate_hz: int, settings: SileroSettings | None = None):
        self.settings = settings or SileroSettings()
        self.model = _load_silero()
        self._resampler = StreamingResampler(rate_hz, SILERO_RATE_HZ)
        self._pending = np.zeros(0, dtype=np.float32)
        self._speech: list[bool] = []  # per complete window

    def push(self, wave: np.ndarray) -> None:
        """Feed the next samples (at the rate given at construction)."""
        self._pending = np.concatenate([self._pending, self._resampler.push(wave)])
        n = len(self._pending) // SILERO_WINDOW
        if n == 0:
            return
        windows = torch.from_numpy(self._pending[: n * SILERO_WINDOW].reshape(n, SILERO_WINDOW).copy())
        self._pending = self._pending[n * SILERO_WINDOW :]
        with torch.inference_mode():
            for w in windows:
                self._speech.append(float(self.model(w, SILERO_RATE_HZ)) >= self.settings.threshold)

    def frame(self, k: int) -> float:
        """Voiced fraction of frame k from the windows scored so far (0 before the first window)."""
        if not self._speech:
            return 0.0
        per_frame = FRAME_S * SILERO_RATE_HZ / SILERO_WINDOW  # 2.5 windows
        lo, hi = k * per_frame, (k + 1) * per_frame
        voiced = 0.0
        for w in range(int(lo), int(np.ceil(hi))):
            speech = self._speech[min(w, len(self._speech) - 1)]
            voiced += speech * (min(hi, w + 1) - max(lo, w))
        return voiced / per_frame
