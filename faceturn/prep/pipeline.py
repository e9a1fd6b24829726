"""Running preparation over many conversations: parallel, sharded, resumable, and honest about what it skipped.

A corpus module turns its input into `Job`s (one per conversation; a job found unusable while indexing carries
its reason). `run_jobs` drops jobs already written (the store writes each file atomically, so a killed run leaves
finished files whole and nothing else), drops jobs recorded in `skipped*.jsonl` by an earlier run, runs the rest
in `--jobs` processes (each loads Mimi, the landmarker and friends once), appends every skip to the log as it
happens, rebuilds the manifest and prints a summary. Bad input never stops a run; an internal error in one
conversation is logged, retried on the next run, and makes the exit status 1. A run that ended without an internal
error also writes its summary as shards/<i>-of-<n>.json, which marks the shard finished for `--executor slurm`.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import traceback
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceturn.config import to_dict
from faceturn.errors import ConfigError
from faceturn.io import atomic_write_bytes, atomic_write_json
from faceturn.prep import BadInput
from faceturn.prep.audio_tokens import MIMI_RATE_HZ, MimiEncoder, MimiSettings, mimi_frames
from faceturn.prep.face import FaceSettings, FaceTrack, resolve_face_model
from faceturn.prep.media import read_audio, resample
from faceturn.prep.text import TextSettings, TextTokenizer, Word
from faceturn.prep.vad import SileroSettings
from faceturn.store import DEFAULT_SPLITS, Conversation, Corpus, CorpusWriter
from faceturn.timebase import FRAME_S

SKIP_LOG = "skipped.jsonl"


def shard_summary(index: int, count: int) -> str:
    """Where a run over shard `index` of `count` (0 of 1: everything) leaves its summary, relative to the corpus
    folder, once it ended without an internal error: `prepare --executor slurm` counts a shard with it as finished."""
    return f"shards/{index}-of-{count}.json"


@dataclass
class PrepSettings:
    """What every corpus shares: extraction models and how the run is spread out."""

    mimi: MimiSettings = field(default_factory=MimiSettings)
    face: FaceSettings = field(default_factory=FaceSettings)
    text: TextSettings = field(default_factory=TextSettings)
    silero: SileroSettings = field(default_factory=SileroSettings)
    jobs: int = 1  # worker processes
    shard_index: int = 0  # this process prepares jobs shard_index, shard_index + shard_count, ... (sorted by id)
    shard_count: int = 1
    retry_skipped: bool = False  # also retry conversations an earlier run logged as bad input
    write_audio: bool = False  # also write audio/<id>.wav: 24 kHz stereo PCM16, one channel per participant
    progress: bool = True


class Tools:
    """The heavy objects one process needs, built once (Mimi, tokenizer); the face model is checked up front."""

    def __init__(self, settings: PrepSettings, mimi_model: Any = None, need_face: bool = True):
        self.settings = settings
        self.mimi = MimiEncoder(settings.mimi, model=mimi_model)
        self.text = TextTokenizer(settings.text) if settings.text.tokenizer else None
        if need_face:
            resolve_face_model(settings.face.model)


def extraction_settings(settings: PrepSettings) -> dict:
    """The settings stored in every file's header (the same whatever --jobs, so re-runs reproduce the bytes)."""
    return {
        "mimi": {"model": settings.mimi.model, "n_codebooks": settings.mimi.n_codebooks, "rate_hz": MIMI_RATE_HZ},
        "face": to_dict(settings.face),
        "text": to_dict(settings.text) if settings.text.tokenizer else None,
        "silero": to_dict(settings.silero),
    }


@dataclass
class Track:
    """One participant's streams before tokenization: audio at 24 kHz, voice activity and face on the grid."""

    participant: str
    wave_24k: np.ndarray  # float32 mono
    va: np.ndarray  # [T] voiced fraction
    words: list[Word]
    face: FaceTrack


def assemble(conv_id: str, tracks: list[Track], tools: Tools, meta: dict) -> Conversation:
    """A store Conversation from two tracks: Mimi codes (one batch), text tokens, voice activity and faces."""
    n_frames = mimi_frames(len(tracks[0].wave_24k))
    for t in tracks:
        if len(t.va) != n_frames or len(t.face.face) != n_frames:
            raise RuntimeError(f"{conv_id}: streams of {t.participant} are not {n_frames} frames long")
    codes = tools.mimi.encode([t.wave_24k for t in tracks], MIMI_RATE_HZ)
    text = np.full((2, n_frames), -1, dtype=np.int32)
    untimed = [0, 0]
    if tools.text is not None:
        for p, t in enumerate(tracks):
            text[p], untimed[p] = tools.text.frames(t.words, n_frames)
    meta = {
        **meta,
        "participants": [t.participant for t in tracks],
        "face_tracks": [t.face.info for t in tracks],
        "words_without_times": untimed,
    }
    return Conversation(
        id=conv_id,
        codes=codes,
        text=text,
        va=np.stack([t.va for t in tracks]).astype(np.float16),
        face=np.stack([t.face.face for t in tracks]).astype(np.float16),
        face_present=np.stack([t.face.present for t in tracks]).astype(np.uint8),
        meta=meta,
    )


