"""Training speed against kyutai's implementation: forward + loss + backward of faceturn's `Model` and of kyutai's
`moshi.models.lm.LMModel` (moshi 0.2.13) on the same shape, the same weights and the same batch, in one process.

    .venv/bin/python benchmarks/vs_moshi.py --shape tiny                              # CPU, fp32, 2 threads
    .venv/bin/python benchmarks/vs_moshi.py --shape base --batch 1 --frames 32        # CPU: a couple of minutes
    .venv/bin/python benchmarks/vs_moshi.py --shape base --batch 8 --frames 250       # GPU: bf16 autocast
    .venv/bin/python benchmarks/vs_moshi.py --shape base --profile 15                 # where the time goes, per model

A shape is one of our model configs (faceturn/configs/model/: tiny, small, base, moshi-7b) written as kyutai's LMModel
kwargs: every option of the released 7B (faceturn.moshi_import.kyutai_7b_kwargs) with that config's sizes. Our model is
built from those kwargs by `model_config_from_kyutai` (checked to give back the named config, face parts included) and
filled with kyutai's freshly initialised weights by `build_imported`, as `faceturn import-moshi` does; the two losses
printed must agree (fp32: to ~1e-5). The loss is the same function on both outputs: cross-entropy over the text logits
plus cross-entropy over the 8 audio codebooks' logits, each averaged over the positions its mask keeps. Our forward
also runs what kyutai's has no counterpart for (face encoder, face and yield heads; their outputs are unused here),
and one more temporal position (T + 1: the yield head reads the end of the last frame); the FLOPs of one step, counted
by torch's FlopCounterMode on each model, show what that costs (about 1/T of the temporal transformer).

Repeats are interleaved (ours, kyutai's, then kyutai's, ours, ...) after untimed warm-up steps (raise --warmup when
the first timed steps are much slower: fresh memory being faulted in, e.g. in a VM), gradients are dropped between
steps, and each side reports the median of its repeats; ratio = ours / kyutai's medians (< 1: ours is faster),
printed beside the ratio of the minimums (the steps other processes disturbed least) and the median of the
per-repeat ratios (which a slowly changing load moves less): on a shared machine, trust them when they agree. On CUDA
both run in bf16 autocast on fp32 weights and every step ends with a device sync. kyutai's lazy `torch.compile` of
its norm / RoPE / gating kernels is off (NO_TORCH_COMPILE=1 unless set otherwise): both models run eager.

Acceptance target (issue 9): our implementation is not slower on the base shape, i.e. ratio <= 1, measured on a GPU
machine when one is available; otherwise report the CPU figure and say that it is one. Figures are printed, never
asserted: a shared or busy machine moves them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # read when moshi is imported

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from faceturn.model import ModelConfig, load_model_config, named_configs
from faceturn.moshi_import import NEW_PART_FIELDS, build_imported, kyutai_7b_kwargs, model_config_from_kyutai
from faceturn.schema import N_CODEBOOKS, N_FACE


def kyutai_kwargs(cfg: ModelConfig) -> dict:
    """kyutai's LMModel kwargs for our config `cfg`: the released 7B's options, `cfg`'s sizes (same-named keys)."""
    kwargs = kyutai_7b_kwargs()
    for key in kwargs:
        if hasattr(cfg, key):
            value = getattr(cfg, key)
            kwargs[key] = list(value) if isinstance(value, tuple) else value
    return kwargs


def build_pair(shape: str, seed: int):
    """(ours, kyutai's, kwargs) in fp32 on CPU, with the same weights: kyutai's, imported into ours."""
    from moshi.models import lm

    cfg = load_model_config(shape)
    kwargs = kyutai_kwargs(cfg)
    new_parts = [f"{f}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for f in NEW_PART_FIELDS
                 for v in [getattr(cfg, f)]]  # fmt: skip
    ours_cfg = model_config_from_kyutai(kwargs, f"{shape} as kyutai kwargs", new_parts)
    if ours_cfg != dataclasses.replace(cfg, face_zero_init=True):
        raise RuntimeError(f"{shape}: kyutai kwargs {kwargs} do not map back to the named config")
    torch.manual_seed(seed)
    theirs = lm.LMModel(**kwargs)
    # The backbone tensors are shared with kyutai's model (assign=True); nothing here modifies a weight.
    ours = build_imported(ours_cfg, theirs.state_dict().items(), "kyutai LMModel", torch.float32, seed)
    return ours.train(), theirs.train(), kwargs


