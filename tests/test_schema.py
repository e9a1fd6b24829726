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
