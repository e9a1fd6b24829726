"""Per-GPU memory of a full fine-tuning step with FSDP2 (faceturn.memory.estimate_fsdp), before renting the GPUs.

    .venv/bin/python benchmarks/fsdp_memory.py                          # moshi-7b, 8 × 80 GB, 100 s windows
    .venv/bin/python benchmarks/fsdp_memory.py --gpus 4 --set data.window_s=50 --set activation_checkpointing=false

Reads a train config (default `aux` with the settings below, each overridable by --set) and prints, in GB (10^9
bytes) per GPU: this GPU's shard of the fp32 master weights, gradients and AdamW moments (16 bytes per element, the
first dimension of every parameter padded to a multiple of the GPU count); the root unit (embeddings, heads, face
encoder), gathered in bf16 with its bf16 gradients through the backward pass; two layer units in flight (bf16
weights and gradients and the fp32 gradients reduce-scattered); the activations kept for backward per window
(measured by a forward pass on the meta device, which allocates nothing); the total for the config's batch (or
--batch); the largest batch that fits --gpu-gb. Then the same without activation checkpointing, the start-up peak
(the whole fp32 model, which training builds on every GPU before sharding it) and DDP for comparison (16 bytes per
parameter on every GPU). Excluded: the CUDA context and allocator fragmentation (--reserve-gb sets memory aside).
"""

from __future__ import annotations

import argparse
import json
import sys

GB = 1e9
DEFAULTS = ["model.shape=moshi-7b", "data.window_s=100", "activation_checkpointing=true", "parallel=fsdp"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="aux", help="train preset or TOML (default: aux)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"after the defaults {' '.join(DEFAULTS)}")  # fmt: skip
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the model is sharded over (default: 8)")
    parser.add_argument("--batch", type=int, default=None, help="windows per GPU (default: the config's batch_size)")
    parser.add_argument("--gpu-gb", type=float, default=80.0, help="GPU memory in 10^9 bytes (default: 80)")
    parser.add_argument("--reserve-gb", type=float, default=0.0, help="set aside for CUDA context etc. (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)

    from faceturn.config import ConfigError
    from faceturn.memory import estimate_fsdp
    from faceturn.recipe import load_train_config

    overrides = [*DEFAULTS, *args.overrides]
    try:
        cfg = load_train_config(args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    if cfg.parallel != "fsdp":
        parser.error(f"parallel is {cfg.parallel!r}; this estimate is for parallel = 'fsdp'")
    batch = cfg.data.batch_size if args.batch is None else args.batch
    if batch < 1 or args.gpus < 1 or args.gpu_gb <= 0 or args.reserve_gb < 0:
        parser.error("--batch and --gpus must be >= 1, --gpu-gb > 0 and --reserve-gb >= 0")
    budget = int((args.gpu_gb - args.reserve_gb) * GB)
    frames = cfg.data.window_frames
    checkpointing = cfg.activation_checkpointing
    estimates = {on: estimate_fsdp(cfg.model, args.gpus, frames, activation_checkpointing=on) for on in (True, False)}
    est, other = estimates[checkpointing], estimates[not checkpointing]
    ddp_fixed = 16 * est.parameters  # DDP: everything on every GPU

    result = {
        "config": args.config,
        "overrides": overrides,
        "model": cfg.model.shape,
        "parameters": est.parameters,
        "gpus": args.gpus,
        "window_s": cfg.data.window_s,
        "window_frames": frames,
        "activation_checkpointing": checkpointing,
        "sharded_state_gb": est.sharded_state / GB,
        "root_unit_gb": est.root_unit / GB,
        "layers_in_flight_gb": est.layers_in_flight / GB,
        "activations_per_window_gb": est.activations_per_window / GB,
        "batch": batch,
        "total_gb": est.total(batch) / GB,
        "gpu_gb": args.gpu_gb,
        "reserve_gb": args.reserve_gb,
        "max_batch": est.max_batch(budget),
        "fits": est.total(batch) <= budget,
        "startup_gb": est.startup / GB,
        "other": {
            "activation_checkpointing": not checkpointing,
            "activations_per_window_gb": other.activations_per_window / GB,
            "total_gb": other.total(batch) / GB,
            "max_batch": other.max_batch(budget),
        },
        "ddp_gb": (ddp_fixed + batch * est.activations_per_window) / GB,
    }
    ddp_fits = result["ddp_gb"] * GB <= budget
    if args.json:
        print(json.dumps(result))
        return 0
    on_off = {True: "on", False: "off"}
    budget_text = f"{args.gpu_gb:g} GB" + (f" − {args.reserve_gb:g} GB reserve" if args.reserve_gb else "")
    rows = [
        (f"fp32 weights + grads + AdamW moments, 1/{args.gpus} shard", f"{est.sharded_state / GB:8.2f} GB"),
        ("root unit gathered (bf16 weights + bf16 grads)", f"{est.root_unit / GB:8.2f} GB"),
        ("two layer units in flight (bf16 w + g, fp32 g)", f"{est.layers_in_flight / GB:8.2f} GB"),
        ("activations per window", f"{est.activations_per_window / GB:8.2f} GB"),
        (f"total, batch of {batch} windows", f"{est.total(batch) / GB:8.2f} GB  "
         f"({'fits' if result['fits'] else 'does NOT fit'} {budget_text})"),
        (f"largest batch that fits {budget_text}", f"{result['max_batch']:8d} windows per GPU"),
        ("start-up: the whole fp32 model before sharding", f"{est.startup / GB:8.2f} GB"),
    ]  # fmt: skip
    print(
        f"FSDP2 memory estimate per GPU · {args.config} · {cfg.model.shape} ({est.parameters / 1e9:.2f} B parameters) "
        f"· {args.gpus} GPUs · windows of {cfg.data.window_s:g} s ({frames} frames) · bf16 compute, fp32 master "
        f"weights · activation checkpointing {on_off[checkpointing]}"
    )
    for label, value in rows:
        print(f"  {label:49} {value}")
    print(
        f"  (activation checkpointing {on_off[not checkpointing]}: {other.activations_per_window / GB:.2f} GB per "
        f"window, batch {batch} needs {other.total(batch) / GB:.2f} GB, at most {other.max_batch(budget)} windows "
        f"fit)\n"
        f"  (DDP instead: {ddp_fixed / GB:.1f} GB of weights, gradients and moments on every GPU, "
        f"{result['ddp_gb']:.1f} GB at batch {batch}: {'fits' if ddp_fits else 'does NOT fit'})\n"
        "  not included: the CUDA context and allocator fragmentation (--reserve-gb sets memory aside for them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
