"""The `faceturn` command. Each subcommand lives in its own module and is imported only when it runs.

A subcommand module defines `add_arguments(parser)` and `run(args) -> int` (the exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Order is the order shown by `faceturn --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("faceturn.commands.demo", "build both synthetic corpora and run the main job end to end"),
    "synth": ("faceturn.commands.synth", "generate a synthetic audio-visual conversation corpus"),
    "inspect": ("faceturn.commands.inspect", "validate a corpus and print its statistics"),
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the subcommand named in `load` gets its full arguments (lazy imports)."""
    parser = argparse.ArgumentParser(prog="faceturn", description=__doc__.splitlines()[0])
    from faceturn import __version__

    parser.add_argument("--version", action="version", version=f"faceturn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == load:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load=name if name in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
