"""Training recipes: the typed config of a training run, its named presets, and what a run records about itself.

A train config holds a `ModelConfig` (its `shape` resolved when the config is read), the data, optimizer, loss,
label and LoRA settings, and the loop's switches. Every field is set the same way from a TOML table, `--set
model.zero_groups='["head_trans","brow"]'` and Python (`dataclasses.replace`). A TOML may start from a preset with
`inherit = "aux"` (the `vanilla` preset is `aux` with `loss.yield_weight = 0`). Fields marked `resumable` steer one
session of a run (logging, evaluation cadence, device) and may change on `--resume`; the others define what the run
computes and must match its checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from faceturn import __version__
from faceturn.config import ConfigError, load_toml, named_or_path, read_raw, to_dict
from faceturn.data import DataConfig
from faceturn.labels import EventConfig
from faceturn.lora import LoraConfig
from faceturn.model import LossConfig, ModelConfig
from faceturn.schema import FACE_CHANNELS, SCHEMA_VERSION

CONFIG_DIR = Path(__file__).parent / "configs" / "train"
RESUMABLE = {"resumable": True}  # field metadata: may change when a run is resumed


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # on matrices and embeddings only (not norms, biases, the missing-face vector)
    warmup_steps: int = 100  # linear warmup from 0
    max_steps: int = 1000  # cosine decay ends here
    min_lr_ratio: float = 0.1  # final LR = min_lr_ratio × lr
    clip_norm: float = 1.0  # global gradient norm clip; 0 = off
    # micro-steps per step (global batch = data.batch_size × world size × grad_accum); the loader state checks that
    # the global batch is unchanged on resume
    grad_accum: int = field(default=1, metadata=RESUMABLE)

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.max_steps < 1 or self.warmup_steps < 0 or self.grad_accum < 1:
            raise ValueError(
                f"optim.max_steps >= 1, warmup_steps >= 0 and grad_accum >= 1 needed, got {self.max_steps}, "
                f"{self.warmup_steps}, {self.grad_accum}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.clip_norm < 0 or self.weight_decay < 0:
            raise ValueError(
                f"optim.clip_norm and optim.weight_decay must be >= 0, got {self.clip_norm}, {self.weight_decay}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as JSON in the run folder and in every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    labels: EventConfig = field(default_factory=EventConfig)
    seed: int = 0  # model initialisation and the per-step torch generator
    eval_every_steps: int = field(default=100, metadata=RESUMABLE)  # validation loss and yield AUC; 0 = at the end
    eval_face_zeroed: bool = field(default=True, metadata=RESUMABLE)  # also the validation AUC with the face zeroed
    checkpoint_every_steps: int = field(default=100, metadata=RESUMABLE)  # 0 = only at the end
    keep_last: int = field(default=2, metadata=RESUMABLE)  # complete checkpoints kept (the newest)
    log_every_steps: int = field(default=10, metadata=RESUMABLE)  # metrics.jsonl / TensorBoard train records
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=RESUMABLE)
    # auto = bf16 autocast on CUDA, fp32 on CPU
    precision: Literal["auto", "fp32", "bf16"] = field(default="auto", metadata=RESUMABLE)
    compile: bool = field(default=False, metadata=RESUMABLE)  # torch.compile (CUDA only)
    tensorboard: bool = field(default=False, metadata=RESUMABLE)  # needs the `tensorboard` package
    progress: bool = field(default=True, metadata=RESUMABLE)  # tqdm bar on rank 0
    # wall-clock budget of the loop over all sessions (then stop and checkpoint); 0 = none
    max_minutes: float = field(default=0.0, metadata=RESUMABLE)
    stop_at_step: int = field(default=0, metadata=RESUMABLE)  # stop this session here (checkpointed); 0 = max_steps
    init_from: str = ""  # a run or checkpoint folder (e.g. `faceturn import-moshi`'s) whose weights start this run
    lora: LoraConfig = field(default_factory=LoraConfig)  # rank > 0: fine-tune adapters (faceturn.lora)
    # recompute each layer in the backward pass: memory for time
    activation_checkpointing: bool = field(default=False, metadata=RESUMABLE)
    # "ddp": every process holds the whole model and optimizer (DistributedDataParallel under torchrun); "fsdp":
    # parameters, gradients and optimizer state sharded over the processes (faceturn.fsdp), sharded checkpoints that
    # resume at any world size
    parallel: Literal["ddp", "fsdp"] = "ddp"

    @classmethod
    def resolve_raw(cls, data: dict[str, Any]) -> dict[str, Any]:
        """`inherit = "NAME"` (a preset or a TOML path): start from that table, this one's keys on top."""
        name = data.pop("inherit", None)
        if name is None:
            return data
        return _merge(_raw_train_table(name, seen=()), data)

    def __post_init__(self) -> None:
        for name in ("eval_every_steps", "checkpoint_every_steps", "stop_at_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_last < 1 or self.log_every_steps < 1:
            raise ValueError(
                f"keep_last and log_every_steps must be >= 1, got {self.keep_last}, {self.log_every_steps}"
            )
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if self.parallel == "fsdp" and self.lora.rank:
            raise ValueError(
                "parallel = 'fsdp' is for full fine-tuning; a LoRA run (lora.rank > 0) fits one GPU: use 'ddp'"
            )


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, tables merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _raw_train_table(name: str, seen: tuple[str, ...]) -> dict[str, Any]:
    """The raw table of a preset or file with its own `inherit` chain resolved."""
    if name in seen:
        raise ConfigError(f"inherit: a cycle of train configs {[*seen, name]}")
    table = read_raw(named_or_path(name, CONFIG_DIR, "train config"))
    parent = table.pop("inherit", None)
    return table if parent is None else _merge(_raw_train_table(parent, (*seen, name)), table)


def load_train_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
    """A preset (`vanilla`, `aux`, `lora`), a TOML file, or a JSON file as `faceturn.config.save_json` writes it, with
    `--set key=value` overrides."""
    return load_toml(TrainConfig, named_or_path(name_or_path, CONFIG_DIR, "train config"), overrides)


def resumable_fields(cls: type = TrainConfig, prefix: str = "train.") -> tuple[str, ...]:
    """Dotted names of the fields marked resumable, nested dataclasses included."""
    out: list[str] = []
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in hints.items():
        if f.metadata.get("resumable"):
            out.append(prefix + name)
        tp = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if tp is not None and dataclasses.is_dataclass(tp):
            out.extend(resumable_fields(tp, f"{prefix}{name}."))
    return tuple(out)


PROVENANCE = ("faceturn_version", "git_sha")  # recorded in a run's config, never compared


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def resolved_config(cfg: TrainConfig) -> dict[str, Any]:
    """The JSON saved in the run folder and every checkpoint: enough to rebuild the model and check a resume."""
    return {
        "train": to_dict(cfg),
        "schema": {"version": SCHEMA_VERSION, "face_channels": list(FACE_CHANNELS)},
        "faceturn_version": __version__,
        "git_sha": _git_sha(),
    }
