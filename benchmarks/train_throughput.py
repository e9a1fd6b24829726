"""Training throughput of a train config on this machine: frames/s and model-FLOPs utilization (MFU).

    .venv/bin/python benchmarks/train_throughput.py --config aux                       # CPU: fp32
    .venv/bin/python benchmarks/train_throughput.py --config aux --set model.shape=base --set compile=true  # GPU: bf16

One training step = forward, loss, backward, clip and AdamW on one micro-batch of random windows of the config's
shape (batch_size × window_s), exactly as faceturn.train runs it. MFU = model FLOPs per frame (Model.flops_per_frame:
forward + backward, attention counted causally) × frames/s ÷ peak FLOP/s. The peak is the datasheet dense bf16 figure
for known GPUs with bf16 autocast; otherwise (CPU, fp32, unknown GPU) it is *measured* here with a large matmul in the
step's precision, and the report says so — a CPU "MFU" is relative to what this CPU's matmul reaches, not a datasheet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks (FLOP/s) from NVIDIA datasheets, matched by substring of the device name.
BF16_PEAK_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 80GB HBM3": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """FLOP/s of a square matmul sized for the device: the reachable peak when no datasheet figure applies."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        a @ b
    sync()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def random_batch(batch_size: int, window_frames: int, card: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Windows with the corpus' value ranges (text absent, as in the synthetic corpora)."""
    from faceturn.schema import N_CODEBOOKS, N_FACE

    b, t = batch_size, window_frames
    g = torch.Generator().manual_seed(0)
    batch = {
        "text": torch.full((b, t), -1, dtype=torch.long),
        "self_codes": torch.randint(0, card, (b, N_CODEBOOKS, t), generator=g),
        "other_codes": torch.randint(0, card, (b, N_CODEBOOKS, t), generator=g),
        "face": torch.randn(b, t, N_FACE, generator=g),
        "face_present": torch.ones(b, t, dtype=torch.bool),
        "y": (torch.rand(b, t, generator=g) < 0.1).float(),
        "m": torch.ones(b, t, dtype=torch.bool),
    }
    return {k: v.to(device) for k, v in batch.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="aux", help="train preset or TOML (default: aux)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak to divide by (default: see above)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)

    from faceturn.dist import resolve_device
    from faceturn.model import compute_loss, from_config
    from faceturn.recipe import load_train_config
    from faceturn.train import build_optimizer

    cfg = load_train_config(args.config, args.overrides)
    model_cfg = cfg.model
    device = resolve_device(cfg.device)
    bf16 = device.type == "cuda" and cfg.precision in ("auto", "bf16")
    window_frames = cfg.data.window_frames
    torch.manual_seed(cfg.seed)
    model = from_config(model_cfg, device=device)
    optimizer = build_optimizer(model, cfg.optim, device)
    step_model = torch.compile(model) if cfg.compile and device.type == "cuda" else model
    batch = random_batch(cfg.data.batch_size, window_frames, model_cfg.card, device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else nullcontext

    def step() -> None:
        with autocast():
            out = step_model(batch["text"], batch["self_codes"], batch["other_codes"], batch["face"],
                             batch["face_present"])  # fmt: skip
            loss = compute_loss(out, cfg.loss, batch["y"], batch["m"])["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup_steps):
        step()
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    frames_per_s = cfg.data.batch_size * window_frames / step_s
    flops_per_frame = model.flops_per_frame(window_frames)
    achieved = flops_per_frame * frames_per_s

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops * 1e12, "given (--peak-tflops)"
    elif bf16 and any(k in name for k in BF16_PEAK_FLOPS):
        peak = next(v for k, v in BF16_PEAK_FLOPS.items() if k in name)
        peak_source = f"datasheet dense bf16 ({name})"
    else:
        dtype = torch.bfloat16 if bf16 else torch.float32
        peak = measured_matmul_flops(device, dtype)
        peak_source = f"measured {str(dtype).removeprefix('torch.')} matmul on {name}"
    result = {
        "config": args.config,
        "overrides": args.overrides,
        "model": cfg.model.shape,
        "device": name,
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "compile": bool(cfg.compile and device.type == "cuda"),
        "parameters": model.num_parameters(),
        "batch_size": cfg.data.batch_size,
        "window_frames": window_frames,
        "step_s_median": step_s,
        "step_s_min": min(times),
        "frames_per_s": frames_per_s,
        "realtime_factor": frames_per_s / 12.5,
        "model_flops_per_frame": flops_per_frame,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak / 1e12,
        "peak_source": peak_source,
        "mfu": achieved / peak,
    }
    print(
        f"{name} · {result['precision']} · {cfg.model.shape} ({result['parameters'] / 1e6:.1f} M params) · "
        f"batch {cfg.data.batch_size} × {window_frames} frames · {result['threads']} threads\n"
        f"step {step_s * 1e3:.1f} ms (median of {args.steps}) · {frames_per_s:,.0f} frames/s "
        f"({result['realtime_factor']:,.0f}× real time)\n"
        f"{flops_per_frame / 1e6:.1f} MFLOP/frame → {achieved / 1e12:.3f} TFLOP/s of {peak / 1e12:.2f} "
        f"({peak_source}) → MFU {100 * result['mfu']:.1f} %"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