def read_tracks_24k(folder: Path, participants: list[str]) -> tuple[list[np.ndarray], int]:
    """`<folder>/<name>.wav` of each participant at 24 kHz, all cut to the shortest; and their length in frames."""
    waves = []
    for p in participants:
        wave, rate_hz = read_audio(folder / f"{p}.wav")
        waves.append(resample(wave, rate_hz, MIMI_RATE_HZ))
    n = min(len(w) for w in waves)
    return [w[:n] for w in waves], mimi_frames(n)


def write_stereo_wav(root: Path, conv_id: str, waves_24k: list[np.ndarray]) -> str:
    """audio/<id>.wav (24 kHz, PCM16, channel p = participant p), written atomically; returns the relative path."""
    import soundfile as sf

    buf = io.BytesIO()
    stereo = np.clip(np.stack(waves_24k, axis=1), -1.0, 1.0)  # PCM16 would wrap, not clip
    sf.write(buf, stereo, MIMI_RATE_HZ, subtype="PCM_16", format="WAV")
    rel = f"audio/{conv_id}.wav"
    atomic_write_bytes(root / rel, buf.getvalue())
    return rel


@dataclass
class Job:
    """One conversation to prepare. `build(tools, out_root)` returns (Conversation, ManifestEntry) or raises
    BadInput; `error` is set when indexing already found the conversation unusable (e.g. a missing partner)."""

    id: str
    error: str = ""

    def build(self, tools: Tools, out_root: Path) -> tuple[Any, Any]:
        raise NotImplementedError  # each corpus defines its job type


@dataclass
class Outcome:
    id: str
    status: str  # "written", "bad_input", "internal_error"
    reason: str = ""


# one per worker process
_TOOLS: Tools | None = None
_WRITER_ARGS: tuple = ()


def _init_worker(settings: PrepSettings, writer_args: tuple, n_threads: int, need_face: bool) -> None:
    global _TOOLS, _WRITER_ARGS
    torch.set_num_threads(n_threads)
    _TOOLS = Tools(settings, need_face=need_face)
    _WRITER_ARGS = writer_args


def _run_job(job: Job, tools: Tools | None = None, writer_args: tuple = ()) -> Outcome:
    tools = tools or _TOOLS
    writer = CorpusWriter(*(writer_args or _WRITER_ARGS))
    try:
        conv, entry = job.build(tools, writer.root)
        writer.write(conv, entry)
    except BadInput as e:
        return Outcome(job.id, "bad_input", str(e))
    except Exception as e:  # a bug or an unforeseen file: log it, keep going, retry next run
        where = traceback.extract_tb(e.__traceback__)[-1]
        reason = f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})"
        return Outcome(job.id, "internal_error", reason)
    return Outcome(job.id, "written")


def _skip_log_name(settings: PrepSettings) -> str:
    if settings.shard_count == 1:
        return SKIP_LOG
    return f"skipped.{settings.shard_index}-of-{settings.shard_count}.jsonl"


