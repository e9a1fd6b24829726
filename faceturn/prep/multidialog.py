"""MultiDialog (KAIST) → corpus store.

Input: `data/<subset>/<subset>_chunks_NNNN.tar.gz` (or the older `<subset>/…`), each holding
`<conv_id>/<conv_id>_<utterance><speaker letter>.wav` clips (16 kHz), and metadata JSONL files anywhere under the
root, with the current keys (`file_name, conv_id, utterance_id, from, value, emotion`) or the old ones
(`id, utterance, from, value, emotion, audpath`). The file name is the authority for conversation, utterance index
and speaker (the letter is the actor); metadata adds the transcript. Archives are extracted once into a cache
folder (gzip allows no random access), atomically, so shards and re-runs share them.

Timeline. The release has utterance clips only, not their timing. Without more, each conversation is rebuilt from
utterance order with `GapModel` (a fixed silence between turns, another within a speaker, optional seeded jitter;
negative gaps make overlaps) and flagged `timeline: reconstructed`: turn-taking statistics of such a corpus are the
gap model's, not the actors'. Given full-length recordings (`--recordings`) or videos with sound, each clip is
found in the recording by normalized cross-correlation, searched in utterance order, and placed at its true offset
(`timeline: measured`, with every clip's match score in the header); a clip that matches nowhere rejects the
conversation rather than inventing a time for it. Recordings and videos are assumed to start together.

Video layout: one video per participant (`{conv_id}_{speaker}.mp4`) or one shared video with both faces, whose
faces are given to speakers by correlating mouth movement with each speaker's voice activity (`face.assign_faces`;
correlations and margin are stored, low margins flagged).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.signal import correlate
from tqdm import tqdm

from faceturn.prep import BadInput
from faceturn.prep.audio_tokens import MIMI_RATE_HZ, mimi_frames
from faceturn.prep.face import FaceTrack, assign_faces, extract_face_track, extract_two_faces
from faceturn.prep.media import decode_audio_stream, probe_video, read_audio, resample
from faceturn.prep.pipeline import Job, Tools, Track, assemble, placed_track, write_stereo_wav
from faceturn.prep.text import Word
from faceturn.prep.vad import silero_intervals
from faceturn.store import ManifestEntry
from faceturn.timebase import voiced_fraction

UTTERANCE_RE = re.compile(r"^(?P<conv>.+)_(?P<index>\d+)(?P<speaker>[A-Za-z])\.wav$")
SUBSETS = ("train", "valid_freq", "valid_rare", "test_freq", "test_rare")
STORE_SPLIT = {"train": "train", "valid_freq": "val", "valid_rare": "val", "test_freq": "test", "test_rare": "test"}
EXTRACTED_MARK = ".faceturn-extracted"


@dataclass
class GapModel:
    """Silences that rebuild a conversation from utterance order when the true timing is unknown."""

    turn_gap_s: float = 0.2  # between utterances of different speakers (negative = overlap)
    same_speaker_gap_s: float = 0.4  # between consecutive utterances of one speaker (≥ 0)
    jitter_s: float = 0.0  # uniform ± jitter on every gap, seeded by (seed, conversation id)
    lead_s: float = 0.5  # silence before the first utterance
    tail_s: float = 0.5  # silence after the last
    seed: int = 0


@dataclass
class MultiDialogSettings:
    subsets: tuple[str, ...] = SUBSETS
    gap: GapModel = field(default_factory=GapModel)
    va_source: Literal["silero", "utterance"] = "silero"  # utterance: a clip is voiced from start to end
    text_alignment: Literal["proportional", "none"] = "proportional"  # spread words over the voiced span
    work_dir: str = ""  # where archives are extracted ("" = <out>/.multidialog-extracted)
    recordings: str = ""  # folder of full-length recordings; "" = none
    recording_pattern: str = "{conv_id}.wav"  # may use {speaker} for one recording per participant
    video_root: str = ""  # folder of videos; "" = audio only
    video_layout: Literal["per-participant", "shared"] = "per-participant"
    video_pattern: str = ""  # "" = {conv_id}_{speaker}.mp4 (per participant) or {conv_id}.mp4 (shared)
    match_rate_hz: int = 8000  # cross-correlation rate
    min_match_score: float = 0.5  # normalized cross-correlation below which a clip is "not found"
    min_assignment_margin: float = 0.05  # shared video: below this the face assignment is flagged unsure
    official_splits: bool = True  # train / valid_* / test_* → train / val / test
    framing: str = "tight"


@dataclass(frozen=True)
class Utterance:
    path: str
    conv_id: str
    index: int
    speaker: str
    subset: str
    text: str = ""
    emotion: str = ""


# ---------------------------------------------------------------------------------------------------------------------
# indexing


def _subset_of(parts: tuple[str, ...], name: str = "") -> str:
    for p in (*parts, name):
        for s in SUBSETS:
            if p == s or p.startswith(f"{s}_chunks_") or p.startswith(f"{s}_metadata_"):
                return s
    return ""


def extract_archives(
    root: Path, work_dir: Path, subsets: tuple[str, ...], progress: bool = True
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Extract every `*.tar.gz` of the chosen subsets once; returns the extracted folders and, for archives that
    cannot be read, (archive name, reason).

    Each archive goes to a temporary folder renamed into place when complete, so a killed run or a concurrent shard
    never sees half an archive. Members are extracted with tarfile's "data" filter (no links out, no devices).
    """
    out, problems = [], []
    archives = sorted(p for p in root.rglob("*.tar.gz") if _subset_of(p.relative_to(root).parts, p.name) in subsets)
    for arc in tqdm(archives, desc="extracting", unit="archive", disable=not progress):
        subset = _subset_of(arc.relative_to(root).parts, arc.name)
        dest = work_dir / subset / arc.name.removesuffix(".tar.gz")
        if not (dest / EXTRACTED_MARK).is_file():
            tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(arc, "r:gz") as tf:
                    tf.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                shutil.rmtree(tmp, ignore_errors=True)
                problems.append((arc.name, f"{arc}: unreadable archive ({e})"))
                continue
            (tmp / EXTRACTED_MARK).write_text(arc.name + "\n")
            try:
                tmp.rename(dest)
            except OSError:  # another shard finished first
                shutil.rmtree(tmp, ignore_errors=True)
        out.append(dest)
    return out, problems


