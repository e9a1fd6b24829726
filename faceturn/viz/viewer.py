"""An interactive viewer: one static, self-contained HTML page per conversation (no server, nothing fetched).

The page embeds, as data URIs, the timeline picture (drawn once by `figures.draw_timeline`) and the conversation's
sound — mixed to mono, Opus in WebM — or, when the interlocutor's face video is known, that video with the sound
(VP9 + Opus in WebM: codecs every Chromium and Firefox build plays). A few lines of script keep a playhead over the
chart at the media's current time (every animation frame while playing), show P(yield) at that frame, seek where
the chart is clicked, and toggle play with the space bar. The media's time 0 is the window's start.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from faceturn.io import atomic_write_text
from faceturn.timebase import FRAME_S
from faceturn.viz.figures import timeline_image
from faceturn.viz.media import VideoFrames, add_audio_stream, encode_audio_only, load_clip, video_aspect, yuv420_frame

VIDEO_FPS = 25
VIDEO_HEIGHT_PX = 360

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 1.2em auto; max-width: 1280px; padding: 0 1em; color: #222; }}
  h1 {{ font-size: 1.2em; margin: 0 0 .2em; }}
  .sub {{ color: #555; font-size: .9em; margin: 0 0 .8em; }}
  #media {{ display: block; margin: 0 auto .6em; max-width: 100%; }}
  audio#media {{ width: 100%; }}
  #chart {{ position: relative; width: 100%; cursor: crosshair; line-height: 0; }}
  #timeline {{ width: 100%; height: auto; display: block; }}
  #playhead {{ position: absolute; width: 2px; margin-left: -1px; background: #dc143c; pointer-events: none; }}
  #readout {{ font-variant-numeric: tabular-nums; margin: .5em 0; }}
  .help {{ color: #666; font-size: .85em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle}</p>
{media}
<div id="chart"><img id="timeline" alt="timeline: voice activity, P(yield), the interlocutor's face" src="{png}">\
<div id="playhead"></div></div>
<div id="readout"></div>
<p class="help">Click the chart to seek; the space bar plays and pauses.</p>
<script type="application/json" id="viewer-data">{data}</script>
<script>
(() => {{
  const cfg = JSON.parse(document.getElementById("viewer-data").textContent);
  const media = document.getElementById("media");
  const chart = document.getElementById("chart");
  const head = document.getElementById("playhead");
  const readout = document.getElementById("readout");
  const span = cfg.end_s - cfg.start_s;
  head.style.top = (100 * cfg.top) + "%";
  head.style.height = (100 * (cfg.bottom - cfg.top)) + "%";
  const fmt = (p) => (p === null ? "n/a" : p.toFixed(2));
  function place() {{
    const t = Math.min(Math.max(media.currentTime, 0), span);
    head.style.left = (100 * (cfg.left + (t / span) * (cfg.right - cfg.left))) + "%";
    const k = Math.min(cfg.p_face.length - 1, Math.floor(t / cfg.frame_s + 1e-6));
    readout.textContent = "t = " + (cfg.start_s + t).toFixed(2) + " s · P(yield) with the face " +
      fmt(cfg.p_face[k]) + " · face zeroed " + fmt(cfg.p_zeroed[k]);
  }}
  function tick() {{ place(); if (!media.paused && !media.ended) requestAnimationFrame(tick); }}
  media.addEventListener("play", () => requestAnimationFrame(tick));
  for (const name of ["seeked", "timeupdate", "loadedmetadata", "pause", "ended"]) media.addEventListener(name, place);
  chart.addEventListener("click", (ev) => {{
    const r = chart.getBoundingClientRect();
    const f = ((ev.clientX - r.left) / r.width - cfg.left) / (cfg.right - cfg.left);
    if (f < 0 || f > 1) return;
    media.currentTime = f * span;
    place();
  }});
  document.addEventListener("keydown", (ev) => {{
    if (ev.code !== "Space" || ev.target.closest("audio, video, button, input")) return;
    ev.preventDefault();
    if (media.paused) media.play(); else media.pause();
  }});
  place();
}})();
</script>
</body>
</html>
"""


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _face_video_webm(video: Path, mono: np.ndarray, rate_hz: int, start_s: float, end_s: float) -> bytes:
    """The interlocutor's face video over [start_s, end_s) with the mixed sound, as VP9 + Opus WebM."""
    import av

    h = VIDEO_HEIGHT_PX
    w = max(2, min(round(h * video_aspect(video)), 2 * h) // 2 * 2)
    rate = Fraction(VIDEO_FPS)
    n_frames = math.ceil((end_s - start_s) * rate - 1e-9)
    buf = io.BytesIO()
    with VideoFrames(video, w, h, start_s) as frames, av.open(buf, "w", format="webm") as container:
        options = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}  # VP9's realtime mode: ~10× VP8's speed
        vstream = container.add_stream("libvpx-vp9", rate=rate, options=options)
        vstream.width, vstream.height, vstream.pix_fmt, vstream.bit_rate = w, h, "yuv420p", 600_000
        astream, aframe = add_audio_stream(container, mono, rate_hz, "libopus", 48000, 32000)
        for packet in (*astream.encode(aframe), *astream.encode(None)):
            container.mux(packet)
        for i in range(n_frames):
            frame = yuv420_frame(frames.at(start_s + i / VIDEO_FPS))
            frame.pts, frame.time_base = i, 1 / rate
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def _rounded(x: np.ndarray) -> list[float | None]:
    return [None if not math.isfinite(v) else round(v, 4) for v in x.astype(float).tolist()]


