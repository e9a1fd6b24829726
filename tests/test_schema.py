import numpy as np
import pytest

from faceturn import schema as sc


def test_a61_layout_and_groups():
    assert sc.N_FACE == 61
    assert sc.FACE_CHANNELS[:2] == ("eyeBlinkLeft", "eyeLookDownLeft")
    assert sc.FACE_CHANNELS[17] == "jawOpen" and sc.FACE_CHANNELS[51] == "tongueOut"
    assert sc.FACE_CHANNELS[52:] == sc.HEAD_ROTATION + sc.HEAD_TRANSLATION + sc.GAZE
    sizes = {g: len(ix) for g, ix in sc.FACE_GROUPS.items()}
    assert sizes == {"eye_gaze": 17, "jaw_mouth": 28, "brow": 5, "cheek_nose": 5, "head_rot": 3, "head_trans": 3}
    all_ix = sorted(i for ix in sc.FACE_GROUPS.values() for i in ix)
    assert all_ix == list(range(61)), "groups must partition the 61 channels"
    assert sc.DEFAULT_ZERO_GROUPS == ("head_trans",)
    assert sc.group_indices(["head_trans"]) == [55, 56, 57]


def test_unknown_group_is_named():
    with pytest.raises(sc.SchemaError, match="'mouth'.*valid groups"):
        sc.group_indices(["mouth"])


def test_validate_channel_names_explains_the_problem():
    names = list(sc.FACE_CHANNELS)
    sc.validate_channel_names(names)
    bad = names.copy()
    bad[3] = "eyeLookSideways"
    with pytest.raises(sc.SchemaError, match=r"f\.safetensors: .*unknown channel names \['eyeLookSideways'\]"):
        sc.validate_channel_names(bad, "f.safetensors")
    swapped = names.copy()
    swapped[15], swapped[16] = swapped[16], swapped[15]
    with pytest.raises(sc.SchemaError, match="out of A61 order .*position 15"):
        sc.validate_channel_names(swapped)
    with pytest.raises(sc.SchemaError, match="60 channels"):
        sc.validate_channel_names(names[:-1])


def test_validate_face_rejects_non_finite_and_wrong_width():
    face = np.zeros((2, 5, 61), np.float16)
    sc.validate_face(face)
    face[1, 3, 17] = np.nan
    with pytest.raises(sc.SchemaError, match="1 non-finite.*jawOpen"):
        sc.validate_face(face, source="x")
    with pytest.raises(sc.SchemaError, match="last dimension 61"):
        sc.validate_face(np.zeros((5, 60)))


def _valid_faces(n: int = 6) -> np.ndarray:
    face = np.zeros((2, n, 61), np.float32)
    face[..., :52] = 0.5
    face[..., sc.CHANNEL_INDEX["head_tz"]] = -60.0
    face[..., sc.CHANNEL_INDEX["gaze_z"]] = 1.0
    return face


def test_face_value_ranges_per_group():
    face = _valid_faces()
    assert sc.face_value_problems(face) == []
    sc.validate_face(face.astype(np.float16))
    for channel, value, pattern in [
        ("mouthClose", 60000.0, r"2 blendshape values outside \[0, 1\] \(first at \[participant, frame\] \[1, 4\], "
                                r"channel 'mouthClose': 60000\)"),
        ("head_pitch", -3.5, r"2 head rotation values outside \[-pi, pi\] rad .*\[1, 4\].*'head_pitch': -3\.5"),
        ("head_ty", 501.0, r"2 head translation values beyond \+-500 cm .*\[1, 4\].*'head_ty': 501"),
        ("gaze_x", 1.0, r"1 gaze vectors not of unit length .*\[1, 4\].*norm 1\.41"),
    ]:  # fmt: skip
        bad = face.copy()
        bad[1, 4, sc.CHANNEL_INDEX[channel]] = value
        bad[1, 5, sc.CHANNEL_INDEX[channel]] = value if channel != "gaze_x" else 0.0  # counted, not named
        with pytest.raises(sc.SchemaError, match=rf"^x\.safetensors: {pattern}"):
            sc.validate_face(bad, source="x.safetensors")
        assert sc.validate_face(bad, values=False) is None  # structure only
    # one message per kind, all on one line
    bad = face.copy()
    bad[0, 2, 0], bad[1, 1, sc.CHANNEL_INDEX["head_roll"]] = 2.0, 7.0
    problems = sc.face_value_problems(bad)
    assert len(problems) == 2 and "eyeBlinkLeft" in problems[0] and "head_roll" in problems[1]
    # a [T, 61] array names the frame alone
    assert "(first at frame 2, channel 'eyeBlinkLeft': 2)" in sc.face_value_problems(bad[0])[0]


