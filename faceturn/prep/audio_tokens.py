"""Mimi audio tokens through Hugging Face `transformers` (`MimiModel`): 24 kHz in, 8 codebooks at 12.5 Hz out.

Why streaming: a ten-minute track at 24 kHz would need gigabytes of activations in one forward pass. Mimi is
causal, and `transformers` can carry its convolution padding and attention caches across calls, so encoding in
chunks of whole frames gives exactly the codes of one pass (a test checks it) with memory bounded by the chunk.
The two participants of a conversation have equal length and are encoded as one batch. A last partial frame is
completed with silence (Mimi's frame count is ceil(samples / 1920)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from faceturn.errors import ConfigError
from faceturn.prep.media import resample
from faceturn.schema import CODEBOOK_SIZE, N_CODEBOOKS

MIMI_RATE_HZ = 24_000
MIMI_FRAME_SAMPLES = 1920  # 80 ms at 24 kHz


@dataclass
class MimiSettings:
    """Which Mimi to use and how to run it."""

    model: str = "kyutai/mimi"  # local folder (save_pretrained layout) or Hugging Face hub id
    device: str = "auto"  # "auto" = CUDA when available, else CPU
    chunk_s: float = 30.0  # streaming chunk (rounded down to whole 80 ms frames)
    n_codebooks: int = N_CODEBOOKS


def mimi_frames(n_samples_24k: int) -> int:
    """Frames Mimi emits for a 24 kHz signal: a partial last frame counts (ceil(samples / 1920))."""
    return math.ceil(n_samples_24k / MIMI_FRAME_SAMPLES)


class MimiEncoder:
    """Turns mono waveforms into Mimi codes [n, 8, T] (int16), loading the model once."""

    def __init__(self, settings: MimiSettings | None = None, model: Any = None):
        self.settings = settings or MimiSettings()
        if self.settings.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(self.settings.device)
        if model is None:
            from transformers import MimiModel

            model = MimiModel.from_pretrained(self.settings.model)
        self.model = model.to(self.device).eval()
        card = int(self.model.config.codebook_size)
        if card > CODEBOOK_SIZE:
            raise ConfigError(f"Mimi model {self.settings.model!r} has {card} codes per codebook, at most "
                              f"{CODEBOOK_SIZE} fit the store")  # fmt: skip
        if int(self.model.config.num_quantizers) < self.settings.n_codebooks:
            raise ConfigError(
                f"Mimi model {self.settings.model!r} has {self.model.config.num_quantizers} codebooks, "
                f"{self.settings.n_codebooks} requested"
            )

    def encode(self, waves: list[np.ndarray], rate_hz: int) -> np.ndarray:
        """Codes [len(waves), 8, T] int16 for equally long mono waveforms at `rate_hz` (resampled to 24 kHz)."""
        lengths = {len(w) for w in waves}
        if len(lengths) != 1:
            raise ValueError(f"waveforms in one batch must be equally long, got lengths {sorted(lengths)}")
        batch = np.stack([resample(w, rate_hz, MIMI_RATE_HZ) for w in waves])
        n_samples = batch.shape[1]
        # streaming emits whole frames only: pad the last partial frame with silence
        batch = np.pad(batch, ((0, 0), (0, mimi_frames(n_samples) * MIMI_FRAME_SAMPLES - n_samples)))
        chunk = max(1, int(self.settings.chunk_s * MIMI_RATE_HZ) // MIMI_FRAME_SAMPLES) * MIMI_FRAME_SAMPLES
        x = torch.from_numpy(batch).to(self.device)[:, None, :]
        out = []
        enc_cache = pad_cache = None
        with torch.inference_mode():
            for start in range(0, batch.shape[1], chunk):
                res = self.model.encode(
                    x[..., start : start + chunk],
                    num_quantizers=self.settings.n_codebooks,
                    encoder_cache=enc_cache,
                    padding_cache=pad_cache,
                    use_streaming=True,
                    return_dict=True,
                )
                enc_cache, pad_cache = res.encoder_cache, res.padding_cache
                out.append(res.audio_codes.cpu())
        codes = torch.cat(out, dim=-1).numpy()
        if codes.shape[-1] != mimi_frames(n_samples):
            raise RuntimeError(f"Mimi returned {codes.shape[-1]} frames for {n_samples} samples, "
                               f"expected {mimi_frames(n_samples)}")  # fmt: skip
        return codes.astype(np.int16)
