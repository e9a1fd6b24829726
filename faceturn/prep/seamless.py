"""Seamless Interaction (Meta) → corpus store.

Input: WebDataset shards `<label>/<split>/<BBBB>/<AAAA>.tar` and/or extracted folders
`<label>/<split>/<BBBB>/<AAAA>/<file_id>.{wav,json,npz,mp4}`, in any mix. One bundle per participant; the two
participants of an interaction share `V.._S.._I..` and often sit in different archives. Each file is a full-length
track of the interaction, all starting at t = 0, so the dyad is the two tracks overlaid and cut to the shorter.

Streams: Mimi codes from the WAV (48 kHz → 24 kHz); voice activity from the JSON's `metadata:vad` (else its word
times, else Silero); words from `metadata:transcript` (null times are left out); faces from the MP4 sampled on the
12.5 Hz grid by timestamp (so 29.97 fps is right), cropped around the face from the NPZ's whole-body keypoints
(annotation frame i is at i / the video's real fps) or, without them, a face detector.

Rejected with a reason: files whose name is not a file id, interactions without exactly two usable participants,
empty or corrupt members (0-sample WAV, MP4 without a video stream or truncated, NPZ with N = 0, unreadable JSON),
video and audio of different lengths, partners of different lengths.
"""

from __future__ import annotations

import csv
import json
import math
import re
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from faceturn.prep import BadInput
from faceturn.prep.audio_tokens import MIMI_RATE_HZ, mimi_frames
from faceturn.prep.face import extract_face_track, face_boxes_from_wholebody
from faceturn.prep.media import audio_frames, probe_video, read_audio, resample
from faceturn.prep.pipeline import Job, Tools, Track, assemble, write_stereo_wav
from faceturn.prep.text import Word
from faceturn.prep.vad import silero_intervals
from faceturn.store import ManifestEntry
from faceturn.timebase import voiced_fraction

FILE_ID_RE = re.compile(r"^(?P<vendor>V\d{2})_(?P<session>S\d+)_(?P<interaction>I\d+)_P(?P<participant>\d+[A-Za-z]?)$")
LABELS = ("improvised", "naturalistic")
SPLITS = ("train", "dev", "test")
STORE_SPLIT = {"train": "train", "dev": "val", "test": "test"}
EXTS = ("wav", "json", "npz", "mp4")
REQUIRED = ("wav", "json", "mp4")  # the NPZ only helps cropping
NPZ_BOX_KEYS = ("boxes_and_keypoints:keypoints", "boxes_and_keypoints:is_valid_box")


@dataclass
class SeamlessSettings:
    """What to read and how strict to be."""

    labels: tuple[str, ...] = LABELS
    splits: tuple[str, ...] = SPLITS
    va_source: Literal["auto", "annotations", "silero"] = "auto"  # auto: the JSON's VAD, else its words, else Silero
    max_av_mismatch_s: float = 1.0  # a participant's video and audio may differ this much in length
    max_partner_mismatch_s: float = 1.0  # the two participants' audio may differ this much
    max_npz_frame_mismatch: float = 0.02  # NPZ frame count vs video's, relative; beyond it keypoints are not used
    official_splits: bool = True  # keep Seamless' dev/test/train as the store's val/test/train
    framing: str = "wide"


@dataclass(frozen=True)
class Member:
    """Where one file of a bundle lives: a plain file, or a byte range of a tar archive."""

    container: str
    offset: int = -1  # data offset inside the tar; -1 = `container` is the file itself
    size: int = 0


@dataclass
class Bundle:
    """One participant's files."""

    file_id: str
    label: str
    split: str
    archive: str  # "<BBBB>/<AAAA>"
    files: dict[str, Member] = field(default_factory=dict)

    @property
    def parts(self) -> dict[str, str]:
        return FILE_ID_RE.match(self.file_id).groupdict()

    @property
    def interaction(self) -> str:
        p = self.parts
        return f"{p['vendor']}_{p['session']}_{p['interaction']}"

    @property
    def participant(self) -> str:
        """Participant ids are unique only within a vendor: keep the vendor, and the raw suffix (P1281A)."""
        p = self.parts
        return f"{p['vendor']}_P{p['participant']}"


