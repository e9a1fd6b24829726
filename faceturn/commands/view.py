"""`faceturn view`: a self-contained HTML page that plays one conversation with its timeline in sync (no server)."""

from __future__ import annotations

import argparse

from faceturn.commands._args import add_out, add_video, add_window
from faceturn.viz.viewer import write_viewer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_out(parser, required=True, help="output HTML file")
    add_video(parser)


def run(args: argparse.Namespace) -> int:
    out = write_viewer(args.pred, args.conversation, args.out, perspective=args.perspective, start_s=args.start,
                       end_s=args.end, corpus=args.corpus, video=args.video, media_root=args.media_root)  # fmt: skip
    print(f"view: wrote {out} (open it in a browser)")
    return 0