def _metadata_row(d: dict) -> tuple[str, dict] | None:
    """(wav basename, normalized row) from a JSONL object with new or old keys; None if it names no wav."""
    audio = d.get("audio")
    path = d.get("file_name") or d.get("audpath") or (audio.get("path") if isinstance(audio, dict) else None)
    if not isinstance(path, str) or not path.endswith(".wav"):
        return None
    text = d.get("value")
    return Path(path).name, {"text": text if isinstance(text, str) else "", "emotion": str(d.get("emotion") or "")}


def read_metadata(root: Path) -> dict[str, dict]:
    """Metadata rows of every `*.jsonl` under root by wav basename (per-archive and combined files agree)."""
    rows: dict[str, dict] = {}
    for path in sorted(root.rglob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            row = _metadata_row(d) if isinstance(d, dict) else None
            if row:
                rows.setdefault(*row)
    return rows


def index_utterances(folders: list[Path], metadata: dict[str, dict]) -> dict[str, list[Utterance]]:
    """Utterances grouped by conversation and sorted by index (as an integer); the first copy of a clip wins."""
    convs: dict[str, list[Utterance]] = {}
    seen: set[str] = set()
    for folder in folders:
        subset = _subset_of(folder.parts)
        for wav in sorted(folder.rglob("*.wav")):
            m = UTTERANCE_RE.match(wav.name)
            if not m or wav.name in seen:  # the same clip extracted twice (cache and by hand)
                continue
            seen.add(wav.name)
            meta = metadata.get(wav.name, {})
            utt = Utterance(str(wav), m["conv"], int(m["index"]), m["speaker"], subset, **meta)
            convs.setdefault(m["conv"], []).append(utt)
    return {k: sorted(v, key=lambda u: u.index) for k, v in sorted(convs.items())}


# ---------------------------------------------------------------------------------------------------------------------
# timelines


def reconstruct_offsets(
    durations_s: list[float], speakers: list[str], gap: GapModel, conv_id: str
) -> tuple[list[float], float]:
    """(start of each utterance, total duration) in seconds from utterance order and the gap model.

    Each utterance starts a gap after the previous one ends; starts never go backwards and a speaker never
    overlaps their own previous utterance, whatever the (negative or jittered) gap says.
    """
    rng = np.random.default_rng([gap.seed, zlib.crc32(conv_id.encode())])
    starts: list[float] = []
    own_end: dict[str, float] = {}
    for i, (dur_s, spk) in enumerate(zip(durations_s, speakers, strict=True)):
        if i == 0:
            start = gap.lead_s
        else:
            base = gap.same_speaker_gap_s if spk == speakers[i - 1] else gap.turn_gap_s
            jitter = rng.uniform(-gap.jitter_s, gap.jitter_s) if gap.jitter_s > 0 else 0.0
            start = max(starts[-1] + durations_s[i - 1] + base + jitter, starts[-1], own_end.get(spk, 0.0))
        starts.append(start)
        own_end[spk] = start + dur_s
    total = max(s + d for s, d in zip(starts, durations_s, strict=True)) + gap.tail_s if starts else 0.0
    return starts, total


def locate_clip(recording: np.ndarray, clip: np.ndarray, search_from: int = 0) -> tuple[int, float]:
    """(offset in samples, normalized cross-correlation in [-1, 1]) of the best match of `clip` in
    `recording[search_from:]`; equal sample rates assumed. The local energy normalization makes a loud
    passage elsewhere unable to outscore the true position."""
    seg = np.asarray(recording[search_from:], dtype=np.float64)
    c = np.asarray(clip, dtype=np.float64)
    if len(c) == 0 or len(seg) < len(c):
        return search_from, 0.0
    num = correlate(seg, c, mode="valid", method="fft")
    energy = np.concatenate([[0.0], np.cumsum(seg * seg)])
    local = energy[len(c) :] - energy[: -len(c)]
    ncc = num / np.sqrt(np.maximum(local, 1e-12) * max(float((c * c).sum()), 1e-12))
    best = int(np.argmax(ncc))
    return search_from + best, float(ncc[best])


# ---------------------------------------------------------------------------------------------------------------------
# one conversation


def _word_times(text: str, intervals: list[tuple[float, float]], start_s: float, end_s: float) -> list[Word]:
    """Words of an utterance spread over its voiced span in proportion to their length (an approximation: the
    corpus has no word times)."""
    words = text.split()
    inside = [(max(a, start_s), min(b, end_s)) for a, b in intervals if b > start_s and a < end_s]
    lo, hi = (inside[0][0], inside[-1][1]) if inside else (start_s, end_s)
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    if not words or hi <= lo:
        return []
    edges = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [Word(w, float(edges[i]), float(edges[i + 1])) for i, w in enumerate(words)]


@dataclass
class MultiDialogJob(Job):
    utterances: list[Utterance] = field(default_factory=list)
    settings: MultiDialogSettings = field(default_factory=MultiDialogSettings)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})

    def _video_paths(self) -> dict[str, Path]:
        s = self.settings
        if not s.video_root:
            return {}
        if s.video_layout == "shared":
            pattern = s.video_pattern or "{conv_id}.mp4"
            return {"shared": Path(s.video_root) / pattern.format(conv_id=self.id)}
        pattern = s.video_pattern or "{conv_id}_{speaker}.mp4"
        return {spk: Path(s.video_root) / pattern.format(conv_id=self.id, speaker=spk) for spk in self.speakers}

    def _references(self, videos: dict[str, Path]) -> dict[str, np.ndarray]:
        """Full-length sound to locate clips in, at 24 kHz: key "all" (one for both speakers) or per speaker."""
        s = self.settings
        if s.recordings:
            if "{speaker}" in s.recording_pattern:
                paths = {spk: Path(s.recordings) / s.recording_pattern.format(conv_id=self.id, speaker=spk)
                         for spk in self.speakers}  # fmt: skip
            else:
                paths = {"all": Path(s.recordings) / s.recording_pattern.format(conv_id=self.id)}
            out = {}
            for key, path in paths.items():
                if not path.is_file():
                    raise BadInput(f"{path}: recording of conversation {self.id} not found")
                wave, rate_hz = read_audio(path)
                out[key] = resample(wave, rate_hz, MIMI_RATE_HZ)
            return out
        if videos:
            out = {}
            for key, path in videos.items():
                if not probe_video(path).has_audio:
                    raise BadInput(
                        f"{path}: video has no sound and no full-length recording was given, so the utterances "
                        "cannot be placed on the video's timeline"
                    )
                out["all" if key == "shared" else key] = decode_audio_stream(path, MIMI_RATE_HZ)
            return out
        return {}

    def _measure(self, clips: list[np.ndarray], refs: dict[str, np.ndarray]) -> tuple[list[int], int, list[float]]:
        s = self.settings
        low = {k: resample(v, MIMI_RATE_HZ, s.match_rate_hz) for k, v in refs.items()}
        ratio = MIMI_RATE_HZ / s.match_rate_hz
        offsets, scores = [], []
        search_from = dict.fromkeys(low, 0)
        for u, clip in zip(self.utterances, clips, strict=True):
            key = "all" if "all" in low else u.speaker
            at, score = locate_clip(low[key], resample(clip, MIMI_RATE_HZ, s.match_rate_hz), search_from[key])
            if score < s.min_match_score:
                raise BadInput(
                    f"{u.path}: utterance not found in the recording of {self.id} (best normalized "
                    f"cross-correlation {score:.2f} < {s.min_match_score})"
                )
            search_from[key] = at
            offsets.append(round(at * ratio))
            scores.append(round(score, 4))
        return offsets, min(len(v) for v in refs.values()), scores

    def build(self, tools: Tools, out_root: Path):
        s = self.settings
        clips = []
        for u in self.utterances:
            wave, rate_hz = read_audio(u.path)
            clips.append(resample(wave, rate_hz, MIMI_RATE_HZ))
        videos = self._video_paths()
        for path in videos.values():
            if not path.is_file():
                raise BadInput(f"{path}: video of conversation {self.id} not found")
        refs = self._references(videos)
        if refs:
            offsets, length, scores = self._measure(clips, refs)
            timeline = {"kind": "measured", "match_scores": scores}
        else:
            starts_s, total_s = reconstruct_offsets(
                [len(c) / MIMI_RATE_HZ for c in clips], [u.speaker for u in self.utterances], s.gap, self.id
            )
            offsets, length = [round(t * MIMI_RATE_HZ) for t in starts_s], round(total_s * MIMI_RATE_HZ)
            timeline = {"kind": "reconstructed", "gap_model": vars(s.gap).copy()}
        n_frames = mimi_frames(length)
        spans = [(o / MIMI_RATE_HZ, (o + len(c)) / MIMI_RATE_HZ) for o, c in zip(offsets, clips, strict=True)]
        tracks, words_approx = [], False
        for spk in self.speakers:
            mine = [i for i, u in enumerate(self.utterances) if u.speaker == spk]
            wave = placed_track(length, [(offsets[i], clips[i]) for i in mine])
            if s.va_source == "utterance":
                intervals = [spans[i] for i in mine]
            else:
                intervals = silero_intervals(wave, MIMI_RATE_HZ, tools.settings.silero)
            words = []
            if s.text_alignment == "proportional":
                for i in mine:
                    words += _word_times(self.utterances[i].text, intervals, *spans[i])
                words_approx = words_approx or bool(words)
            va = voiced_fraction(intervals, n_frames)
            empty = FaceTrack(np.zeros((n_frames, 61), np.float32), np.zeros(n_frames, np.uint8), {"video": None})
            tracks.append(Track(spk, wave, va, words, empty))
        meta: dict = {"source": "multidialog", "timeline": timeline, "utterances": len(self.utterances)}
        if words_approx:
            meta["word_times"] = "proportional to word length within each utterance's voiced span (approximate)"
        self._faces(tracks, videos, n_frames, tools, meta)
        conv = assemble(self.id, tracks, tools, meta)
        waves = [t.wave_24k for t in tracks]
        audio = write_stereo_wav(out_root, self.id, waves) if tools.settings.write_audio else None
        subset = self.utterances[0].subset
        entry = ManifestEntry(
            id=self.id,
            file=f"{self.id}.safetensors",
            split=STORE_SPLIT.get(subset, "") if s.official_splits else "",
            n_frames=conv.n_frames,
            corpus="multidialog",
            framing=s.framing if videos else "none",
            participants=self.speakers,
            group="",
            source={"subset": subset, "utterances": len(self.utterances), "videos": [p.name for p in videos.values()]},
            audio=audio,
            timeline=timeline["kind"],
        )
        return conv, entry

    def _faces(self, tracks: list[Track], videos: dict[str, Path], n_frames: int, tools: Tools, meta: dict) -> None:
        fs = tools.settings.face
        if "shared" in videos:
            face, present = extract_two_faces(videos["shared"], n_frames, fs)
            slots, report = assign_faces(face, present, np.stack([t.va for t in tracks]))
            report["confident"] = bool(report["margin"] >= self.settings.min_assignment_margin)
            meta["face_assignment"] = {**report, "slot_of_speaker": dict(zip(self.speakers, slots, strict=True))}
            for t, slot in zip(tracks, slots, strict=True):
                t.face = FaceTrack(face[slot], present[slot], {"video": videos["shared"].name, "slot": slot})
        else:
            for t in tracks:
                if t.participant in videos:
                    t.face = extract_face_track(videos[t.participant], n_frames, fs)
                    t.face.info["video"] = videos[t.participant].name


