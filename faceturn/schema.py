"""The A61 face schema and the stream constants every part of faceturn agrees on.

A61 = 52 ARKit blendshapes in Apple / Live Link Face / Unreal order (grouped by region, *not* alphabetical), then
head rotation (pitch, yaw, roll; radians), head translation (x, y, z; cm) and a unit gaze vector in the head frame.
Files always store the channel names next to the values and every importer maps by *name*, never by position:
Live Link Face CSVs, for one, swap Left/Right columns relative to the enum order.

Head frame (shared by rotation and gaze): +x toward the subject's own left (image right when facing the camera),
+y up, +z out of the face. Positive pitch = head/eyes down, positive yaw = toward the subject's left, positive roll
= counter-clockwise as displayed. Gaze straight ahead is (0, 0, 1).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from faceturn.errors import SchemaError

SCHEMA_VERSION = 1

N_CODEBOOKS = 8  # Mimi codebooks per participant (codebook 0 is semantic)
CODEBOOK_SIZE = 2048
N_PARTICIPANTS = 2

ARKIT_BLENDSHAPES: tuple[str, ...] = (
    # eyes (14)
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    # jaw (4)
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    # mouth (23)
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight",
    # brow (5)
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    # cheek (3), nose (2)
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
    # tongue (1)
    "tongueOut",
)  # fmt: skip

HEAD_ROTATION = ("head_pitch", "head_yaw", "head_roll")  # radians
HEAD_TRANSLATION = ("head_tx", "head_ty", "head_tz")  # cm
GAZE = ("gaze_x", "gaze_y", "gaze_z")  # unit vector, head frame

FACE_CHANNELS: tuple[str, ...] = ARKIT_BLENDSHAPES + HEAD_ROTATION + HEAD_TRANSLATION + GAZE
N_FACE = len(FACE_CHANNELS)
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(FACE_CHANNELS)}


def _select(predicate) -> tuple[int, ...]:
    return tuple(i for i, name in enumerate(FACE_CHANNELS) if predicate(name))


FACE_GROUPS: dict[str, tuple[int, ...]] = {
    "eye_gaze": _select(lambda n: n.startswith("eye") or n in GAZE),
    "jaw_mouth": _select(lambda n: n.startswith(("jaw", "mouth", "tongue"))),
    "brow": _select(lambda n: n.startswith("brow")),
    "cheek_nose": _select(lambda n: n.startswith(("cheek", "nose"))),
    "head_rot": _select(lambda n: n in HEAD_ROTATION),
    "head_trans": _select(lambda n: n in HEAD_TRANSLATION),
}
GROUP_NAMES: tuple[str, ...] = tuple(FACE_GROUPS)
DEFAULT_ZERO_GROUPS: tuple[str, ...] = ("head_trans",)  # a per-clip camera-setup constant, not behaviour


def group_indices(groups: Iterable[str]) -> list[int]:
    """Sorted channel indices of the named groups; unknown names are an error that lists the valid ones."""
    out: set[int] = set()
    for g in groups:
        if g not in FACE_GROUPS:
            raise SchemaError(f"unknown face group {g!r}; valid groups: {', '.join(GROUP_NAMES)}")
        out.update(FACE_GROUPS[g])
    return sorted(out)


def validate_channel_names(names: Sequence[str], source: str = "face data") -> None:
    """Reject a channel list that is not exactly A61 in order, saying which names are unknown, missing or moved."""
    names = list(names)
    if names == list(FACE_CHANNELS):
        return
    if not all(isinstance(n, str) for n in names):
        raise SchemaError(f"{source}: channel names must be strings, got {names[:5]!r}")
    unknown = [n for n in names if n not in CHANNEL_INDEX]
    missing = [n for n in FACE_CHANNELS if n not in names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    parts = []
    if len(names) != N_FACE:
        parts.append(f"{len(names)} channels instead of {N_FACE}")
    if unknown:
        parts.append(f"unknown channel names {unknown[:5]}")
    if missing:
        parts.append(f"missing channels {missing[:5]}")
    if dupes:
        parts.append(f"duplicated channels {dupes[:5]}")
    if not parts:
        first = next(i for i, (a, b) in enumerate(zip(names, FACE_CHANNELS, strict=True)) if a != b)
        got, want = names[first], FACE_CHANNELS[first]
        parts.append(f"channels out of A61 order (position {first} is {got!r}, expected {want!r})")
    raise SchemaError(f"{source}: {'; '.join(parts)}")


# Physical value ranges of the A61 groups, checked by `face_value_problems` (the store's value scan uses it). The
# tolerance absorbs float16 storage (spacing 2^-11 near 1, ~0.002 near pi).
VALUE_TOLERANCE = 1e-3
BLENDSHAPE_RANGE = (0.0, 1.0)
HEAD_ROTATION_MAX_RAD = math.pi  # |pitch|, |yaw|, |roll|
HEAD_TRANSLATION_MAX_CM = 500.0  # |tx|, |ty|, |tz|: a face 5 m from the camera is not tracked
GAZE_NORM_TOLERANCE = 1e-2  # | |gaze| - 1 |; a gaze of exactly (0, 0, 0) means no face (face_present 0)

_ROT = [CHANNEL_INDEX[n] for n in HEAD_ROTATION]
_TRANS = [CHANNEL_INDEX[n] for n in HEAD_TRANSLATION]
_GAZE = [CHANNEL_INDEX[n] for n in GAZE]


def _where(index: Sequence[int], ndim: int) -> str:
    """A frame position in a [..., 61] array: [T, 61] -> "frame k"; [P, T, 61] -> "[participant, frame] [p, k]"."""
    ix = [int(i) for i in index]
    if ndim == 2:
        return f"frame {ix[0]}"
    if ndim == 3:
        return f"[participant, frame] {ix}"
    return f"index {tuple(ix)}"


def face_value_problems(face: np.ndarray, present: np.ndarray | None = None) -> list[str]:
    """Values outside the A61 ranges, one message per kind, each naming the channel and the first offending frame:
    blendshapes in [0, 1], head rotation |angle| <= pi, head translation |t| <= 500 cm (each +- VALUE_TOLERANCE),
    gaze a unit vector (norm within GAZE_NORM_TOLERANCE) or (0, 0, 0) where the face is absent. `present` (the face
    array's shape without the channel axis) says where faces are absent; without it an all-zero gaze is accepted
    anywhere. Expects a finite [..., 61] array (see validate_face)."""
    arr = np.asarray(face, dtype=np.float32)
    lead = arr.shape[:-1]
    out = []

    def report(bad: np.ndarray, what: str, channels: Sequence[int]) -> None:  # bad: [..., len(channels)]
        if bad.any():
            first = np.argwhere(bad)[0]
            ch = channels[int(first[-1])]
            value = float(arr[(*first[:-1], ch)])
            out.append(f"{int(bad.sum())} {what} (first at {_where(first[:-1], arr.ndim)}, channel "
                       f"{FACE_CHANNELS[ch]!r}: {value:g})")  # fmt: skip

    lo, hi = BLENDSHAPE_RANGE
    bs = arr[..., :52]
    report((bs < lo - VALUE_TOLERANCE) | (bs > hi + VALUE_TOLERANCE), f"blendshape values outside [{lo:g}, {hi:g}]",
           range(52))  # fmt: skip
    rot_bound = HEAD_ROTATION_MAX_RAD + VALUE_TOLERANCE
    report(np.abs(arr[..., _ROT]) > rot_bound, "head rotation values outside [-pi, pi] rad", _ROT)
    trans_bound = HEAD_TRANSLATION_MAX_CM + VALUE_TOLERANCE
    report(np.abs(arr[..., _TRANS]) > trans_bound, f"head translation values beyond +-{HEAD_TRANSLATION_MAX_CM:g} cm",
           _TRANS)  # fmt: skip
    gaze = arr[..., _GAZE].astype(np.float64)
    norm = np.sqrt((gaze**2).sum(-1))
    absent = (gaze == 0).all(-1)
    if present is not None:
        absent &= np.asarray(present).reshape(lead) == 0
    bad = ~absent & (np.abs(norm - 1.0) > GAZE_NORM_TOLERANCE)
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        note = ", where the face is present" if norm[first] == 0 else ""
        out.append(f"{int(bad.sum())} gaze vectors not of unit length (first at {_where(first, arr.ndim)}, channels "
                   f"'gaze_x', 'gaze_y', 'gaze_z': norm {norm[first]:g}{note})")  # fmt: skip
    return out


def validate_face(
    face: np.ndarray,
    names: Sequence[str] | None = None,
    source: str = "face data",
    *,
    values: bool = True,
    present: np.ndarray | None = None,
) -> None:
    """Check a [..., 61] face array: channel names (if given), last dimension, finiteness and, with `values`, the
    A61 value ranges (face_value_problems; `present` marks where faces are absent)."""
    if names is not None:
        validate_channel_names(names, source)
    arr = np.asarray(face)
    if arr.ndim < 1 or arr.shape[-1] != N_FACE:
        raise SchemaError(f"{source}: face array has shape {tuple(arr.shape)}, expected last dimension {N_FACE}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        ch = FACE_CHANNELS[int(bad[-1])]
        raise SchemaError(
            f"{source}: {int((~finite).sum())} non-finite face values (first at index {tuple(int(i) for i in bad)}, "
            f"channel {ch!r})"
        )
    problems = face_value_problems(arr, present) if values else []
    if problems:
        raise SchemaError(f"{source}: {'; '.join(problems)}")


def from_mediapipe_blendshapes(scores: Mapping[str, float], source: str = "MediaPipe result") -> np.ndarray:
    """52 ARKit blendshapes (A61 order) from MediaPipe's named categories.

    MediaPipe emits `_neutral` plus 51 ARKit names (alphabetical) and no `tongueOut`, which is set to 0.
    """
    names = {k for k in scores if k != "_neutral"}
    unknown = sorted(names - set(ARKIT_BLENDSHAPES))
    if unknown:
        raise SchemaError(f"{source}: blendshape names not in ARKit: {unknown[:5]}")
    missing = sorted(set(ARKIT_BLENDSHAPES) - names - {"tongueOut"})
    if missing:
        raise SchemaError(f"{source}: missing blendshapes {missing[:5]}")
    return np.array([float(scores.get(n, 0.0)) for n in ARKIT_BLENDSHAPES], dtype=np.float32)


def gaze_vector(yaw_rad: np.ndarray, pitch_rad: np.ndarray) -> np.ndarray:
    """Unit gaze vectors [..., 3] in the head frame from yaw (+ toward subject's left) and pitch (+ down)."""
    yaw = np.asarray(yaw_rad, dtype=np.float64)
    pitch = np.asarray(pitch_rad, dtype=np.float64)
    return np.stack([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), np.cos(yaw) * np.cos(pitch)], axis=-1)


def llf_column(name: str) -> str:
    """Live Link Face CSV column for an ARKit blendshape name (PascalCase: eyeBlinkLeft → EyeBlinkLeft)."""
    return name[0].upper() + name[1:]


def from_live_link_columns(columns: Mapping[str, np.ndarray], source: str = "Live Link Face CSV") -> np.ndarray:
    """[T, 61] A61 frames from Live Link Face CSV columns, matched by name.

    Head angles come from HeadPitch/HeadYaw/HeadRoll (radians; LLF has no translation, left at 0). Gaze is the
    mean of both eyes' yaw/pitch; LLF's eye yaw is negative toward the subject's left, so its sign is flipped to
    the A61 head frame.
    """
    missing = [llf_column(n) for n in ARKIT_BLENDSHAPES if llf_column(n) not in columns]
    if missing:
        raise SchemaError(f"{source}: missing blendshape columns {missing[:5]}")
    n = len(next(iter(columns.values())))
    out = np.zeros((n, N_FACE), dtype=np.float32)
    for i, name in enumerate(ARKIT_BLENDSHAPES):
        out[:, i] = np.asarray(columns[llf_column(name)], dtype=np.float32)
    for col, ch in (("HeadPitch", "head_pitch"), ("HeadYaw", "head_yaw"), ("HeadRoll", "head_roll")):
        if col in columns:
            out[:, CHANNEL_INDEX[ch]] = np.asarray(columns[col], dtype=np.float32)
    eye_cols = ("LeftEyeYaw", "RightEyeYaw", "LeftEyePitch", "RightEyePitch")
    if all(c in columns for c in eye_cols):
        yaw = -(np.asarray(columns["LeftEyeYaw"], float) + np.asarray(columns["RightEyeYaw"], float)) / 2
        pitch = (np.asarray(columns["LeftEyePitch"], float) + np.asarray(columns["RightEyePitch"], float)) / 2
        out[:, [CHANNEL_INDEX[g] for g in GAZE]] = gaze_vector(yaw, pitch)
    else:
        out[:, CHANNEL_INDEX["gaze_z"]] = 1.0
    validate_face(out, source=source)
    return out


def read_live_link_csv(path) -> np.ndarray:
    """Read a Live Link Face take (CSV with header) into [T, 61] A61 frames at the CSV's own frame rate."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise SchemaError(f"{path}: empty CSV") from None
        rows = [r for r in reader if r]
    cols: dict[str, list[float]] = {h.strip(): [] for h in header}
    keys = [h.strip() for h in header]
    for line_no, row in enumerate(rows, start=2):
        if len(row) != len(keys):
            raise SchemaError(f"{path}:{line_no}: {len(row)} fields, header has {len(keys)}")
        for k, v in zip(keys, row, strict=True):
            if k == "Timecode":
                continue
            try:
                cols[k].append(float(v))
            except ValueError:
                raise SchemaError(f"{path}:{line_no}: column {k!r} value {v!r} is not a number") from None
    cols.pop("Timecode", None)
    return from_live_link_columns({k: np.array(v) for k, v in cols.items()}, source=str(path))


assert N_FACE == 61 and len(ARKIT_BLENDSHAPES) == 52
assert {g: len(ix) for g, ix in FACE_GROUPS.items()} == {
    "eye_gaze": 17, "jaw_mouth": 28, "brow": 5, "cheek_nose": 5, "head_rot": 3, "head_trans": 3
}  # fmt: skip
assert math.isclose(sum(len(ix) for ix in FACE_GROUPS.values()), N_FACE)