def read_skip_logs(root: Path) -> dict[str, dict]:
    """Latest skip record per conversation id over every skipped*.jsonl in a corpus folder."""
    out: dict[str, dict] = {}
    for path in sorted(Path(root).glob("skipped*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(rec, dict) and "id" in rec:
                out[rec["id"]] = rec
    return out


def _log_skip(path: Path, outcome: Outcome) -> None:
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # a line cut by a kill: do not glue the next record to it
                fh.write(b"\n")
        fh.write((json.dumps({"id": outcome.id, "kind": outcome.status, "reason": outcome.reason}) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())


def shard(jobs: Iterable[Job], index: int, count: int) -> list[Job]:
    """Jobs index, index + count, ... of the id-sorted list: disjoint shards that together cover everything."""
    if not (count >= 1 and 0 <= index < count):
        raise ConfigError(f"shard {index}/{count}: need 0 <= i < n")
    return sorted(jobs, key=lambda j: j.id)[index::count]


def run_jobs(
    jobs: Iterable[Job],
    out: Path,
    corpus: str,
    framing: str,
    settings: PrepSettings,
    splits: dict[str, float] | None = None,
    tools: Tools | None = None,
    describe: str = "prepare",
    need_face: bool = True,
) -> dict:
    """Prepare `jobs` into corpus folder `out`; returns (and prints) the summary. See the module docstring."""
    out = Path(out)
    mine = shard(jobs, settings.shard_index, settings.shard_count)
    if need_face:
        resolve_face_model(settings.face.model)  # fail before any work
    extraction = extraction_settings(settings)
    writer = CorpusWriter(out, corpus, framing, extraction)
    writer_args = (out, corpus, framing, extraction)
    log_path = out / _skip_log_name(settings)
    logged = read_skip_logs(out)
    counts: Counter = Counter()
    outcomes: list[Outcome] = []
    todo = []
    for job in mine:
        if not job.error and writer.done(job.id):
            counts["already_done"] += 1
        elif job.id in logged and logged[job.id].get("kind") != "internal_error" and not settings.retry_skipped:
            counts["skipped_before"] += 1
        elif job.error:
            outcomes.append(Outcome(job.id, "bad_input", job.error))
            _log_skip(log_path, outcomes[-1])
            counts["bad_input"] += 1
        else:
            todo.append(job)
    bar = tqdm(total=len(todo), desc=describe, unit="conv", disable=not settings.progress)

    def record(o: Outcome) -> None:
        outcomes.append(o)
        counts[o.status] += 1
        if o.status != "written":
            _log_skip(log_path, o)
        bar.set_postfix(written=counts["written"], skipped=counts["bad_input"] + counts["internal_error"])
        bar.update()

    if todo and (settings.jobs <= 1 or len(todo) == 1):
        tools = tools or Tools(settings, need_face=need_face)
        for job in todo:
            record(_run_job(job, tools, writer_args))
    elif todo:
        n_threads = max(1, (os.cpu_count() or 1) // settings.jobs)
        with ProcessPoolExecutor(
            settings.jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(settings, writer_args, n_threads, need_face),
        ) as pool:
            futures = {pool.submit(_run_job, job): job.id for job in todo}
            for fut in as_completed(futures):
                try:
                    record(fut.result())
                except BrokenProcessPool:  # a worker died (native crash, out of memory): retried next run
                    record(Outcome(futures[fut], "internal_error", "worker process died while preparing it"))
    bar.close()
    entries = writer.finalize(splits or DEFAULT_SPLITS)
    corpus_frames = sum(e.n_frames for e in entries)
    present = 0
    if entries:
        reader = Corpus(out, validate=False)
        present = sum(int(np.asarray(reader.load(e.id, validate=False).face_present).sum()) for e in entries)
    skips = [o for o in outcomes if o.status != "written"]
    summary = {
        "corpus": str(out),
        "conversations": len(entries),
        "hours": round(corpus_frames * FRAME_S / 3600, 4),
        "written_now": counts["written"],
        "already_done": counts["already_done"],
        "skipped_now": counts["bad_input"] + counts["internal_error"],
        "skipped_before": counts["skipped_before"],
        "internal_errors": counts["internal_error"],
        "face_present_rate": round(present / (2 * corpus_frames), 4) if corpus_frames else 0.0,
        "skip_reasons": dict(Counter(_reason_kind(o.reason) for o in skips).most_common()),
        "skip_log": str(log_path),
    }
    print(format_summary(summary))
    if not counts["internal_error"]:
        atomic_write_json(out / shard_summary(settings.shard_index, settings.shard_count), summary)
    return summary


def _reason_kind(reason: str) -> str:
    """The problem part of "path: problem (details)", for counting skips by kind."""
    problem = reason.rsplit(": ", 1)[-1] if ": " in reason else reason
    return problem.split(" (")[0].strip()


def format_summary(s: dict) -> str:
    lines = [
        f"{s['corpus']}: {s['conversations']} conversations, {s['hours']:.3f} h; this run wrote {s['written_now']}, "
        f"found {s['already_done']} already done, skipped {s['skipped_now']} "
        f"(+{s['skipped_before']} skipped by earlier runs); face present in {100 * s['face_present_rate']:.1f} % "
        "of participant-frames"
    ]
    lines += [f"  skipped {n}×: {kind}" for kind, n in s["skip_reasons"].items()]
    if s["skipped_now"]:
        lines.append(f"  reasons per conversation: {s['skip_log']}")
    if s["internal_errors"]:
        lines.append(f"  {s['internal_errors']} internal errors: please report them; they are retried on the next run")
    return "\n".join(lines)


def placed_track(length: int, pieces: Iterable[tuple[int, np.ndarray]]) -> np.ndarray:
    """A zero signal of `length` samples with each (offset, clip) added in place (clipped at the end)."""
    out = np.zeros(length, dtype=np.float32)
    for start, clip in pieces:
        stop = min(length, start + len(clip))
        if stop > start >= 0:
            out[start:stop] += clip[: stop - start]
    return out