def make_batch(batch: int, frames: int, card: int, text_card: int, seed: int) -> dict[str, torch.Tensor]:
    """kyutai-ordered codes [B, 17, T] (text, Moshi 8, user 8) with some absent text (-1), a padded tail on the last
    row, and the interlocutor's face (present) for ours."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, text_card, (batch, 1, frames), generator=g)
    codes = torch.cat([text, torch.randint(0, card, (batch, 2 * N_CODEBOOKS, frames), generator=g)], dim=1)
    codes[:, 0][torch.rand(batch, frames, generator=g) < 0.3] = -1
    codes[-1, :, frames - frames // 8 :] = -1
    return {
        "codes": codes,
        "face": torch.randn(batch, frames, N_FACE, generator=g),
        "face_present": torch.ones(batch, frames),
    }


def masked_ce(text_logits, text_mask, audio_logits, audio_mask, codes) -> torch.Tensor:
    """CE of the text [B, T, Vt] over text_mask [B, T] + CE of the audio [B, 8, T, V] over audio_mask [B, 8, T],
    against codes [B, 17, T]; masked positions are dropped before the softmax (kyutai fills them with NaN)."""
    text, audio = codes[:, 0], codes[:, 1 : 1 + N_CODEBOOKS]
    return F.cross_entropy(text_logits[text_mask].float(), text[text_mask]) + F.cross_entropy(
        audio_logits[audio_mask].float(), audio[audio_mask]
    )


def loss_ours(model, b: dict[str, torch.Tensor]) -> torch.Tensor:
    codes = b["codes"]
    out = model(codes[:, 0], codes[:, 1:9], codes[:, 9:], b["face"], b["face_present"])
    return masked_ce(out.text_logits, out.text_mask, out.audio_logits, out.audio_mask, codes)


def loss_kyutai(model, b: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(b["codes"])
    return masked_ce(out.text_logits[:, 0], out.text_mask[:, 0], out.logits, out.mask, b["codes"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=named_configs(), help="model config (default: tiny)")
    parser.add_argument("--batch", type=int, default=2, help="windows per step (default: 2)")
    parser.add_argument("--frames", type=int, default=64, help="frames per window, 12.5 per second (default: 64)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per model, interleaved (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA if available")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also print each model's N top ops")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    if min(args.batch, args.frames, args.repeats, args.threads) < 1 or args.warmup < 0 or args.profile < 0:
        parser.error("--batch, --frames, --repeats and --threads must be >= 1; --warmup and --profile >= 0")
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    else:
        device = torch.device(args.device)
    try:
        import moshi
    except ImportError as e:
        print(f"kyutai's moshi does not import ({e}); ./setup.sh installs it with the dev extras", file=sys.stderr)
        return 2

    ours, theirs, kwargs = build_pair(args.shape, args.seed)
    ours.to(device)
    theirs.to(device)
    batch = {k: v.to(device) for k, v in make_batch(args.batch, args.frames, kwargs["card"], kwargs["text_card"],
                                                     args.seed).items()}  # fmt: skip
    bf16 = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else nullcontext
    runs = {"ours": (ours, loss_ours), "kyutai": (theirs, loss_kyutai)}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(name: str) -> tuple[float, float]:
        model, loss_fn = runs[name]
        model.zero_grad(set_to_none=True)
        sync()
        start = time.perf_counter()
        with autocast():
            loss = loss_fn(model, batch)
        loss.backward()
        sync()
        return time.perf_counter() - start, float(loss.detach())

    losses, flops = {}, {}
    for name in runs:  # one untimed step each, counting its matmul FLOPs
        with FlopCounterMode(display=False) as counter:
            losses[name] = step(name)[1]
        flops[name] = counter.get_total_flops()
    for _ in range(args.warmup):
        for name in runs:
            losses[name] = step(name)[1]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            seconds, losses[name] = step(name)
            times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({args.threads} threads)"
    result = {
        "shape": args.shape,
        "device": where,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "torch": torch.__version__,
        "moshi": getattr(moshi, "__version__", "?"),
        "batch": args.batch,
        "frames": args.frames,
        "parameters_ours": ours.num_parameters(),
        "parameters_kyutai": sum(p.numel() for p in theirs.parameters()),
        "flops_ours": flops["ours"],
        "flops_kyutai": flops["kyutai"],
        "repeats": args.repeats,
        "loss_ours": losses["ours"],
        "loss_kyutai": losses["kyutai"],
        "seconds_ours": times["ours"],
        "seconds_kyutai": times["kyutai"],
        "median_s_ours": median["ours"],
        "median_s_kyutai": median["kyutai"],
        "ratio": median["ours"] / median["kyutai"],
        "ratio_of_minimums": min(times["ours"]) / min(times["kyutai"]),
        "paired_ratio": statistics.median(o / k for o, k in zip(times["ours"], times["kyutai"], strict=True)),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"forward + loss + backward · {args.shape} as kyutai kwargs ({result['parameters_kyutai'] / 1e6:.1f} M "
            f"params; ours {result['parameters_ours'] / 1e6:.1f} M with the face parts) · batch {args.batch} × "
            f"{args.frames} frames · {where} · {result['precision']} · torch {torch.__version__}, moshi "
            f"{result['moshi']}"
        )
        print(
            f"loss: ours {losses['ours']:.6f}, kyutai {losses['kyutai']:.6f} "
            f"(|Δ| {abs(losses['ours'] - losses['kyutai']):.1e})"
        )
        print(
            f"FLOPs per step (counted; CPU attention kernels are not): ours {flops['ours'] / 1e9:.2f} G, kyutai "
            f"{flops['kyutai'] / 1e9:.2f} G (× {flops['ours'] / flops['kyutai']:.3f})"
        )
        for name in runs:
            each = " ".join(f"{t:.3f}" for t in times[name])
            print(f"{name:6} {median[name]:.4f} s  (median of {args.repeats}: {each})")
        print(
            f"ratio ours / kyutai = {result['ratio']:.3f} of the medians · {result['ratio_of_minimums']:.3f} of the "
            f"minimums · {result['paired_ratio']:.3f} median of the paired repeats' ratios"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        for name in runs:
            with profile(activities=activities) as prof:
                step(name)
            print(f"\n--- {name}: top {args.profile} ops by self time, one step")
            print(prof.key_averages().table(sort_by=sort, row_limit=args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
