"""`faceturn render`: an MP4 of one conversation's timeline with a moving playhead, its sound, and the interlocutor's
face video beside it when there is one."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from faceturn.commands.plot import add_window_arguments

    add_window_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output MP4 file")
    add_video_arguments(parser)
    parser.add_argument("--fps", type=float, default=12.5, help="video frame rate (default: 12.5, the model's)")


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path,
                        help="the interlocutor's face video (its time 0 = the conversation's start)")  # fmt: skip
    parser.add_argument("--media-root", type=Path,
                        help="folder searched for the video the face tracker read (by its file name)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from faceturn.viz.video import render_video

    out = render_video(args.pred, args.conversation, args.out, perspective=args.perspective, start_s=args.start,
                       end_s=args.end, corpus=args.corpus, video=args.video, media_root=args.media_root, fps=args.fps,
                       progress=True)  # fmt: skip
    print(f"render: wrote {out}")
    return 0