def write_viewer(
    pred: str | Path | Any,  # a `faceturn predict` file or a loaded Predictions
    conversation_id: str,
    out_html: str | Path,
    *,
    perspective: int = 0,
    start_s: float | None = None,
    end_s: float | None = None,
    corpus: str | Path | None = None,
    video: str | Path | None = None,
    media_root: str | Path | None = None,
) -> Path:
    """Write the viewer page for one conversation window (default: all of it) and return its path.

    `video` / `media_root`: the interlocutor's face video, as in `render_video`; without one the page plays sound.
    """
    from matplotlib.image import imsave

    clip = load_clip(pred, conversation_id, perspective=perspective, start_s=start_s, end_s=end_s, corpus=corpus,
                     video=video, media_root=media_root)  # fmt: skip
    data, mono, rate_hz = clip.data, clip.mono, clip.rate_hz
    if clip.video is not None:
        uri = _data_uri("video/webm", _face_video_webm(clip.video, mono, rate_hz, data.start_s, data.end_s))
        media = f'<video id="media" controls preload="auto" src="{uri}"></video>'
    else:
        uri = _data_uri("audio/webm", encode_audio_only(mono, rate_hz))
        media = f'<audio id="media" controls preload="auto" src="{uri}"></audio>'

    img = timeline_image(data, 2000, 1000, dpi=160)
    png = io.BytesIO()
    imsave(png, img.rgb, format="png")
    height_px, width_px = img.rgb.shape[:2]
    payload = {
        "conversation": conversation_id,
        "perspective": perspective,
        "start_s": data.start_s,
        "end_s": data.end_s,
        "frame_s": FRAME_S,
        "left": img.plot_left_px / width_px,
        "right": img.plot_right_px / width_px,
        "top": img.plot_top_px / height_px,
        "bottom": img.plot_bottom_px / height_px,
        "p_face": _rounded(data.p_face),
        "p_zeroed": _rounded(data.p_zeroed),
        "handover_s": [round(k * FRAME_S, 3) for k in data.handover_frames.tolist()],
    }
    who = data.participants
    source = Path(pred).name if isinstance(pred, str | Path) else "predictions in memory"
    title = f"{data.corpus} · {conversation_id}"
    subtitle = (
        f"the model speaks as participant {perspective} ({who[perspective]}) and sees the face of "
        f"{who[1 - perspective]} · {data.start_s:.2f}–{data.end_s:.2f} s · predictions: {source}"
    )
    page = _PAGE.format(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        media=media,
        png=_data_uri("image/png", png.getvalue()),
        data=json.dumps(payload).replace("</", "<\\/"),
    )
    out = Path(out_html)
    atomic_write_text(out, page)
    return out
