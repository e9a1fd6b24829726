"""`faceturn view`: a self-contained page; in a real headless Chromium the chart shows, playing moves the playhead,
clicking the chart seeks, and the page is not blank."""

from __future__ import annotations

import json
import re

import pytest
from browser import open_file, png_content

from faceturn.cli import main
from faceturn.viz.figures import load_timeline
from faceturn.viz.viewer import write_viewer

MEDIA = "document.getElementById('media')"


def _payload(page_html: str) -> dict:
    m = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', page_html, re.S)
    return json.loads(m.group(1))


def test_viewer_page_is_self_contained(tmp_path, viz_data):
    out = tmp_path / "view.html"
    assert main(["view", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0], "--start", "2", "--end", "9",
                 "--out", str(out)]) == 0  # fmt: skip
    page = out.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing to fetch: every medium is a data URI
    assert '<audio id="media"' in page and 'src="data:audio/webm;base64,' in page
    assert 'src="data:image/png;base64,' in page
    cfg = _payload(page)
    data = load_timeline(viz_data.pred, viz_data.ids[0], start_s=2, end_s=9)
    assert (cfg["start_s"], cfg["end_s"]) == pytest.approx((data.start_s, data.end_s))
    assert len(cfg["p_face"]) == data.n_frames and cfg["p_face"][3] == pytest.approx(float(data.p_face[3]), abs=1e-4)
    assert 0 < cfg["left"] < cfg["right"] < 1 and 0 < cfg["top"] < cfg["bottom"] < 1


def _check_in_browser(chromium, html, screenshot):
    page = open_file(chromium, html)
    page.wait_for_function(
        f"document.getElementById('timeline').complete && document.getElementById('timeline').naturalWidth > 0 "
        f"&& {MEDIA}.readyState >= 2"
    )
    chart = page.locator("#chart").bounding_box()
    assert chart["width"] > 600 and chart["height"] > 300  # the chart is shown
    cfg = page.evaluate("JSON.parse(document.getElementById('viewer-data').textContent)")
    span_s = cfg["end_s"] - cfg["start_s"]
    assert page.evaluate(f"{MEDIA}.duration") == pytest.approx(span_s, abs=0.1)

    def playhead_fraction() -> float:
        """Where the playhead is, as a fraction of the chart's width, measured from the rendered layout."""
        head = page.locator("#playhead").bounding_box()
        return (head["x"] + head["width"] / 2 - chart["x"]) / chart["width"]

    assert playhead_fraction() == pytest.approx(cfg["left"], abs=0.005)
    page.evaluate(f"{MEDIA}.play()")
    page.wait_for_function(f"{MEDIA}.currentTime > 1.0", timeout=15_000)
    page.evaluate(f"{MEDIA}.pause()")
    played_s = page.evaluate(f"{MEDIA}.currentTime")
    expected = cfg["left"] + played_s / span_s * (cfg["right"] - cfg["left"])
    assert playhead_fraction() == pytest.approx(expected, abs=0.005) and playhead_fraction() > cfg["left"] + 0.01
    # a click at 75 % of the time axis seeks there, and the playhead follows
    fx = cfg["left"] + 0.75 * (cfg["right"] - cfg["left"])
    page.mouse.click(chart["x"] + fx * chart["width"], chart["y"] + 0.5 * chart["height"])
    page.wait_for_function(f"!{MEDIA}.seeking")
    assert page.evaluate(f"{MEDIA}.currentTime") == pytest.approx(0.75 * span_s, abs=0.15)
    assert playhead_fraction() == pytest.approx(fx, abs=0.005)
    shown_s = float(re.search(r"t = ([\d.]+) s", page.locator("#readout").inner_text()).group(1))
    assert shown_s == pytest.approx(cfg["start_s"] + 0.75 * span_s, abs=0.15)
    page.screenshot(path=str(screenshot), full_page=True)
    colours, ink = png_content(screenshot)
    assert colours > 500 and ink > 0.05, (colours, ink)  # a drawn chart, not a blank page
    return page


def test_viewer_plays_and_seeks_in_chromium(tmp_path, viz_data, chromium):
    html = write_viewer(viz_data.pred, viz_data.ids[1], tmp_path / "view.html", perspective=1)
    _check_in_browser(chromium, html, tmp_path / "view.png")


def test_viewer_with_face_video_in_chromium(tmp_path, viz_data, face_video, chromium):
    html = write_viewer(viz_data.pred, viz_data.ids[0], tmp_path / "face.html", end_s=8.0, video=face_video.path)
    assert '<video id="media"' in html.read_text()
    page = _check_in_browser(chromium, html, tmp_path / "face.png")
    assert page.evaluate(f"{MEDIA}.videoWidth") > 0 and page.evaluate(f"{MEDIA}.videoHeight") == 360


def test_viewer_refuses_bad_input(tmp_path, viz_data, capsys):
    out = tmp_path / "v.html"
    args = ["view", "--pred", str(viz_data.pred), "--conversation", viz_data.ids[0], "--out", str(out)]
    assert main([*args, "--start", "-1"]) == 2
    assert "start -1.0 s is outside the conversation" in capsys.readouterr().err
    assert main([*args, "--video", str(tmp_path / "missing.mp4")]) == 2
    assert f"{tmp_path / 'missing.mp4'}: unreadable video" in capsys.readouterr().err
    assert not out.exists()
    # another corpus holding the same conversation id and length: one corpus' predictions over the other's media
    assert main([*args, "--corpus", str(viz_data.silent_corpus)]) == 2
    err = capsys.readouterr().err
    assert f"predictions made from corpus {viz_data.corpus.resolve()}" in err
    assert f"not from {viz_data.silent_corpus}" in err and not out.exists()