def _place(rel_parts: tuple[str, ...]) -> tuple[str, str, str]:
    """(label, split, "BBBB/AAAA") from a path relative to the root; "" where the path does not say."""
    label = next((p for p in rel_parts if p in LABELS), "")
    split = next((p for p in rel_parts if p in SPLITS), "")
    digits = [p for p in rel_parts if re.fullmatch(r"\d{4}", p)]
    return label, split, "/".join(digits[-2:])


def index_root(root: Path, settings: SeamlessSettings) -> tuple[dict[str, list[Bundle]], list[tuple[str, str]]]:
    """Bundles grouped by interaction, plus (name, reason) for files that are not Seamless files."""
    bundles: dict[str, Bundle] = {}
    problems: list[tuple[str, str]] = []

    def add(file_name: str, rel_parts: tuple[str, ...], member: Member, where: str) -> None:
        stem, _, ext = file_name.partition(".")
        if ext not in EXTS:
            return
        if not FILE_ID_RE.match(stem):
            problems.append((stem, f"{where}: file name {file_name!r} is not a Seamless file id"))
            return
        label, split, archive = _place(rel_parts)
        if (label and label not in settings.labels) or (split and split not in settings.splits):
            return
        b = bundles.setdefault(stem, Bundle(stem, label, split, archive))
        if ext in b.files and b.files[ext].offset < 0 <= member.offset:
            return  # an extracted copy wins over the same file in a tar
        b.files[ext] = member

    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        if path.suffix == ".tar":
            parts = (*rel.parent.parts, rel.stem)
            try:
                with tarfile.open(path) as tf:
                    for m in tf:
                        if m.isfile():
                            add(Path(m.name).name, parts, Member(str(path), m.offset_data, m.size), str(path))
            except (tarfile.TarError, OSError) as e:
                problems.append((str(rel), f"{path}: unreadable tar ({e})"))
        else:
            add(path.name, rel.parent.parts, Member(str(path)), str(path))
    groups: dict[str, list[Bundle]] = {}
    for b in bundles.values():
        groups.setdefault(b.interaction, []).append(b)
    return {k: sorted(v, key=lambda b: b.file_id) for k, v in sorted(groups.items())}, problems


def _filelist(root: Path) -> dict[str, list[str]]:
    """filelist.csv (root or assets/), when present: interaction → "file_id (archive BBBB/AAAA)" of listed files."""
    out: dict[str, list[str]] = {}
    for path in (root / "filelist.csv", root / "assets" / "filelist.csv"):
        if path.is_file():
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    m = FILE_ID_RE.match(row.get("file_id", ""))
                    if m:
                        where = f"{int(row.get('batch_idx', 0)):04d}/{int(row.get('archive_idx', 0)):04d}"
                        key = f"{m['vendor']}_{m['session']}_{m['interaction']}"
                        out.setdefault(key, []).append(f"{row['file_id']} (archive {where})")
            break
    return out


# ---------------------------------------------------------------------------------------------------------------------
# one participant


def _materialize(member: Member, ext: str, file_id: str, tmp: Path) -> Path:
    if member.offset < 0:
        return Path(member.container)
    dest = tmp / f"{file_id}.{ext}"
    with open(member.container, "rb") as src, open(dest, "wb") as dst:
        src.seek(member.offset)
        remaining = member.size
        while remaining > 0:
            chunk = src.read(min(remaining, 1 << 22))
            if not chunk:
                raise BadInput(f"{member.container}: archive ends inside {file_id}.{ext}")
            dst.write(chunk)
            remaining -= len(chunk)
    return dest


