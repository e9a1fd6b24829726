"""Real-corpus preparation: Seamless Interaction and MultiDialog (and Live Link Face takes) into the corpus store.

Every stream lands on the 12.5 Hz grid of `faceturn.timebase`: Mimi codes (`audio_tokens`), faces sampled from the
video at the grid instants and mapped to A61 (`face`), voice activity from the corpus' own annotations or Silero
(`vad`), optional text tokens in Moshi's PAD/EPAD layout (`text`). `pipeline` runs conversations in parallel,
resumably, and logs what it had to skip. Heavy libraries (PyAV, MediaPipe, transformers, SentencePiece, Silero) are
imported inside the functions that use them, so importing this package costs nothing.
"""

from __future__ import annotations

from faceturn.errors import FaceturnError


class BadInput(FaceturnError):
    """Input that cannot be prepared. The message names the file and the problem; the conversation is skipped."""
