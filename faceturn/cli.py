"""The `faceturn` command. Each subcommand lives in its own module and is imported only when it runs.

A subcommand module defines `add_arguments(parser)` and `run(args) -> int` (the exit status); arguments that several
share come from `faceturn.commands._args`. Errors are handled here, once: a `FaceturnError` (bad input or state) or
an OSError on a file ends with one line, `faceturn COMMAND: error: MESSAGE`, and exit status 2; anything else is a
bug and keeps its traceback. Set FACETURN_DEBUG=1 for the traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from faceturn import __version__
from faceturn.errors import FaceturnError

# name -> (module, one-line help). Order is the order shown by `faceturn --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("faceturn.commands.demo", "the main job: the whole study on the two built-in synthetic corpora (CPU)"),
    "synth": ("faceturn.commands.synth", "generate a synthetic audio-visual conversation corpus"),
    "prepare": (
        "faceturn.commands.prepare",
        "prepare a real corpus (Seamless Interaction, MultiDialog, Live Link Face, recordings) on the 12.5 Hz grid",
    ),
    "inspect": ("faceturn.commands.inspect", "validate a corpus and print its statistics"),
    "train": ("faceturn.commands.train", "train the face-aware dialogue LM (CPU, one GPU or torchrun)"),
    "probe": ("faceturn.commands.probe", "step 1: logistic probe on windows of the interlocutor's face"),
    "analyze": ("faceturn.commands.analyze", "step 2: does the model use the face? (ΔNLL, KL, probes, readout gain)"),
    "predict": ("faceturn.commands.predict", "per-frame P(yield) with the face and with it zeroed"),
    "evaluate": ("faceturn.commands.evaluate", "step 3: face vs zeroed AUC with paired CIs, VAP event metrics"),
    "plot": ("faceturn.commands.plot", "figures from prediction files: the demo timeline, ROC curves"),
    "render": ("faceturn.commands.render", "an MP4 of a conversation's timeline with a moving playhead and its sound"),
    "view": ("faceturn.commands.view", "a self-contained HTML viewer: sound or video in sync with the timeline"),
    "talk": ("faceturn.commands.talk", "step 4: the model talks against replayed conversations, face vs zeroed"),
    "timing": ("faceturn.commands.timing", "step 4: turn-timing metrics of a talk file, face vs zeroed, paired CIs"),
    "study": ("faceturn.commands.study", "the whole study (steps 1-3, attribution, report) from a study config"),
    "attribute": ("faceturn.commands.attribute", "which face groups matter: leave-one-group-out by retraining"),
    "import-moshi": ("faceturn.commands.import_moshi", "import kyutai's Moshi 7B weights into a run folder"),
    "stream": ("faceturn.commands.stream", "replay a conversation frame by frame: live P(yield) and hand-over alerts"),
    "live": ("faceturn.commands.live", "a local web page: P(yield) from your camera and microphone, in real time"),
    "export": ("faceturn.commands.export", "the listening step as ONNX for onnxruntime (fp32, optionally int8)"),
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the subcommand named in `load` gets its full arguments (lazy imports)."""
    parser = argparse.ArgumentParser(prog="faceturn", description=__doc__.splitlines()[0])
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
    args.argv = list(argv)  # as given: a command that submits itself as cluster jobs (prepare --executor slurm)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except FaceturnError as e:  # bad input or state: the message names the file or key and the problem
        if os.environ.get("FACETURN_DEBUG"):
            raise
        return _error(args.command, str(e))
    except BrokenPipeError:  # `faceturn inspect --json | head`: the reader left; stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141  # 128 + SIGPIPE
    except OSError as e:
        if e.filename is None or os.environ.get("FACETURN_DEBUG"):
            raise  # not about a file the user named: a bug or the system
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return _error(args.command, f"{where}: {e.strerror or e}")


def _error(command: str, message: str) -> int:
    print(f"faceturn {command}: error: {message}", file=sys.stderr)
    return 2
