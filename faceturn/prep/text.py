"""Word-aligned text tokens on the 12.5 Hz grid, in Moshi's PAD/EPAD layout.

Each word is tokenized on its own (SentencePiece, no BOS). Its tokens fill consecutive frames starting with the
frame that contains the word's start time; every other frame is PAD, except that the PAD right before a word
becomes EPAD ("end of padding": a word comes next). A word that starts before the previous word's tokens are
out replaces them, as in moshi-finetune's interleaver. Words without times (Seamless has some) are left out and
counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from faceturn.timebase import time_to_frame


@dataclass
class TextSettings:
    """Which SentencePiece model to use and Moshi's special ids."""

    tokenizer: str = ""  # path of a SentencePiece .model (Moshi's: tokenizer_spm_32k_3.model); "" = no text
    pad_id: int = 3
    epad_id: int = 0


@dataclass(frozen=True)
class Word:
    """One transcribed word; times may be missing (None) in real transcripts."""

    text: str
    start_s: float | None
    end_s: float | None


class TextTokenizer:
    """SentencePiece tokenizer with the frame-placement rule above."""

    def __init__(self, settings: TextSettings):
        import sentencepiece

        self.settings = settings
        self.sp = sentencepiece.SentencePieceProcessor(model_file=settings.tokenizer)

    def frames(self, words: Iterable[Word], n_frames: int) -> tuple[np.ndarray, int]:
        """(tokens [n_frames] int32, number of words left out for lack of a start time)."""
        pad, epad = self.settings.pad_id, self.settings.epad_id
        out = np.full(n_frames, pad, dtype=np.int32)
        words = list(words)
        timed = sorted((w for w in words if w.start_s is not None), key=lambda w: w.start_s)
        n_untimed = len(words) - len(timed)
        starts: dict[int, list[int]] = {}
        for w in timed:
            frame = time_to_frame(max(0.0, w.start_s))
            if frame < n_frames and w.text.strip():
                starts[frame] = self.sp.encode(w.text.strip())  # a later word in the same frame replaces it
        queue: list[int] = []
        for k in range(n_frames):
            if k in starts:
                if k > 0 and out[k - 1] == pad:
                    out[k - 1] = epad
                queue = list(starts[k])
            if queue:
                out[k] = queue.pop(0)
        return out, n_untimed
