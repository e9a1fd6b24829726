"""`faceturn view`: a self-contained HTML page that plays one conversation with its timeline in sync (no server)."""

from __future__ import annotations

import argparse

from faceturn.commands._args import add_force, add_out, add_video, add_window
from faceturn.io import HTML_PAGE, check_output_file
from faceturn.viz.viewer import write_viewer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_window(parser)
    add_out(parser, required=True, help="output HTML file")
    add_force(parser)
    add_video(parser)


def run(args: argparse.Namespace) -> int:
    inputs = {"--pred": args.pred, "--corpus": args.corpus, "--video": args.video, "--media-root": args.media_root}
    check_output_file(args.out, HTML_PAGE, inputs=inputs, force=args.force)
    out = write_viewer(args.pred, args.conversation, args.out, perspective=args.perspective, start_s=args.start,
                       end_s=args.end, corpus=args.corpus, video=args.video, media_root=args.media_root)  # fmt: skip
    print(f"view: wrote {out} (open it in a browser)")
    return 0
