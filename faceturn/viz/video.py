"""The demo as a video: the timeline with a moving playhead, the conversation's sound, and the interlocutor's face
video beside it when there is one.

Fast by construction: matplotlib draws the timeline once; each video frame is that picture with a playhead drawn
into a few pixel columns (restored from the static picture on the next frame) plus the current face-video picture,
composited directly in yuv420p so no frame is colour-converted. H.264 video and AAC audio in MP4, muxed in memory
and written atomically.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from faceturn.errors import FaceturnError
from faceturn.io import atomic_write_bytes
from faceturn.viz.figures import timeline_image
from faceturn.viz.media import VideoFrames, add_audio_stream, load_clip, rgb_to_yuv420, video_aspect, yuv420_frame

PLAYHEAD_RGB = (220, 20, 60)
PLAYHEAD_PX = 4  # width of the playhead line (even: chroma is half resolution)


def render_video(
    pred: str | Path | Any,  # a `faceturn predict` file or a loaded Predictions
    conversation_id: str,
    out: str | Path,
    *,
    perspective: int = 0,
    start_s: float | None = None,
    end_s: float | None = None,
    corpus: str | Path | None = None,
    video: str | Path | None = None,
    media_root: str | Path | None = None,
    fps: float = 12.5,
    height_px: int = 720,
    timeline_width_px: int = 1280,
    progress: bool = False,
) -> Path:
    """Write an MP4 of one conversation window (default: all of it) and return its path.

    `video`: the interlocutor's face video (seconds from its start = conversation time); without it, the video the
    face tracker read is looked up by name under `media_root`, and the clip has no face panel when none is found.
    """
    import av

    if not (1.0 <= fps <= 60.0):
        raise FaceturnError(f"fps must be between 1 and 60, got {fps}")
    if height_px % 2 or timeline_width_px % 2 or height_px < 240:
        raise ValueError(f"frame size {timeline_width_px}×{height_px} px must be even and at least 240 px high")
    clip = load_clip(pred, conversation_id, perspective=perspective, start_s=start_s, end_s=end_s, corpus=corpus,
                     video=video, media_root=media_root)  # fmt: skip
    data, mono, rate_hz, video = clip.data, clip.mono, clip.rate_hz, clip.video

    video_w = 0
    if video is not None:
        video_w = max(2, min(round(height_px * video_aspect(video)), round(0.9 * height_px)) // 2 * 2)
    img = timeline_image(data, timeline_width_px, height_px)
    rgb = np.zeros((height_px, video_w + timeline_width_px, 3), np.uint8)
    rgb[:, video_w:] = img.rgb
    base = rgb_to_yuv420(rgb)  # the static picture, converted once
    planes = [p.copy() for p in base]
    head = rgb_to_yuv420(np.broadcast_to(np.array(PLAYHEAD_RGB, np.uint8), (2, 2, 3)))
    top, bottom = math.floor(img.plot_top_px / 2) * 2, math.ceil(img.plot_bottom_px / 2) * 2

    def playhead(x: int, source: list[np.ndarray] | None) -> None:
        """Draw the playhead at even column x, or restore those columns from `source`."""
        for k, plane in enumerate(planes):
            d = 1 if k == 0 else 2
            rows, cols = slice(top // d, bottom // d), slice(x // d, (x + PLAYHEAD_PX) // d)
            plane[rows, cols] = head[k][0, 0] if source is None else source[k][rows, cols]

    rate = Fraction(fps).limit_denominator(1000)
    n_video_frames = math.ceil((data.end_s - data.start_s) * rate - 1e-9)
    buf = io.BytesIO()
    faces = VideoFrames(video, video_w, height_px, data.start_s) if video is not None else None
    try:
        with av.open(buf, "w", format="mp4") as container:
            vstream = container.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "23"})
            vstream.width, vstream.height, vstream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
            astream, aframe = add_audio_stream(container, mono, rate_hz, "aac", rate_hz, 96000)
            for packet in (*astream.encode(aframe), *astream.encode(None)):
                container.mux(packet)
            x_prev = None
            for i in tqdm(range(n_video_frames), desc="render", unit="frame", disable=not progress):
                t_s = data.start_s + i / float(rate)
                if x_prev is not None:
                    playhead(x_prev, base)
                x_prev = (video_w + round(float(img.x_px(t_s))) - PLAYHEAD_PX // 2) // 2 * 2
                playhead(x_prev, None)
                if faces is not None:
                    for plane, face in zip(planes, faces.at(t_s), strict=True):
                        plane[:, : face.shape[1]] = face
                frame = yuv420_frame(planes)
                frame.pts = i
                frame.time_base = 1 / rate
                for packet in vstream.encode(frame):
                    container.mux(packet)
            for packet in vstream.encode(None):
                container.mux(packet)
    finally:
        if faces is not None:
            faces.close()
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
