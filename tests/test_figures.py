"""Figures: the timeline reads the right streams, draws where it says, and every chart writes PNG + SVG or refuses
bad input with a message that names it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from faceturn.cli import main
from faceturn.eval.predict import Predictions
from faceturn.labels import turn_labels
from faceturn.schema import CHANNEL_INDEX
from faceturn.store import Corpus
from faceturn.timebase import FRAME_S
from faceturn.viz import figures as F


def _check_files(paths):
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert ET.parse(svg).getroot().tag.endswith("svg")
    from matplotlib.image import imread

    assert imread(str(png))[..., :3].std() > 0.05  # not a blank canvas


def test_timeline_data_is_the_conversation_window(viz_data):
    conv_id = viz_data.ids[1]
    data = F.load_timeline(viz_data.pred, conv_id, perspective=1, start_s=2.0, end_s=15.0)
    conv = Corpus(viz_data.corpus).load(conv_id)
    start, stop = 25, 188  # 2.0 s is inside frame 25; 15.0 s needs 188 frames
    assert (data.start_frame, data.n_frames) == (start, stop - start)
    assert data.start_s == pytest.approx(2.0) and data.end_s == pytest.approx(15.04)
    np.testing.assert_array_equal(data.va, np.asarray(conv.va[:, start:stop], np.float32))
    pred = Predictions.load(viz_data.pred)
    rows = (pred.conversation == 1) & (pred.perspective == 1) & (pred.frame >= start) & (pred.frame < stop)
    np.testing.assert_array_equal(data.p_face, pred.p_face[rows][np.argsort(pred.frame[rows])])
    lab = turn_labels(np.asarray(conv.va, np.float32))
    inside = (lab.shift_frames >= start) & (lab.shift_frames < stop)
    np.testing.assert_array_equal(data.handover_frames, lab.shift_frames[inside])
    assert data.handover_frames.size > 0
    # the face is the interlocutor's (participant 0 when the model speaks as 1), blank where it was not tracked
    jaw = np.asarray(conv.face[0, start:stop, CHANNEL_INDEX["jawOpen"]], np.float32)
    present = np.asarray(conv.face_present[0, start:stop]) == 1
    assert (~present).any()
    np.testing.assert_allclose(data.face["jawOpen"][present], jaw[present])
    assert np.isnan(data.face["jawOpen"][~present]).all()
    yaw = np.degrees(np.asarray(conv.face[0, start:stop, CHANNEL_INDEX["head_yaw"]], np.float32))
    np.testing.assert_allclose(data.face["head yaw (°)"][present], yaw[present], rtol=1e-5)


def test_timeline_image_maps_time_to_pixels(viz_data):
    data = F.load_timeline(viz_data.pred, viz_data.ids[0])
    img = F.timeline_image(data, 1280, 720)
    assert img.rgb.shape == (720, 1280, 3) and img.rgb.dtype == np.uint8
    assert img.x_px(data.start_s) == pytest.approx(img.plot_left_px)
    assert 0 < img.plot_left_px < img.plot_right_px < 1280 and 0 < img.plot_top_px < img.plot_bottom_px < 720
    # each hand-over's dotted line is drawn in the column the mapping gives, in the incoming speaker's colour
    colours = {s: np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)]) for s, c in
               ((data.perspective, F.SELF_COLOR), (1 - data.perspective, F.OTHER_COLOR))}  # fmt: skip
    top, bottom = int(img.plot_top_px), int(img.plot_bottom_px)
    for k, to in zip(data.handover_frames, data.handover_to, strict=True):
        x = round(float(img.x_px(k * FRAME_S)))
        strip = img.rgb[top:bottom, x - 1 : x + 2].reshape(-1, 3).astype(int)
        assert (np.abs(strip - colours[int(to)]).sum(axis=1) < 60).sum() > 20, (k, x)
    with pytest.raises(ValueError, match="too small"):
        F.timeline_image(data, 100, 100)


def test_timeline_figure_and_roc_from_the_command_line(tmp_path, viz_data, capsys):
    out = tmp_path / "cli"
    args = ["plot", "timeline", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[1], "--out", str(out)]
    assert main([*args, "--perspective", "1", "--end", "10"]) == 0
    _check_files((out / f"timeline_{viz_data.ids[1]}_p1.png", out / f"timeline_{viz_data.ids[1]}_p1.svg"))
    assert main(["plot", "roc", "--pred", str(viz_data.pred), "--pred", str(viz_data.pred), "--out", str(out)]) == 2
    assert "labels repeat" in capsys.readouterr().err
    assert main(["plot", "roc", "--pred", str(viz_data.pred), "--label", "tight", "--out", str(out)]) == 0
    _check_files((out / "roc.png", out / "roc.svg"))


def test_timeline_refuses_bad_input(tmp_path, viz_data, capsys):
    with pytest.raises(ValueError, match=r"pred\.npz: no conversation 'nope' \(the file has 2"):
        F.load_timeline(viz_data.pred, "nope")
    with pytest.raises(ValueError, match="perspective must be 0 or 1"):
        F.load_timeline(viz_data.pred, viz_data.ids[0], perspective=2)
    with pytest.raises(ValueError, match=r"end 999.0 s is outside the conversation \(0 to 2\d\.\d\d s\)"):
        F.load_timeline(viz_data.pred, viz_data.ids[0], end_s=999.0)
    with pytest.raises(ValueError, match=r"window \[5.0, 5.0\] s is empty"):
        F.load_timeline(viz_data.pred, viz_data.ids[0], start_s=5.0, end_s=5.0)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    assert main(["plot", "timeline", "--pred", str(bad), "--conversation", "x"]) == 2
    assert f"{bad}: not a readable prediction file" in capsys.readouterr().err
    pred = Predictions.load(viz_data.pred)
    shifted = Predictions(**{**pred.__dict__, "frame": pred.frame + 10_000})
    with pytest.raises(ValueError, match=r"has frames up to \d+ but the corpus file .*predictions for another corpus"):
        F.load_timeline(shifted, viz_data.ids[0])


AUC_SERIES = {
    "tight": [{"name": "face", "value": 0.905, "lo": 0.89, "hi": 0.92}, {"name": "zeroed", "value": 0.81, "lo": 0.79,
              "hi": 0.83}, {"name": "delta", "value": 0.094, "lo": 0.089, "hi": 0.099}],
    "wide": [{"name": "face", "value": 0.973, "lo": 0.96, "hi": 0.98}, {"name": "zeroed", "value": 0.935, "lo": None,
             "hi": None}],
}  # fmt: skip
LOGO_SERIES = {
    "tight": [{"name": g, "value": v, "lo": v - 0.01, "hi": v + 0.01} for g, v in
              [("eye_gaze", 0.042), ("head_rot", 0.026), ("jaw_mouth", 0.007), ("brow", 0.0)]],
    "wide": [{"name": g, "value": v, "lo": v - 0.005, "hi": v + 0.005} for g, v in
             [("eye_gaze", 0.004), ("head_rot", 0.032), ("jaw_mouth", 0.028), ("brow", 0.004)]],
}  # fmt: skip


def test_summary_charts(tmp_path):
    from faceturn.stats import paired_cluster_bootstrap

    rng = np.random.default_rng(0)
    y = rng.random(600) < 0.3
    clusters = np.repeat(np.arange(30), 20)
    res = paired_cluster_bootstrap(y, {"face": y + rng.random(600), "zeroed": rng.random(600)}, clusters,
                                   n_resamples=200, seed=0)  # fmt: skip
    rows = F.rows_from_bootstrap(res.to_dict())
    assert [r["name"] for r in rows] == ["face", "zeroed", "delta"]
    assert rows[2]["value"] == pytest.approx(res.delta) and rows[0]["lo"] == res.ci["face"][0]
    _check_files(F.auc_figure({"tight": rows, **{k: v for k, v in AUC_SERIES.items() if k == "wide"}}, tmp_path / "a"))
    _check_files(F.auc_figure({"wide": AUC_SERIES["wide"]}, tmp_path / "one.auc"))  # no delta rows: one panel
    assert (tmp_path / "one.auc.png").exists()  # the stem is used as given, dots and all
    _check_files(F.logo_figure(LOGO_SERIES, tmp_path / "logo", robust=["head_rot"]))
    probe = {"probes": {"all": {"auc": 0.76, "ci": [0.74, 0.78]}},
             "controls": {"shuffled": {"auc": 0.5, "ci": [0.48, 0.52]}, "circular_shift": {"auc": 0.52,
                          "ci": [0.49, 0.55]}}}  # fmt: skip
    rows = F.rows_from_probe(probe)
    assert [r["name"] for r in rows] == ["face probe", "control: shuffled", "control: circular shift"]
    _check_files(F.probe_figure({"tight": rows, "wide": rows}, tmp_path / "probe"))


def test_robust_groups_need_a_ci_above_zero_on_every_corpus():
    """The one definition of the cross-corpus reading (faceturn.results), which tables, figures and checks share."""
    from faceturn.results import Estimate, Reading, read_group, robust_groups

    def above(series):
        return {c: Estimate(r[0]["value"], (r[0]["lo"], r[0]["hi"])).above_zero for c, r in series.items()}

    by_group = {g: {c: [r for r in rows if r["name"] == g] for c, rows in LOGO_SERIES.items()}
                for g in ("eye_gaze", "head_rot", "jaw_mouth", "brow")}  # fmt: skip
    readings = {g: read_group(above(s), zeroed_by_default=False) for g, s in by_group.items()}
    assert robust_groups(readings) == ["head_rot"]  # eye_gaze: not on wide; jaw_mouth: not on tight; brow: neither
    one_sided = {"a": [{"name": "g", "value": 0.1, "lo": 0.05, "hi": 0.2}],
                 "b": [{"name": "g", "value": -0.1, "lo": -0.2, "hi": -0.05}]}  # fmt: skip
    assert read_group(above(one_sided), False).reading is Reading.CORPUS_DEPENDENT  # opposite signs: not robust
    below = {c: [{"name": "g", "value": -0.1, "lo": -0.2, "hi": -0.05}] for c in ("a", "b")}
    assert read_group(above(below), False).reading is Reading.NO_EFFECT  # better without it: not a use of it
    assert read_group(above(below), True).reading is Reading.DEFAULT_NO_HELP
    assert not Estimate(0.1).above_zero  # no CI, no claim


def test_roc_points_agree_with_sklearn(viz_data, tmp_path):
    from sklearn.metrics import roc_curve

    from faceturn.stats import roc_auc

    rng = np.random.default_rng(1)
    y = rng.random(3000) < 0.2
    scores = np.round(y * 0.3 + rng.random(3000), 2)  # many ties
    fpr, tpr = F.roc_points(y, scores, max_points=10_000)
    ref_fpr, ref_tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, scores))
    thin_fpr, _ = F.roc_points(y, scores, max_points=20)
    assert thin_fpr.size <= 21 and thin_fpr[0] == 0 and thin_fpr[-1] == 1
    _check_files(F.roc_figure({"a": viz_data.pred, "b": Predictions.load(viz_data.silent_pred)}, tmp_path / "roc"))


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ({}, "expected a non-empty mapping"),
        ({"tight": []}, "corpus 'tight': expected a non-empty list"),
        ({"tight": [{"value": 0.5}]}, "row 0: expected"),
        ({"tight": [{"name": "face", "value": float("nan")}]}, "value nan is not a finite number"),
        ({"tight": [{"name": "face", "value": 0.8, "lo": 0.9, "hi": 0.7}]}, r"CI \[0.9, 0.7\] is not finite"),
        ({"tight": [{"name": "face", "value": 0.8, "lo": 0.7}]}, "give both lo and hi"),
        ({"tight": [{"name": "face", "value": 0.8}, {"name": "face", "value": 0.7}]}, "row names repeat"),
    ],
)
def test_summary_charts_refuse_bad_series(tmp_path, series, message):
    with pytest.raises(ValueError, match=message):
        F.auc_figure(series, tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_result_readers_and_roc_refuse_bad_input(tmp_path, viz_data):
    with pytest.raises(ValueError, match="results.json frames.all: not a bootstrap result block"):
        F.rows_from_bootstrap({"auc": {"face": 0.9}}, source="results.json frames.all")
    with pytest.raises(ValueError, match="not a probe result"):
        F.rows_from_probe({"probes": {}})
    with pytest.raises(ValueError, match="only rows named 'delta'"):
        F.auc_figure({"a": [{"name": "delta", "value": 0.1}]}, tmp_path / "x")
    pred = Predictions.load(viz_data.pred)
    no_pos = Predictions(**{**pred.__dict__, "y": np.zeros_like(pred.y)})
    with pytest.raises(ValueError, match="0 of .* scored frames are positive; ROC is undefined"):
        F.roc_figure({"a": no_pos}, tmp_path / "x")
