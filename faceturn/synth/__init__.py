"""Synthetic audio-visual conversations whose turn-taking cues are planted and known.

Why a generator: the study's claims ("the face carries the signal", "gaze matters on tight framing, not on wide")
can only be *tested* on data whose truth is known. Every number lives in a TOML preset (`presets/tight.toml`,
`presets/wide.toml`), every run writes its planted truth to `truth.json`, and the same (preset, seed, index) always
gives the same bytes.

The generative story, in the order the code runs, one module per step:

- `config`: the preset dataclasses and `load_preset`.
- `floor`: the floor process in continuous time (turns, IPUs, pauses, transfer offsets, backchannels), which
  hand-overs carry which cue, and the statistics a preset implies.
- `participants`: per-participant traits (face, voice) that stay the same across conversations.
- `audio`: Mimi-shaped token streams with a prosodic turn-end cue, and optional harmonic waveforms.
- `face`: idle facial dynamics, the planted facial cues, and the camera framing's observation model.
- `conversation`: one conversation from its own random streams, and its store form.
- `truth`: truth.json (what was planted) and whether a model can see it through the framing.
- `writer`: the corpus on disk (resumable, parallel, byte-identical whatever the number of workers).
"""

from __future__ import annotations

from faceturn.synth.config import PRESET_DIR, PRESETS, SynthConfig, load_preset, preset_path
from faceturn.synth.conversation import SynthConversation, conversation_id, generate_conversation, to_store
from faceturn.synth.floor import Timeline, expected_statistics, sample_timeline
from faceturn.synth.participants import participant_traits
from faceturn.synth.truth import OBSERVABLE_SNR, TRUTH_FILE, corpus_truth, planted_expectations
from faceturn.synth.writer import AUDIO_DIR, SynthSummary, generate_corpus

__all__ = [
    "AUDIO_DIR",
    "OBSERVABLE_SNR",
    "PRESETS",
    "PRESET_DIR",
    "TRUTH_FILE",
    "SynthConfig",
    "SynthConversation",
    "SynthSummary",
    "Timeline",
    "conversation_id",
    "corpus_truth",
    "expected_statistics",
    "generate_conversation",
    "generate_corpus",
    "load_preset",
    "participant_traits",
    "planted_expectations",
    "preset_path",
    "sample_timeline",
    "to_store",
]
