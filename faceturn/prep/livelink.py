"""Your own recordings with Live Link Face (iPhone ARKit) → corpus store.

Layout: `<root>/<conversation id>/<participant>.wav` and `<participant>.csv` (a Live Link Face take), exactly two
participants per folder, each WAV and take starting together at t = 0. Faces come from ARKit itself (52 blendshapes,
head and eye angles; no head translation), resampled from the take's timecodes to the 12.5 Hz grid; voice activity
from Silero; text is not available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from faceturn.errors import SchemaError
from faceturn.prep import BadInput
from faceturn.prep.audio_tokens import MIMI_RATE_HZ
from faceturn.prep.face import FaceTrack, live_link_on_grid
from faceturn.prep.pipeline import Job, Tools, Track, assemble, read_tracks_24k, write_stereo_wav
from faceturn.prep.vad import silero_intervals
from faceturn.store import ManifestEntry
from faceturn.timebase import voiced_fraction


@dataclass
class LiveLinkSettings:
    timecode_fps: float = 60.0  # frame base of the takes' HH:MM:SS:FF timecodes
    framing: str = "arkit"


@dataclass
class LiveLinkJob(Job):
    folder: str = ""
    participants: list[str] = field(default_factory=list)
    settings: LiveLinkSettings = field(default_factory=LiveLinkSettings)

    def build(self, tools: Tools, out_root: Path):
        folder = Path(self.folder)
        waves, n_frames = read_tracks_24k(folder, self.participants)
        tracks = []
        for p, wave in zip(self.participants, waves, strict=True):
            try:
                face, present = live_link_on_grid(folder / f"{p}.csv", n_frames, self.settings.timecode_fps)
            except (SchemaError, OSError, StopIteration) as e:
                raise BadInput(f"{folder / f'{p}.csv'}: unusable Live Link Face take ({e})") from None
            va = voiced_fraction(silero_intervals(wave, MIMI_RATE_HZ, tools.settings.silero), n_frames)
            tracks.append(Track(p, wave, va, [], FaceTrack(face, present, {"take": f"{p}.csv"})))
        conv = assemble(self.id, tracks, tools, {"source": "live_link_face", "va_source": ["silero", "silero"]})
        audio = write_stereo_wav(out_root, self.id, waves) if tools.settings.write_audio else None
        entry = ManifestEntry(
            id=self.id,
            file=f"{self.id}.safetensors",
            split="",
            n_frames=conv.n_frames,
            corpus="livelink",
            framing=self.settings.framing,
            participants=list(self.participants),
            group="",
            source={"folder": folder.name},
            audio=audio,
        )
        return conv, entry


def jobs_from_root(root: Path, settings: LiveLinkSettings) -> list[LiveLinkJob]:
    """One job per sub-folder; folders without exactly two complete participants carry their reason."""
    jobs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        wavs = {p.stem for p in folder.glob("*.wav")}
        csvs = {p.stem for p in folder.glob("*.csv")}
        both = sorted(wavs & csvs)
        error = ""
        if len(both) != 2:
            error = (f"{folder}: need exactly two participants with both <name>.wav and <name>.csv, found "
                     f"{both or 'none'}")  # fmt: skip
        jobs.append(LiveLinkJob(id=folder.name, error=error, folder=str(folder), participants=both, settings=settings))
    return jobs
