"""GPU memory of a LoRA fine-tuning step (faceturn.lora.estimate_memory), before renting the GPU.

    .venv/bin/python benchmarks/lora_memory.py                                   # the `lora` config on one 80 GB GPU
    .venv/bin/python benchmarks/lora_memory.py --set lora.rank=64 --set data.window_s=50 --gpu-gb 40

Reads a train config (default `lora`: moshi-7b, rank 128, 100 s windows, activation checkpointing) and prints, in GB
(10^9 bytes): the frozen weights (bf16 matrices, fp32 norm gains), the trainable parameters (adapters plus the modules
trained in full) with their fp32 weights, gradients and AdamW moments (16 bytes each), the activations kept for
backward per window (measured by a forward pass on the meta device, which allocates nothing), the total for the
config's batch size (or --batch), and the largest batch that fits --gpu-gb. The same figures without activation
checkpointing follow, for comparison. The estimate assumes bf16 autocast (a CUDA run's default) and excludes the CUDA
context and allocator fragmentation: --reserve-gb sets memory aside for them (an "80 GB" H100 or A100 has 81,559 MiB =
85.5 GB, so the default budget of 80·10^9 bytes already leaves about 5 GB).
"""

from __future__ import annotations

import argparse
import json
import sys

GB = 1e9


def trainable_breakdown(model_cfg, lora_cfg) -> dict[str, int]:
    """Trainable parameter counts by kind (LoRA adapters, then each module trained in full), on the meta device."""
    import torch

    from faceturn.lora import apply_lora, is_adapter
    from faceturn.model import from_config

    model = apply_lora(from_config(model_cfg, device="meta").to(torch.bfloat16), lora_cfg)
    counts: dict[str, int] = {"LoRA adapters": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            kind = "LoRA adapters" if is_adapter(name) else name.split(".", 1)[0]
            counts[kind] = counts.get(kind, 0) + p.numel()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="lora", help="train preset or TOML with lora.rank > 0 (default: lora)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch", type=int, default=None, help="windows per GPU (default: the config's batch_size)")
    parser.add_argument("--gpu-gb", type=float, default=80.0, help="GPU memory in 10^9 bytes (default: 80)")
    parser.add_argument("--reserve-gb", type=float, default=0.0, help="set aside for CUDA context etc. (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)

    from faceturn.config import ConfigError
    from faceturn.lora import estimate_memory
    from faceturn.model import from_config
    from faceturn.recipe import load_train_config

    try:
        cfg = load_train_config(args.config, args.overrides)
        model_cfg = cfg.model
    except ConfigError as e:
        parser.error(str(e))
    if cfg.lora.rank < 1:
        parser.error(f"{args.config}: lora.rank is {cfg.lora.rank}; this estimate is for LoRA runs (rank >= 1)")
    batch = cfg.data.batch_size if args.batch is None else args.batch
    if batch < 1 or args.gpu_gb <= 0 or args.reserve_gb < 0:
        parser.error("--batch must be >= 1, --gpu-gb > 0 and --reserve-gb >= 0")
    budget = int((args.gpu_gb - args.reserve_gb) * GB)
    frames = cfg.data.window_frames
    checkpointing = cfg.activation_checkpointing
    estimates = {on: estimate_memory(model_cfg, cfg.lora, frames, activation_checkpointing=on) for on in (True, False)}
    est = estimates[checkpointing]
    breakdown = trainable_breakdown(model_cfg, cfg.lora)
    if sum(breakdown.values()) != est.trainable_parameters:
        raise RuntimeError(f"trainable counts disagree: {breakdown} vs {est.trainable_parameters}")
    backbone = from_config(model_cfg, device="meta").num_parameters(backbone_only=True)

    result = {
        "config": args.config,
        "overrides": args.overrides,
        "model": cfg.model.shape,
        "backbone_parameters": backbone,
        "lora": {"rank": cfg.lora.rank, "scaling": cfg.lora.scaling, "train_modules": list(cfg.lora.train_modules)},
        "window_s": cfg.data.window_s,
        "window_frames": frames,
        "activation_checkpointing": checkpointing,
        "frozen_weights_gb": est.frozen_weights / GB,
        "trainable_parameters": est.trainable_parameters,
        "trainable_breakdown": breakdown,
        "trainable_state_gb": est.trainable_state / GB,
        "activations_per_window_gb": est.activations_per_window / GB,
        "batch": batch,
        "total_gb": est.total(batch) / GB,
        "gpu_gb": args.gpu_gb,
        "reserve_gb": args.reserve_gb,
        "max_batch": est.max_batch(budget),
        "fits": est.total(batch) <= budget,
        "other": {
            "activation_checkpointing": not checkpointing,
            "activations_per_window_gb": estimates[not checkpointing].activations_per_window / GB,
            "total_gb": estimates[not checkpointing].total(batch) / GB,
            "max_batch": estimates[not checkpointing].max_batch(budget),
        },
    }
    if args.json:
        print(json.dumps(result))
        return 0
    on_off = {True: "on", False: "off"}
    budget_text = f"{args.gpu_gb:g} GB" + (f" − {args.reserve_gb:g} GB reserve" if args.reserve_gb else "")
    kinds = ", ".join(f"{k} {n / 1e6:.1f} M" for k, n in breakdown.items())
    other = result["other"]
    rows = [
        ("frozen weights (bf16, norm gains fp32)", f"{est.frozen_weights / GB:8.2f} GB"),
        ("trainable parameters", f"{est.trainable_parameters / 1e6:8.1f} M   ({kinds})"),
        ("fp32 weights + grads + AdamW moments (16 B each)", f"{est.trainable_state / GB:8.2f} GB"),
        ("activations per window", f"{est.activations_per_window / GB:8.2f} GB"),
        (f"total, batch of {batch} windows", f"{est.total(batch) / GB:8.2f} GB  "
         f"({'fits' if result['fits'] else 'does NOT fit'} {budget_text})"),
        (f"largest batch that fits {budget_text}", f"{result['max_batch']:8d} windows"),
    ]  # fmt: skip
    print(
        f"LoRA memory estimate · {args.config} · {cfg.model.shape} ({backbone / 1e9:.2f} B backbone parameters) · "
        f"rank {cfg.lora.rank}, scaling {cfg.lora.scaling:g} · windows of {cfg.data.window_s:g} s ({frames} frames) · "
        f"bf16 autocast · activation checkpointing {on_off[checkpointing]}"
    )
    for label, value in rows:
        print(f"  {label:49} {value}")
    print(
        f"  (activation checkpointing {on_off[not checkpointing]}: {other['activations_per_window_gb']:.2f} GB per "
        f"window, batch {batch} needs {other['total_gb']:.2f} GB, at most {other['max_batch']} windows fit)\n"
        "  not included: the CUDA context and allocator fragmentation (--reserve-gb sets memory aside for them)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
