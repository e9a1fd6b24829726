"""faceturn's per-frame step next to Smart Turn v3.2 (pipecat's end-of-turn model), in one process, on the same threads.

    .venv/bin/python benchmarks/vs_smart_turn.py                     # tiny and small, eager and ONNX, 2 threads
    .venv/bin/python benchmarks/vs_smart_turn.py --threads 1 --frames 2000 --corpus /tmp/demo/corpora/tight

Smart Turn v3.2 ships in the `pipecat-ai` wheel as an int8 ONNX file (smart-turn-v3.2-cpu.onnx). One decision is
pipecat's own `LocalSmartTurnAnalyzerV3._predict_endpoint` on an 8 s window of 16 kHz audio: Whisper log-mel
features (pipecat's numpy code), then the model; that is what pipecat runs each time its VAD reports a pause.
faceturn's decision is one 80 ms frame of one stream: `step_batch` of `TurnYieldStream` (eager PyTorch) or of
`OnnxYieldStream` (the graph of `faceturn export`, fp32 and int8), input checks and the copy of P(yield) included,
for `tiny` and `small` with random weights (latency does not depend on them; the caches are full-size rings from the
first frame). Every system gets `--threads` threads (torch.set_num_threads, onnxruntime's intra-op threads,
pipecat's `cpu_count`).

Printed per system: latency per decision p50 / p99 (wall clock), decisions per second of conversation, and CPU time
per second of conversation (the process CPU time of the measured decisions, per decision, times the decisions per
second). faceturn decides 12.5 times a second. Smart Turn decides once per pause of the user's speech; the rate is
`--pauses-per-min` or, with `--corpus`, counted in a corpus (per participant, the silences of at least
`--pause-s` after speech, per second of conversation). No accuracy is compared: Smart Turn reads audio only and was
trained on real speech; on synthetic speech its output means nothing (docs/results.md). Needs `pipecat-ai` (its
wheel holds the model) and the `onnx` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SMART_TURN_WINDOW_S = 8
SMART_TURN_RATE_HZ = 16_000
FRAME_RATE_HZ = 12.5


def measure(decide, n: int, warmup: int) -> dict[str, float]:
    """Wall-clock ms of each of n calls after `warmup`, and the process CPU seconds they took together."""
    for i in range(warmup):
        decide(i)
    ms = np.empty(n)
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        decide(warmup + i)
        ms[i] = (time.perf_counter() - t0) * 1e3
    cpu_s = time.process_time() - cpu0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "cpu_s_per_decision": cpu_s / n, "decisions": n}  # fmt: skip


def smart_turn(threads: int):
    """pipecat's analyzer with its bundled model, and the 8 s windows it is given (speech-like noise bursts)."""
    from loguru import logger
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    logger.disable("pipecat")  # its debug lines about loading the model
    analyzer = LocalSmartTurnAnalyzerV3(cpu_count=threads, sample_rate=SMART_TURN_RATE_HZ)
    rng = np.random.default_rng(0)
    n = SMART_TURN_WINDOW_S * SMART_TURN_RATE_HZ
    t = np.arange(n) / SMART_TURN_RATE_HZ
    windows = [(0.3 * np.sin(2 * np.pi * 3 * t + k) ** 2 * rng.standard_normal(n)).astype(np.float32) for k in range(8)]
    return lambda i: analyzer._predict_endpoint(windows[i % len(windows)])


def faceturn_streams(config: str, threads: int, root: Path, check_frames: int) -> dict:
    """Streams of one row over a random `config` model: eager, and the ONNX graphs of its export (fp32, int8)."""
    from faceturn.checkpoint import save_checkpoint
    from faceturn.export import OnnxStep, export_run
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config, resolved_config
    from faceturn.stream import TurnYieldStream

    cfg = load_train_config("aux", [f"model.shape={config}"])
    torch.manual_seed(0)
    model = from_config(cfg.model).eval()
    run = root / config
    save_checkpoint(run, 0, model, torch.optim.AdamW(model.parameters()), {}, resolved_config(cfg), keep_last=1)
    folder, meta = export_run(run, int8=True, check_frames=check_frames)
    print(f"# exported {config}: {', '.join(f'{n} {(folder / n).stat().st_size / 1e6:.1f} MB' for n in meta['files'])}"
          f"; check over {check_frames} frames: {meta['check']}", file=sys.stderr)  # fmt: skip
    return {
        "eager": TurnYieldStream(model, 1),
        "onnx": OnnxStep(folder, threads=threads).stream(1),
        "onnx-int8": OnnxStep(folder, int8=True, threads=threads).stream(1),
    }