def _number(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{what} is {x!r}, not a finite number")
    return float(x)


def read_annotations(path: Path) -> tuple[list[tuple[float, float]], list[Word]]:
    """VAD segments and words of a participant JSON (extra keys tolerated; null word times kept as None)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: JSON is not an object")
    try:
        vad = []
        for i, seg in enumerate(data.get("metadata:vad") or []):
            start, end = _number(seg.get("start"), f"metadata:vad[{i}].start"), _number(seg.get("end"), "end")
            if end < start:
                raise ValueError(f"metadata:vad[{i}] ends before it starts ({start}, {end})")
            vad.append((start, end))
        words = []
        for i, seg in enumerate(data.get("metadata:transcript") or []):
            for j, w in enumerate(seg.get("words") or []):
                start, end = w.get("start"), w.get("end")
                timed = start is not None and end is not None
                words.append(
                    Word(
                        str(w.get("word", "")),
                        _number(start, f"transcript[{i}].words[{j}].start") if timed else None,
                        _number(end, f"transcript[{i}].words[{j}].end") if timed else None,
                    )
                )
    except (ValueError, AttributeError, TypeError) as e:
        raise BadInput(f"{path}: malformed annotation ({e})") from None
    return vad, words


def read_keypoints(path: Path) -> tuple[np.ndarray, np.ndarray] | str:
    """(keypoints [N, 133, 3], box_valid [N]) of an NPZ, or why they cannot be used. N = 0 is BadInput."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not all(k in npz.files for k in NPZ_BOX_KEYS):
                return f"NPZ lacks {[k for k in NPZ_BOX_KEYS if k not in npz.files]}"
            kp = npz["boxes_and_keypoints:keypoints"]
            valid = npz["boxes_and_keypoints:is_valid_box"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise BadInput(f"{path}: unreadable NPZ ({e})") from None
    if kp.ndim != 3 or kp.shape[1:] != (133, 3) or valid.shape[:1] != kp.shape[:1]:
        return f"NPZ keypoints have shape {kp.shape} and validity {valid.shape}, expected (N, 133, 3) and (N,)"
    if kp.shape[0] == 0:
        raise BadInput(f"{path}: NPZ has no frames (N = 0)")
    return kp, valid.reshape(-1).astype(bool)


@dataclass
class _Probed:
    bundle: Bundle
    paths: dict[str, Path]
    n_samples: int
    rate_hz: int
    video_fps: float
    video_frames: int
    keypoints: tuple[np.ndarray, np.ndarray] | None  # (keypoints, box_valid) usable for crops
    keypoint_note: str  # why there are none ("" when there are)


def _probe(bundle: Bundle, tmp: Path, settings: SeamlessSettings) -> _Probed:
    missing = [e for e in REQUIRED if e not in bundle.files]
    if missing:
        raise BadInput(f"{bundle.file_id}: bundle lacks {', '.join('.' + e for e in missing)}")
    paths = {ext: _materialize(m, ext, bundle.file_id, tmp) for ext, m in bundle.files.items()}
    n_samples, rate_hz = audio_frames(paths["wav"])
    video = probe_video(paths["mp4"])
    audio_s = n_samples / rate_hz
    if abs(video.duration_s - audio_s) > settings.max_av_mismatch_s:
        raise BadInput(
            f"{paths['mp4']}: video lasts {video.duration_s:.2f} s but the audio {audio_s:.2f} s "
            f"(video/audio length mismatch above {settings.max_av_mismatch_s} s)"
        )
    kp: tuple[np.ndarray, np.ndarray] | str = "no NPZ"
    if "npz" in paths:
        kp = read_keypoints(paths["npz"])
        allowed = max(8.0, settings.max_npz_frame_mismatch * video.n_frames)  # −3…+5 frames is normal
        if not isinstance(kp, str) and abs(len(kp[0]) - video.n_frames) > allowed:
            kp = f"NPZ has {len(kp[0])} frames, the video {video.n_frames}: keypoints not used"
    note = kp if isinstance(kp, str) else ""
    return _Probed(bundle, paths, n_samples, rate_hz, video.fps, video.n_frames, None if note else kp, note)


def _track(p: _Probed, wave_24k: np.ndarray, tools: Tools, settings: SeamlessSettings) -> tuple[Track, dict]:
    n_frames = mimi_frames(len(wave_24k))
    vad, words = read_annotations(p.paths["json"])
    timed = [(w.start_s, w.end_s) for w in words if w.start_s is not None]
    if settings.va_source == "annotations" or (settings.va_source == "auto" and (vad or timed)):
        source, intervals = ("metadata:vad", vad) if vad else ("words", timed)
    else:
        source, intervals = "silero", silero_intervals(wave_24k, MIMI_RATE_HZ, tools.settings.silero)
    prior = None
    if p.keypoints is not None:
        prior = face_boxes_from_wholebody(*p.keypoints, p.video_fps, n_frames, tools.settings.face)
    face = extract_face_track(p.paths["mp4"], n_frames, tools.settings.face, prior)
    if p.keypoint_note:
        face.info["keypoints"] = p.keypoint_note
    va = voiced_fraction(intervals, n_frames)
    return Track(p.bundle.participant, wave_24k, va, words, face), {"va_source": source, "video_fps": p.video_fps}


@dataclass
class SeamlessJob(Job):
    bundles: list[Bundle] = field(default_factory=list)
    settings: SeamlessSettings = field(default_factory=SeamlessSettings)

    def _pair(self, tmp: Path) -> tuple[list[_Probed], list[str]]:
        """The two participants; of more than two files, the two that probe clean (else BadInput with reasons)."""
        if len(self.bundles) == 2:
            return [_probe(b, tmp, self.settings) for b in self.bundles], []
        probed, dropped = [], []
        for b in self.bundles:
            try:
                probed.append(_probe(b, tmp, self.settings))
            except BadInput as e:
                dropped.append(str(e))
        if len(probed) != 2:
            raise BadInput(
                f"{self.id}: {len(self.bundles)} participant files ({', '.join(b.file_id for b in self.bundles)}), "
                f"{len(probed)} usable, need exactly 2" + (f"; {'; '.join(dropped)}" if dropped else "")
            )
        return probed, dropped

    def build(self, tools: Tools, out_root: Path):
        s = self.settings
        with tempfile.TemporaryDirectory(prefix="faceturn-seamless-") as tmp:
            probed, dropped = self._pair(Path(tmp))
            durations_s = [p.n_samples / p.rate_hz for p in probed]
            if abs(durations_s[0] - durations_s[1]) > s.max_partner_mismatch_s:
                raise BadInput(
                    f"{self.id}: partners' audio lasts {durations_s[0]:.2f} s and {durations_s[1]:.2f} s "
                    f"(more than {s.max_partner_mismatch_s} s apart)"
                )
            waves = []
            for p in probed:
                wave, rate_hz = read_audio(p.paths["wav"])
                waves.append(resample(wave, rate_hz, MIMI_RATE_HZ))
            n = min(len(w) for w in waves)
            results = [_track(p, w[:n], tools, s) for p, w in zip(probed, waves, strict=True)]
            meta_files = [{ext: str(path.name) for ext, path in p.paths.items()} for p in probed]
        tracks = [r[0] for r in results]
        meta = {
            "source": "seamless_interaction",
            "files": meta_files,
            "dropped_participants": dropped,
            "va_source": [r[1]["va_source"] for r in results],
            "video_fps": [r[1]["video_fps"] for r in results],
        }
        conv = assemble(self.id, tracks, tools, meta)
        waves = [t.wave_24k for t in tracks]
        audio = write_stereo_wav(out_root, self.id, waves) if tools.settings.write_audio else None
        pair = [p.bundle for p in probed]
        first = pair[0]
        entry = ManifestEntry(
            id=self.id,
            file=f"{self.id}.safetensors",
            split=STORE_SPLIT.get(first.split, "") if s.official_splits else "",
            n_frames=conv.n_frames,
            corpus="seamless",
            framing=s.framing,
            participants=[b.participant for b in pair],
            group=f"{first.parts['vendor']}_{first.parts['session']}",
            source={
                "label": first.label,
                "split": first.split,
                "file_ids": [b.file_id for b in pair],
                "archives": [b.archive for b in pair],
            },
            audio=audio,
        )
        return conv, entry


def jobs_from_root(root: Path, settings: SeamlessSettings) -> list[SeamlessJob]:
    """One job per interaction; an interaction with a single participant carries its reason already."""
    groups, problems = index_root(root, settings)
    listed = _filelist(root)
    jobs = [SeamlessJob(id=name, error=reason) for name, reason in problems]
    for interaction, bundles in groups.items():
        error = ""
        if len(bundles) == 1:
            others = [f for f in listed.get(interaction, []) if not f.startswith(bundles[0].file_id + " ")]
            hint = f"; filelist.csv lists {', '.join(others)}, not found under {root}" if others else ""
            error = f"{bundles[0].file_id}: missing partner (interaction {interaction} has one participant{hint})"
        jobs.append(SeamlessJob(id=interaction, error=error, bundles=bundles, settings=settings))
    return jobs
