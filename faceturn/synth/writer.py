"""Writing a synthetic corpus: conversations in the store format, their WAVs, truth.json and the manifest.

Generation is resumable and parallel without changing a byte: every file is a pure function of (cfg, seed, index),
finished conversations are skipped, and the manifest is rebuilt from what is on disk.
"""

from __future__ import annotations

import functools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from faceturn.errors import CorpusError, FaceturnError
from faceturn.io import atomic_write_bytes, atomic_write_json
from faceturn.store import CorpusWriter, ManifestEntry
from faceturn.synth.audio import wav_bytes
from faceturn.synth.config import SynthConfig
from faceturn.synth.conversation import conversation_id, generate_conversation, to_store
from faceturn.synth.truth import TRUTH_FILE, corpus_truth
from faceturn.timebase import FRAME_S

AUDIO_DIR = "audio"


@dataclass(frozen=True)
class SynthSummary:
    """What `generate_corpus` did, for the command's one-line report."""

    conversations: int  # in the corpus after this run
    generated: int  # written by this run (the rest were already there)
    hours: float  # of conversation in the corpus
    seconds: float  # wall time of this run


def _extraction(cfg: SynthConfig, seed: int) -> dict[str, Any]:
    return {"generator": "faceturn.synth", "preset": cfg.name, "seed": seed}


def _write_one(cfg: SynthConfig, out: Path, seed: int, audio: bool, corpus: str, index: int) -> None:
    """Generate and write conversation `index` (and its WAV first, so a finished .safetensors implies its audio)."""
    writer = CorpusWriter(out, corpus=corpus, framing=cfg.framing.name, extraction=_extraction(cfg, seed))
    sc = generate_conversation(cfg, seed, index, audio=audio)
    audio_rel = None
    if sc.waveform is not None:
        audio_rel = f"{AUDIO_DIR}/{sc.id}.wav"
        atomic_write_bytes(out / audio_rel, wav_bytes(sc.waveform, cfg.waveform.sample_rate_hz))
    entry = ManifestEntry(
        id=sc.id,
        file=writer.path(sc.id).name,
        split="",
        n_frames=sc.n_frames,
        corpus=corpus,
        framing=cfg.framing.name,
        participants=list(sc.participants),
        group=sc.group,
        source=f"faceturn.synth preset={cfg.name} seed={seed} index={index}",
        audio=audio_rel,
    )
    writer.write(to_store(sc, cfg, seed), entry)


def generate_corpus(
    cfg: SynthConfig,
    out_dir: str | Path,
    n_conversations: int,
    seed: int,
    *,
    audio: bool = False,
    corpus_name: str | None = None,
    workers: int = 1,
    progress: bool = True,
) -> SynthSummary:
    """Generate conversations 0..n-1 into `out_dir` (store format) plus truth.json, then (re)build the manifest.

    Resumable and deterministic: finished conversations are skipped, and every file is a pure function of
    (cfg, seed, index), whatever `workers` is. A folder generated with another preset, seed, config or audio
    setting is refused rather than mixed into; asking for more conversations extends it.
    """
    if n_conversations < 1:
        raise FaceturnError(f"the number of conversations must be >= 1, got {n_conversations}")
    if workers < 1:
        raise FaceturnError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    out = Path(out_dir)
    info = {**corpus_truth(cfg, seed, n_conversations), "waveforms": audio}
    truth_path = out / TRUTH_FILE
    if truth_path.exists():
        try:
            old = json.loads(truth_path.read_text())
        except json.JSONDecodeError as e:
            raise CorpusError(f"{truth_path}: not valid JSON ({e})") from None
        changed = sorted(k for k in set(old) | set(info) if k != "conversations" and old.get(k) != info.get(k))
        if changed:
            raise CorpusError(f"{truth_path}: this folder holds a corpus generated with other settings (differs in "
                              f"{', '.join(changed)}); choose another output folder")  # fmt: skip
        info["conversations"] = max(n_conversations, int(old.get("conversations", 0)))
    name = corpus_name or cfg.name
    writer = CorpusWriter(out, corpus=name, framing=cfg.framing.name, extraction=_extraction(cfg, seed))
    atomic_write_json(truth_path, info)
    pending = [i for i in range(n_conversations) if not writer.done(conversation_id(i))]
    job = functools.partial(_write_one, cfg, out, seed, audio, name)
    bar = tqdm(total=len(pending), desc=f"synth {cfg.name}", unit="conv", disable=not progress)
    if workers > 1 and len(pending) > 1:
        with ProcessPoolExecutor(min(workers, len(pending))) as pool:
            for _ in pool.map(job, pending, chunksize=4):
                bar.update()
    else:
        for i in pending:
            job(i)
            bar.update()
    bar.close()
    entries = writer.finalize()
    hours = sum(e.n_frames for e in entries) * FRAME_S / 3600.0
    return SynthSummary(len(entries), len(pending), hours, time.perf_counter() - started)