def frame_inputs(n: int, card: int, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    from faceturn.schema import N_CODEBOOKS, N_FACE

    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, card, (1, N_CODEBOOKS), generator=g), torch.randint(0, card, (1, N_CODEBOOKS), generator=g),
         torch.randn(1, N_FACE, generator=g), torch.rand(1, generator=g) > 0.1)
        for _ in range(n)
    ]  # fmt: skip


def pauses_per_s(corpus: Path, pause_s: float) -> float:
    """Per participant, silences of at least `pause_s` that follow speech (voiced fraction >= 0.5), per second."""
    from faceturn.store import Corpus
    from faceturn.timebase import FRAME_S

    c = Corpus(corpus)
    need = max(1, round(pause_s / FRAME_S))
    pauses = seconds = 0.0
    for cid in c.ids():
        va = np.asarray(c.load(cid).va, np.float32) >= 0.5
        for side in va:
            run = 0
            spoke = False
            for voiced in side:
                if voiced:
                    spoke, run = True, 0
                else:
                    run += 1
                    pauses += spoke and run == need
            seconds += side.size * FRAME_S
    return pauses / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="threads of every system (default: 2)")
    parser.add_argument("--configs", default="tiny,small", help="faceturn model shapes (default: tiny,small)")
    parser.add_argument("--frames", type=int, default=1000, help="measured faceturn frames per row (default: 1000)")
    parser.add_argument("--decisions", type=int, default=200, help="measured Smart Turn decisions (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls first (default: 20)")
    parser.add_argument("--check-frames", type=int, default=50, help="frames of each export's own check")
    parser.add_argument(
        "--pauses-per-min",
        type=float,
        default=12.0,
        help="Smart Turn decisions per minute of conversation, without --corpus (default: 12)",
    )
    parser.add_argument("--corpus", type=Path, help="count the pauses per minute in this corpus instead")
    parser.add_argument("--pause-s", type=float, default=0.24,
                        help="silence after speech that makes a pause (default: 0.24 s, 3 frames)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    args = parser.parse_args(argv)
    if min(args.threads, args.frames, args.decisions) < 1 or args.warmup < 0:
        parser.error("--threads, --frames and --decisions must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    pause_rate = pauses_per_s(args.corpus, args.pause_s) if args.corpus else args.pauses_per_min / 60
    load = os.getloadavg()[0]
    rows = []
    st = measure(smart_turn(args.threads), args.decisions, args.warmup)
    rows.append({"system": "Smart Turn v3.2 int8 (8 s window)", "decisions_per_s": pause_rate, **st})
    with tempfile.TemporaryDirectory(prefix="vs-smart-turn-") as tmp:
        for config in args.configs.split(","):
            streams = faceturn_streams(config, args.threads, Path(tmp), args.check_frames)
            card = streams["eager"].cfg.card
            inputs = frame_inputs(args.warmup + args.frames, card)
            for backend, stream in streams.items():
                r = measure(lambda i, s=stream, x=inputs: s.step_batch(*x[i]), args.frames, args.warmup)
                rows.append({"system": f"faceturn {config} {backend} (80 ms frame)", "decisions_per_s": FRAME_RATE_HZ,
                             **r})  # fmt: skip
    rows.append({"system": "Smart Turn v3.2 int8, again", "decisions_per_s": pause_rate,
                 **measure(smart_turn(args.threads), args.decisions, args.warmup)})  # fmt: skip
    for r in rows:
        r["cpu_s_per_s"] = r["cpu_s_per_decision"] * r["decisions_per_s"]
        r["threads"] = args.threads
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    import onnxruntime

    where = "a corpus" if args.corpus else "assumed"
    print(f"vs Smart Turn v3.2 · {args.threads} threads · torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__} · load average before {load:.2f} · Smart Turn decisions: "
          f"{pause_rate * 60:.1f} pauses/min ({where})")  # fmt: skip
    print(f"{'system':42} {'p50 ms':>8} {'p99 ms':>8} {'decisions/s':>11} {'CPU ms/s of conv.':>17}")
    for r in rows:
        print(f"{r['system']:42} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['decisions_per_s']:11.2f} "
              f"{r['cpu_s_per_s'] * 1e3:17.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
