"""GPU memory of a training step, sized on the meta device before a GPU is rented.

`activation_bytes` measures what autograd keeps for the backward pass; `estimate_fsdp` adds the sharded state of an
FSDP2 run (faceturn.fsdp) for `benchmarks/fsdp_memory.py`, as faceturn.lora.estimate_memory does for a LoRA run.
Bytes are 10^9 per GB in every report. Neither counts the CUDA context or allocator fragmentation: the scripts set
memory aside for them (`--reserve-gb`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from faceturn.model import ModelConfig, from_config
from faceturn.schema import N_FACE


def activation_bytes(model: nn.Module, window_frames: int, activation_checkpointing: bool = True) -> int:
    """Bytes one window of `window_frames` keeps for the backward pass in bf16, measured, not guessed: a forward pass
    of `model` (bf16, on the meta device: nothing is allocated) records every tensor autograd saves, with two
    corrections for what a GPU does differently: attention saves flash attention's output and log-sum-exp instead of
    the [heads, L, L] probabilities of the meta (math) kernel, and the cross-entropy's log-softmax is fp32 (autocast).
    With activation checkpointing a layer keeps only its input, and the backward pass holds one layer's activations
    at a time (the largest)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, tuple[int, str]] = {}  # storage → (bytes, region)
    kept: list[torch.Tensor] = []  # alive until counted: a freed storage's address may come back for another one
    region = ["outside"]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage()._cdata
        if key not in params and key not in saved:
            n = t.untyped_storage().nbytes()
            if t.dim() >= 3 and t.shape[-1] == t.shape[-2] and t.shape[-1] > 1:  # attention probabilities
                n = t[..., 0].numel() * 4  # flash attention keeps the log-sum-exp (fp32) instead
            saved[key] = (n, region[0])
            kept.append(t)
        return t

    layers = {f"{stack}.{i}": layer for stack in ("transformer", "depformer")
              for i, layer in enumerate(getattr(model, stack).layers)}  # fmt: skip
    input_bytes: dict[str, int] = {}
    hooks = []
    for name, layer in layers.items():
        hooks.append(layer.register_forward_pre_hook(lambda m, a, name=name: region.__setitem__(0, name)))
        hooks.append(layer.register_forward_hook(lambda m, a, o: region.__setitem__(0, "outside")))
        hooks.append(layer.register_forward_pre_hook(
            lambda m, a, name=name: input_bytes.__setitem__(name, a[0].numel() * a[0].element_size())
        ))  # fmt: skip
    T = window_frames
    tokens = torch.zeros(1, T, dtype=torch.long, device="meta")
    codes = torch.zeros(1, 8, T, dtype=torch.long, device="meta")
    face = torch.zeros(1, T, N_FACE, dtype=torch.bfloat16, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(tokens, codes, codes, face, torch.ones(1, T, dtype=torch.bfloat16, device="meta"))
        F.cross_entropy(out.text_logits.float().flatten(0, 1), tokens.flatten())  # autocast: fp32 log-softmax
        F.cross_entropy(out.audio_logits.float().flatten(0, 2), codes.flatten())
        F.binary_cross_entropy_with_logits(out.yield_logits.float(), torch.zeros_like(out.yield_logits.float()))
    for h in hooks:
        h.remove()
    per_layer = {name: sum(n for n, r in saved.values() if r == name) for name in layers}
    outside = sum(n for n, r in saved.values() if r == "outside")
    if activation_checkpointing:
        activations = outside + sum(input_bytes.values()) + max(per_layer.values())
    else:
        activations = outside + sum(per_layer.values())
    return activations


@dataclass(frozen=True)
class FsdpMemoryEstimate:
    """Per-GPU memory of an FSDP2 training step (faceturn.fsdp: bf16 compute, fp32 master weights), in bytes."""

    world_size: int
    parameters: int  # count, the whole model
    sharded_state: int  # the largest shard of fp32 weights, gradients and both AdamW moments (16 B per element)
    root_unit: int  # the root unit's gathered bf16 weights and bf16 gradients, held through the backward pass
    layers_in_flight: int  # two layer units at once (running and prefetched): bf16 weights, gradients, fp32 copy
    activations_per_window: int  # kept for backward, at the peak
    startup: int  # the whole fp32 model, which faceturn.train builds on every GPU before sharding it

    @property
    def fixed(self) -> int:
        return self.sharded_state + self.root_unit + self.layers_in_flight

    def total(self, batch_windows: int) -> int:
        return self.fixed + batch_windows * self.activations_per_window

    def max_batch(self, budget_bytes: int) -> int:
        return max(0, (budget_bytes - self.fixed) // self.activations_per_window)


def sharded_elements(shape: torch.Size, world_size: int) -> int:
    """Elements of the largest shard of a parameter that FSDP2 splits along its first dimension over `world_size`
    processes (the first dimension is padded to a multiple of it)."""
    if not shape:
        return 1
    return math.ceil(shape[0] / world_size) * math.prod(shape[1:])


def estimate_fsdp(
    model_cfg: ModelConfig, world_size: int, window_frames: int, activation_checkpointing: bool = True
) -> FsdpMemoryEstimate:
    """Size one FSDP2 training step of `model_cfg` on `world_size` GPUs and windows of `window_frames`.

    Counted exactly on a meta-device model: the shard of every parameter (faceturn.fsdp shards them all), the root
    unit (everything outside the temporal and depformer layers), the largest layer unit. Modelled: two layer units in
    flight at once (FSDP2 prefetches the next all-gather while one layer runs, and reduce-scatters a layer's fp32
    gradients while the backward pass goes on), each with bf16 weights (2 B), bf16 gradients (2 B) and their fp32
    copy for the reduction (4 B) per parameter. Activations measured (`activation_bytes`)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    model = from_config(model_cfg, device="meta")
    layers = [layer for stack in (model.transformer.layers, model.depformer.layers) for layer in stack]
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    parameters = sum(p.numel() for p in model.parameters())
    root = sum(p.numel() for p in model.parameters() if id(p) not in in_layers)
    largest_layer = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    return FsdpMemoryEstimate(
        world_size=world_size,
        parameters=parameters,
        sharded_state=16 * sum(sharded_elements(p.shape, world_size) for p in model.parameters()),
        root_unit=4 * root,
        layers_in_flight=2 * 8 * largest_layer,
        activations_per_window=activation_bytes(model.to(torch.bfloat16), window_frames, activation_checkpointing),
        startup=4 * parameters,
    )
