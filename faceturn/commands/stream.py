"""`faceturn stream`: replay a prepared conversation frame by frame through the streaming turn-yield predictor.

The model listens as one participant (`--self`) and sees the other's face; every 80 ms frame gives P(yield). An alert
fires when P reaches `--threshold` and re-arms once it falls below threshold − hysteresis. Real hand-overs (the
offline floor of faceturn.labels) are printed as they happen, with the alert that announced them; at the end, how
many were announced, how early (an alert announces the hand-overs within the label horizon after it), and how many
alerts were false.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceturn.checkpoint import CONFIG_FILE, load_model
from faceturn.commands._args import add_corpus, add_device, add_progress, add_run
from faceturn.errors import FaceturnError
from faceturn.labels import turn_labels
from faceturn.store import Corpus, fingerprint
from faceturn.stream import AlertTrigger, TurnYieldStream, score_alerts
from faceturn.timebase import FRAME_S, duration_to_frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    add_corpus(parser)
    parser.add_argument("--conversation", required=True, help="conversation id (see `faceturn inspect`)")
    parser.add_argument("--self", dest="self_speaker", type=int, choices=(0, 1), default=0,
                        help="participant the model listens as; it sees the other's face (default: 0)")  # fmt: skip
    parser.add_argument("--threshold", type=float, default=0.5, help="P(yield) that raises an alert (default: 0.5)")
    parser.add_argument("--hysteresis", type=float, default=0.1,
                        help="P must fall below threshold − this before the next alert (default: 0.1)")  # fmt: skip
    parser.add_argument("--realtime", action="store_true", help="play at 12.5 frames per second, as live input")
    parser.add_argument("--seconds", type=float, default=0.0, help="play only the first SECONDS (default: all)")
    parser.add_argument("--no-face", action="store_true", help="zero the face (no face at all), for comparison")
    add_progress(parser, help="print the summary only (no line per alert or hand-over)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    trigger = AlertTrigger(args.threshold, args.hysteresis)  # checks both before anything is loaded
    if args.seconds < 0:
        raise FaceturnError(f"--seconds must be >= 0, got {args.seconds}")
    if args.threads < 0:
        raise FaceturnError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    conv = Corpus(args.corpus).load(args.conversation)
    model, train_cfg = load_model(args.run, device=args.device, allow_older=args.allow_older)
    stream = TurnYieldStream(model)
    trained = _trained_on(args.run)  # a model may be replayed on another corpus: say so, never refuse
    if trained is not None and trained.get("fingerprint") != fingerprint(args.corpus):
        print(f"faceturn stream: note: {args.run} was trained on corpus {trained.get('path')}, not on {args.corpus} "
              "(their manifests differ)", file=sys.stderr)  # fmt: skip

    s, o = args.self_speaker, 1 - args.self_speaker
    labels = turn_labels(np.asarray(conv.va, dtype=np.float32), train_cfg.labels)
    holder = labels.floor_relative(s)
    handovers = {int(f): int(to) for f, to in zip(labels.shift_frames, labels.shift_to, strict=True)}
    n_frames = conv.n_frames if not args.seconds else min(conv.n_frames, duration_to_frames(args.seconds))
    codes = torch.from_numpy(np.array(conv.codes[:, :, :n_frames], dtype=np.int64))
    text = torch.from_numpy(np.array(conv.text[s, :n_frames], dtype=np.int64))
    face = torch.from_numpy(np.array(conv.face[o, :n_frames], dtype=np.float32))
    present = torch.from_numpy(np.array(conv.face_present[o, :n_frames], dtype=bool))
    if args.no_face:
        face, present = torch.zeros_like(face), torch.zeros_like(present)
    horizon = train_cfg.labels.horizon_frames

    def say(line: str) -> None:
        if args.progress:
            print(line, flush=True)

    who = {1: "self", 0: "other", -1: "nobody"}
    say(f"stream: {args.conversation}, listening as participant {s}, {n_frames} frames ({n_frames * FRAME_S:.1f} s), "
        f"{'face zeroed' if args.no_face else 'face as given'}, threshold {args.threshold}, hysteresis "
        f"{args.hysteresis}{', real time' if args.realtime else ''}")  # fmt: skip
    alerts: list[int] = []
    latency_ms = []
    start = time.perf_counter()
    for k in range(n_frames):
        if args.realtime:  # frame k is complete at the end of its 80 ms
            time.sleep(max(0.0, start + (k + 1) * FRAME_S - time.perf_counter()))
        t0 = time.perf_counter()
        p = stream.step(codes[s, :, k], codes[o, :, k], face[k], present[k], text[k])
        latency_ms.append((time.perf_counter() - t0) * 1e3)
        if k in handovers:
            announced = [a for a in alerts if k - horizon <= a < k]
            ahead = f"announced {(k - announced[0]) * FRAME_S:.2f} s ahead" if announced else "not announced"
            say(f"{k * FRAME_S:8.2f} s  hand-over: {who[int(handovers[k] == s)]} takes the floor ({ahead})")
        if trigger.update(p):
            alerts.append(k)
            say(f"{k * FRAME_S:8.2f} s  ALERT  P(yield) {p:.2f}  (floor: {who[int(holder[k])]})")

    score = score_alerts(alerts, [f for f in handovers if f < n_frames], horizon)
    lead = f", median lead {score.median_lead_s:.2f} s" if score.median_lead_s is not None else ""
    share = f" ({score.n_announced / score.n_handovers:.0%})" if score.n_handovers else ""
    print(f"hand-overs: {score.n_handovers} real, {score.n_announced} announced{share}{lead}")
    print(f"alerts: {score.n_alerts}, {score.n_false} false (no hand-over within {train_cfg.labels.horizon_s:g} s)")
    if latency_ms:
        lat = np.asarray(latency_ms)
        print(f"latency: {np.percentile(lat, 50):.2f} ms per frame (p99 {np.percentile(lat, 99):.2f} ms)")
    return 0


def _trained_on(run: Path) -> dict[str, Any] | None:
    """The corpus a run (or checkpoint) folder records it was trained on ({"path", "fingerprint"}), if any."""
    try:
        record = json.loads((Path(run) / CONFIG_FILE).read_text()).get("corpus")
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None
