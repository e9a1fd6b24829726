"""LoRA fine-tuning of an imported Moshi backbone (kyutai's moshi-finetune recipe, on `peft`).

Every backbone `nn.Linear` gets a low-rank adapter, W·x + scaling·B(A·x) with A kaiming-uniform and B zero (so step 0
is the imported model), as kyutai's LoRALinear: the temporal attention and FFN projections, `depformer_in`, every
depformer projection, `linears` and `text_linear`. Embeddings and norms stay frozen. The face encoder and the yield
head (new parts) train in full; everything else, the face head included, is frozen. With bf16 training the frozen
matrices are stored in bf16 and only the trainable parameters keep fp32 master weights.

Checkpoints of a LoRA run hold the base weights and the adapters under peft's names (`….base_layer.weight`,
`….lora_A.default.weight`), so a resume is exact; `load_model` merges them. At the end of a run, `export` writes
`lora/adapters.safetensors` (adapters + face encoder + yield head) and `lora/merged.safetensors` (the plain model's
state dict: kyutai's runtime names for the backbone). `estimate_memory` sizes a run before renting a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from faceturn.errors import ConfigError, FaceturnError
from faceturn.io import default_file_mode
from faceturn.memory import activation_bytes
from faceturn.model import ModelConfig, from_config

# Every backbone Linear, by module name (peft full-matches this against each module's qualified name).
TARGET_MODULES = (
    r"(transformer|depformer)\.layers\.\d+\.(self_attn\.(in_projs|out_projs)\.\d+|gating(\.\d+)?\.linear_(in|out))"
    r"|depformer_in\.\d+|linears\.\d+|text_linear"
)
ADAPTER = "default"  # peft's adapter name
ADAPTERS_FILE = "adapters.safetensors"
MERGED_FILE = "merged.safetensors"


@dataclass(frozen=True)
class LoraConfig:
    """LoRA on the backbone; rank 0 = off (every parameter trains, the default for models trained from scratch)."""

    rank: int = 0  # adapter rank r (moshi-finetune: 128)
    scaling: float = 2.0  # the adapter output is multiplied by this (kyutai's `scaling`; peft's lora_alpha = scaling·r)
    dropout: float = 0.0  # dropout on the adapter input
    train_modules: tuple[str, ...] = ("face_encoder", "yield_head")  # top-level modules trained in full beside it

    def __post_init__(self) -> None:
        if self.rank < 0 or not self.scaling > 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"lora.rank >= 0, lora.scaling > 0 and lora.dropout in [0, 1) needed, got {self.rank}, "
                f"{self.scaling}, {self.dropout}"
            )
        allowed = ("face_encoder", "yield_head", "face_head")
        if any(m not in allowed for m in self.train_modules):
            raise ConfigError(f"lora.train_modules must be among {allowed}, got {list(self.train_modules)}")


def _peft():
    try:
        import peft
    except ImportError:
        raise FaceturnError("LoRA needs the `peft` package: pip install 'faceturn[lora]' (or ./setup.sh)") from None
    return peft


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def apply_lora(model: nn.Module, cfg: LoraConfig, frozen_dtype: torch.dtype | None = None) -> nn.Module:
    """Add adapters to `model` in place and freeze all but them and `cfg.train_modules`; with `frozen_dtype`, the
    frozen matrices are cast to it (RMSNorm gains and trainable parameters keep theirs)."""
    if cfg.rank < 1:
        raise ConfigError("apply_lora needs lora.rank >= 1")
    peft = _peft()
    peft_cfg = peft.LoraConfig(
        r=cfg.rank, lora_alpha=cfg.scaling * cfg.rank, lora_dropout=cfg.dropout, target_modules=TARGET_MODULES,
        bias="none", init_lora_weights=True,
    )  # fmt: skip
    peft.inject_adapter_in_model(peft_cfg, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter(name) or name.split(".", 1)[0] in cfg.train_modules)
        if frozen_dtype is not None and not p.requires_grad and not name.endswith(".alpha"):
            p.data = p.data.to(frozen_dtype)
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain nn.Linear back: the module tree and state-dict names
    become those of a model that never had adapters."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


def adapter_state_dict(model: nn.Module, cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """What a LoRA run learned: the adapters plus the fully trained modules (their buffers too: face statistics)."""
    return {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if is_adapter(k) or k.split(".", 1)[0] in cfg.train_modules
    }


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors.save_file into a temporary name in the same folder, fsync, rename (never half a file). Not
    faceturn.io.atomic_write_bytes: that needs the serialized file in memory, a second copy of a merged 7B model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, default_file_mode())  # safetensors writes 0600; shared runs follow the umask like every file
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(model: nn.Module, cfg: LoraConfig, folder: str | Path, info: dict[str, Any]) -> tuple[Path, Path]:
    """Write `folder`/adapters.safetensors, then merge the adapters into `model` (in place) and write the merged
    state dict to `folder`/merged.safetensors. `info` (JSON-able: config, step) goes into both files' metadata."""
    folder = Path(folder)
    meta = {"lora": json.dumps(dataclasses.asdict(cfg)), "target_modules": TARGET_MODULES, "info": json.dumps(info)}
    adapters = folder / ADAPTERS_FILE
    _atomic_save(adapter_state_dict(model, cfg), adapters, meta)
    merge_lora(model)
    merged = folder / MERGED_FILE
    _atomic_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, merged, meta)
    return adapters, merged


# ----------------------------------------------------------------------------------------------- memory estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory of a LoRA training step, in bytes, before the CUDA context and allocator slack."""

    frozen_weights: int  # bf16 matrices, fp32 norm gains
    trainable_parameters: int  # count
    trainable_state: int  # fp32 weights + gradients + AdamW's two moments: 16 bytes per trainable parameter
    activations_per_window: int  # kept for backward, at the peak (one layer being recomputed)

    def total(self, batch_windows: int) -> int:
        return self.frozen_weights + self.trainable_state + batch_windows * self.activations_per_window

    def max_batch(self, budget_bytes: int) -> int:
        return max(0, (budget_bytes - self.frozen_weights - self.trainable_state) // self.activations_per_window)


def estimate_memory(
    model_cfg: ModelConfig, lora_cfg: LoraConfig, window_frames: int, activation_checkpointing: bool = True
):
    """Size one training step of `model_cfg` with LoRA `lora_cfg` on windows of `window_frames`, in bf16 autocast.

    Parameters are counted exactly on a meta-device model with the adapters in place; activations are measured on it
    (faceturn.memory.activation_bytes)."""
    model = from_config(model_cfg, device="meta").to(torch.bfloat16)
    apply_lora(model, lora_cfg)
    frozen = sum(
        p.numel() * (4 if n.endswith(".alpha") else 2) for n, p in model.named_parameters() if not p.requires_grad
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations = activation_bytes(model, window_frames, activation_checkpointing)
    return MemoryEstimate(frozen, trainable, 16 * trainable, activations)
