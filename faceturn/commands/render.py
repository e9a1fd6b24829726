"""`faceturn render`: an MP4 of one conversation's timeline with a moving playhead, its sound, and the interlocutor's
face video beside it when there is one."""

from __future__ import annotations

import argparse

from faceturn.commands._args import add_force, add_out, add_progress, add_video, add_window
from faceturn.io import MP4_VIDEO, check_output_file
from faceturn.viz.video import render_video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_out(parser, required=True, help="output MP4 file")
    add_force(parser)
    add_video(parser)
    parser.add_argument("--fps", type=float, default=12.5, help="video frame rate (default: 12.5, the model's)")
    add_progress(parser, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    inputs = {"--pred": args.pred, "--corpus": args.corpus, "--video": args.video, "--media-root": args.media_root}
    check_output_file(args.out, MP4_VIDEO, inputs=inputs, force=args.force)
    out = render_video(args.pred, args.conversation, args.out, perspective=args.perspective, start_s=args.start,
                       end_s=args.end, corpus=args.corpus, video=args.video, media_root=args.media_root, fps=args.fps,
                       progress=args.progress)  # fmt: skip
    print(f"render: wrote {out}")
    return 0
