"""`faceturn view`: a self-contained HTML page that plays one conversation with its timeline in sync (no server)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from faceturn.commands.plot import add_window_arguments
    from faceturn.commands.render import add_video_arguments

    add_window_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output HTML file")
    add_video_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from faceturn.viz.viewer import write_viewer

    out = write_viewer(args.pred, args.conversation, args.out, perspective=args.perspective, start_s=args.start,
                       end_s=args.end, corpus=args.corpus, video=args.video, media_root=args.media_root)  # fmt: skip
    print(f"view: wrote {out} (open it in a browser)")
    return 0