def test_face_value_tolerances_and_absent_gaze():
    face = _valid_faces()
    face[0, 0, sc.CHANNEL_INDEX["jawOpen"]] = 1 + 0.9 * sc.VALUE_TOLERANCE
    face[0, 1, sc.CHANNEL_INDEX["head_yaw"]] = -np.pi - 0.9 * sc.VALUE_TOLERANCE
    face[0, 2, [sc.CHANNEL_INDEX[g] for g in sc.GAZE]] = sc.gaze_vector(0.3, -0.2) * (1 + 0.9 * sc.GAZE_NORM_TOLERANCE)
    assert sc.face_value_problems(face) == []
    assert sc.face_value_problems(face.astype(np.float16)) == []
    face[1, 3] = 0.0  # an absent face: all zeros, gaze included
    present = np.ones((2, 6), np.uint8)
    assert sc.face_value_problems(face) == []  # without face_present, a zero gaze may be an absent face
    assert "where the face is present" in sc.face_value_problems(face, present)[0]
    present[1, 3] = 0
    assert sc.face_value_problems(face, present) == []


def test_importers_refuse_values_out_of_range():
    cols = {sc.llf_column(n): np.full(3, 0.2) for n in sc.ARKIT_BLENDSHAPES}
    cols["HeadYaw"] = np.array([0.1, 0.2, 57.0])  # degrees where radians belong
    with pytest.raises(sc.SchemaError, match=r"take\.csv: 1 head rotation values .*frame 2, channel 'head_yaw': 57"):
        sc.from_live_link_columns(cols, source="take.csv")


def test_mediapipe_mapping_by_name_drops_neutral_and_zeros_tongue():
    rng = np.random.default_rng(0)
    mp_names = ["_neutral", *sorted(n for n in sc.ARKIT_BLENDSHAPES if n != "tongueOut")]
    scores = {n: float(rng.random()) for n in mp_names}
    out = sc.from_mediapipe_blendshapes(scores)
    assert out.shape == (52,)
    for i, name in enumerate(sc.ARKIT_BLENDSHAPES):
        assert out[i] == pytest.approx(scores.get(name, 0.0), abs=1e-7)
    assert out[sc.CHANNEL_INDEX["tongueOut"]] == 0
    with pytest.raises(sc.SchemaError, match="missing blendshapes"):
        sc.from_mediapipe_blendshapes({"jawOpen": 0.2})


def test_live_link_csv_maps_by_name_not_position(tmp_path):
    # LLF CSVs list JawRight before JawLeft and MouthRight before MouthLeft: mapping must follow the names.
    cols = ["Timecode", "BlendShapeCount"] + [sc.llf_column(n) for n in sc.ARKIT_BLENDSHAPES]
    cols[cols.index("JawLeft")], cols[cols.index("JawRight")] = "JawRight", "JawLeft"
    cols += ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
             "RightEyePitch", "RightEyeRoll"]  # fmt: skip
    rows = []
    for t in range(3):
        vals = {c: 0.0 for c in cols}
        vals.update({"Timecode": f"00:00:00:{t:02d}.000", "BlendShapeCount": 61, "JawLeft": 0.7, "JawRight": 0.1})
        vals.update({"HeadYaw": 0.2, "LeftEyeYaw": -0.3, "RightEyeYaw": -0.3})
        vals.update({"LeftEyePitch": 0.1, "RightEyePitch": 0.1})
        rows.append(",".join(str(vals[c]) for c in cols))
    path = tmp_path / "take.csv"
    path.write_text(",".join(cols) + "\n" + "\n".join(rows) + "\n")
    face = sc.read_live_link_csv(path)
    assert face.shape == (3, 61)
    assert face[0, sc.CHANNEL_INDEX["jawLeft"]] == pytest.approx(0.7)
    assert face[0, sc.CHANNEL_INDEX["jawRight"]] == pytest.approx(0.1)
    assert face[0, sc.CHANNEL_INDEX["head_yaw"]] == pytest.approx(0.2)
    gaze = face[0, [sc.CHANNEL_INDEX[g] for g in sc.GAZE]]
    assert np.linalg.norm(gaze) == pytest.approx(1.0, abs=1e-6)
    assert gaze[0] > 0, "LLF eye yaw < 0 looks toward the subject's left = +x in the A61 head frame"
    assert gaze[1] < 0, "positive LLF pitch looks down = -y"


def test_live_link_csv_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("Timecode,EyeBlinkLeft\n00:00,0.1\n")
    with pytest.raises(sc.SchemaError, match="bad.csv: missing blendshape columns"):
        sc.read_live_link_csv(path)


def test_gaze_vector_convention():
    np.testing.assert_allclose(sc.gaze_vector(0.0, 0.0), [0, 0, 1], atol=1e-12)
    v = sc.gaze_vector(np.pi / 2, 0.0)
    np.testing.assert_allclose(v, [1, 0, 0], atol=1e-12)