def jobs_from_root(root: Path, out: Path, settings: MultiDialogSettings, progress: bool = True) -> list[MultiDialogJob]:
    """Extract archives (once), read metadata, and make one job per conversation; conversations without exactly
    two speakers carry their reason."""
    work = Path(settings.work_dir) if settings.work_dir else out / ".multidialog-extracted"
    folders, problems = extract_archives(root, work, settings.subsets, progress)
    folders += [root / "data" / s for s in settings.subsets if (root / "data" / s).is_dir()]
    convs = index_utterances(folders, read_metadata(root))
    jobs = [MultiDialogJob(id=name, error=reason) for name, reason in problems]
    for conv_id, utts in convs.items():
        speakers = sorted({u.speaker for u in utts})
        error = ""
        if len(speakers) == 1:
            error = f"{utts[0].path}: missing partner (conversation {conv_id} has only speaker {speakers[0]})"
        elif len(speakers) > 2:
            error = f"{utts[0].path}: conversation {conv_id} has {len(speakers)} speakers ({', '.join(speakers)})"
        seen = [u.index for u in utts]
        if len(set(seen)) != len(seen):
            error = error or f"{utts[0].path}: conversation {conv_id} repeats utterance indices"
        jobs.append(MultiDialogJob(id=conv_id, error=error, utterances=utts, settings=settings))
    return jobs
