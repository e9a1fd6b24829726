"""`faceturn live`: P(yield) from a real camera and microphone, in real time, on a local web page.

The person at the camera is the interlocutor; the model's own side (the agent) is silent, plays `--self-audio`, or is
a second page of the same session (a two-party call). The server binds to 127.0.0.1 unless `--host` says otherwise
(browsers give camera and microphone only to localhost or HTTPS pages). `--record DIR` keeps every session as a
corpus conversation with its predictions (faceturn.live.record). Listener settings (`video_wait_s`, `mimi.*`,
`face.*`, `silero.*`) are set with `--set`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from faceturn.checkpoint import load_model, resolve_checkpoint
from faceturn.commands._args import add_device, add_run, add_set
from faceturn.config import apply_overrides
from faceturn.errors import ConfigError, FaceturnError
from faceturn.export import BACKENDS, listening_model
from faceturn.io import check_output_dir
from faceturn.live.listener import ListenerSettings
from faceturn.live.record import trained_on
from faceturn.live.server import LiveModel, serve
from faceturn.prep.audio_tokens import MimiEncoder, MimiSettings
from faceturn.prep.face import FaceSettings, resolve_face_model
from faceturn.prep.media import read_audio
from faceturn.stream import AlertTrigger

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--mimi", default="kyutai/mimi", help="MimiModel: local folder or hub id (default kyutai/mimi)")
    parser.add_argument("--face-model", default="", help="face_landmarker.task (default: $FACETURN_FACE_MODEL)")
    parser.add_argument("--self-audio", type=Path, default=None, help="a WAV the agent plays as its voice")
    parser.add_argument("--record", type=Path, default=None, help="keep every session in this folder (a corpus)")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(yield) that raises an alert (default: 0.5)")
    parser.add_argument("--hysteresis", type=float, default=0.1,
                        help="P must fall below threshold − this before the next alert (default: 0.1)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch CPU threads (default: all cores but one, for the face landmarker)")  # fmt: skip
    parser.add_argument("--backend", choices=BACKENDS, default="eager",
                        help="the model step: eager (PyTorch), onnx or onnx-int8 (onnxruntime, on the graphs of "
                        "`faceturn export --run RUN --format onnx [--quantize int8]`; default: eager)")  # fmt: skip
    add_device(parser)
    add_set(parser, help="override a listener setting, e.g. video_wait_s=0.2 (repeatable)")


def build(args: argparse.Namespace) -> tuple[LiveModel, list[str]]:
    """Everything a session needs, loaded and checked before the server starts; and notes for the log."""
    AlertTrigger(args.threshold, args.hysteresis)  # checks both before anything is loaded
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1–65535, got {args.port}")
    torch.set_num_threads(args.threads)
    settings = ListenerSettings(
        mimi=MimiSettings(model=args.mimi, device=args.device),
        face=FaceSettings(model=args.face_model),
        threshold=args.threshold,
        hysteresis=args.hysteresis,
    )
    settings = apply_overrides(settings, args.overrides)
    resolve_face_model(settings.face.model)  # says how to get it when missing
    ckpt = resolve_checkpoint(args.run, allow_older=args.allow_older)
    model, train_cfg = load_model(ckpt, device=args.device)
    if args.backend != "eager":  # the PyTorch model above is read for its config; the listener steps the graph
        model = listening_model(ckpt, args.backend, device=args.device, threads=args.threads)
    try:
        from transformers import MimiModel

        mimi_model = MimiModel.from_pretrained(settings.mimi.model)
    except (OSError, ValueError) as e:
        raise FaceturnError(f"cannot load Mimi {settings.mimi.model!r} ({str(e).splitlines()[0]}); give --mimi a "
                            "local folder saved with save_pretrained") from None  # fmt: skip
    mimi = MimiEncoder(settings.mimi, model=mimi_model)
    if int(mimi.model.config.codebook_size) > model.cfg.card:
        raise FaceturnError(f"Mimi {settings.mimi.model!r} has {mimi.model.config.codebook_size} codes per codebook, "
                            f"the model reads {model.cfg.card}")  # fmt: skip
    self_audio = None
    if args.self_audio is not None:
        wave, rate_hz = read_audio(args.self_audio)
        self_audio = (wave, rate_hz)
    if args.record is not None:
        inputs = {"--run": args.run, **({"--self-audio": args.self_audio} if args.self_audio else {})}
        check_output_dir(args.record, inputs=inputs, flag="--record")
    origin = trained_on(ckpt)
    info = {
        "checkpoint": str(ckpt),
        "step": ckpt.name,
        "backend": args.backend,
        "shape": train_cfg.model.shape or "custom",
        "trained_on": origin,
        "threshold": settings.threshold,
        "hysteresis": settings.hysteresis,
        "agent": "plays " + args.self_audio.name if args.self_audio else "silent (or a second page in a call)",
        "agent_wav": self_audio is not None,
        "self_audio_file": str(args.self_audio.resolve()) if args.self_audio else None,
        "record": str(args.record.resolve()) if args.record else None,
    }
    notes = []
    if origin.get("synthetic"):
        notes.append(f"{ckpt} was trained on a synthetic corpus: its P(yield) for a real face means nothing")
    if args.host not in LOCAL_HOSTS:
        notes.append(f"listening on {args.host}: anyone who can reach it can stream to this model; browsers allow "
                     "the camera only on localhost or HTTPS pages")  # fmt: skip
    return LiveModel(model, train_cfg, ckpt, mimi, settings, info, self_audio, args.record), notes


def run(args: argparse.Namespace) -> int:
    live, notes = build(args)
    logging.basicConfig(level=logging.INFO, format="faceturn live: %(message)s", stream=sys.stderr)
    for note in notes:
        logging.getLogger("faceturn.live").warning(note)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"faceturn live: open http://{host}:{args.port}/ (checkpoint {live.checkpoint}); Ctrl-C stops",
          file=sys.stderr, flush=True)  # fmt: skip
    serve(live, args.host, args.port)
    return 0
