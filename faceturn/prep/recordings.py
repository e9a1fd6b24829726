"""Your own audio-visual recordings → corpus store: `<root>/<conversation id>/<name>.wav` for exactly two
participants, and for either of them optionally a video `<name>.{mp4,mkv,webm,mov,avi}` of their face.

Participants are taken in sorted name order (participant 0 first); each WAV and video starts at t = 0. Faces come
from the video with `prepare`'s landmarker and crop logic (a participant without video has face_present = 0), voice
activity from Silero, no text. `faceturn live --record` writes its sessions in this layout (`agent.wav`,
`person.wav`, `person.mkv`), so a recorded session can be prepared again from its media.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceturn.prep import BadInput
from faceturn.prep.audio_tokens import MIMI_RATE_HZ
from faceturn.prep.face import FaceTrack, extract_face_track
from faceturn.prep.pipeline import Job, Tools, Track, assemble, read_tracks_24k, write_stereo_wav
from faceturn.prep.vad import silero_intervals
from faceturn.schema import N_FACE
from faceturn.store import ManifestEntry
from faceturn.timebase import voiced_fraction

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


@dataclass
class RecordingsSettings:
    framing: str = "camera"


@dataclass
class RecordingJob(Job):
    folder: str = ""
    participants: list[str] = field(default_factory=list)
    videos: dict[str, str] = field(default_factory=dict)  # participant → video file name
    settings: RecordingsSettings = field(default_factory=RecordingsSettings)

    def build(self, tools: Tools, out_root: Path):
        folder = Path(self.folder)
        waves, n_frames = read_tracks_24k(folder, self.participants)
        tracks = []
        for p, wave in zip(self.participants, waves, strict=True):
            if p in self.videos:
                face = extract_face_track(folder / self.videos[p], n_frames, tools.settings.face)
                if not face.present.any():
                    raise BadInput(f"{folder / self.videos[p]}: no face found in any frame")
                face.info["video"] = f"{folder.name}/{self.videos[p]}"  # `view --media` finds it under the root
            else:
                face = FaceTrack(np.zeros((n_frames, N_FACE), np.float32), np.zeros(n_frames, np.uint8), {})
            va = voiced_fraction(silero_intervals(wave, MIMI_RATE_HZ, tools.settings.silero), n_frames)
            tracks.append(Track(p, wave, va, [], face))
        conv = assemble(self.id, tracks, tools, {"source": "recording", "va_source": ["silero", "silero"]})
        audio = write_stereo_wav(out_root, self.id, waves) if tools.settings.write_audio else None
        entry = ManifestEntry(
            id=self.id,
            file=f"{self.id}.safetensors",
            split="",
            n_frames=conv.n_frames,
            corpus="recordings",
            framing=self.settings.framing,
            participants=list(self.participants),
            group="",
            source={"folder": folder.name, "videos": dict(self.videos)},
            audio=audio,
        )
        return conv, entry


def jobs_from_root(root: Path, settings: RecordingsSettings) -> list[RecordingJob]:
    """One job per sub-folder; folders without exactly two participants' WAVs, or with a video of nobody, carry
    their reason."""
    jobs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        wavs = sorted(p.stem for p in folder.glob("*.wav"))
        videos = {p.stem: p.name for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}
        error = ""
        if len(wavs) != 2:
            error = f"{folder}: need exactly two participants' <name>.wav, found {wavs or 'none'}"
        elif set(videos) - set(wavs):
            error = f"{folder}: videos of no participant (no <name>.wav): {sorted(set(videos) - set(wavs))}"
        jobs.append(RecordingJob(id=folder.name, error=error, folder=str(folder), participants=wavs,
                                 videos=videos, settings=settings))  # fmt: skip
    return jobs
