"""The training loop (DESIGN §6): one loop for CPU, one GPU and torchrun DDP.

    faceturn train --config aux --corpus CORPUS --out runs/aux                      # CPU or one GPU
    torchrun --standalone --nproc_per_node 8 -m faceturn train --config aux --corpus CORPUS --out runs/aux
    faceturn train --config aux --corpus CORPUS --out runs/aux --resume             # continue the newest checkpoint

Why it is shaped this way:
- A run owns its folder: `config.json` (the resolved config), append-only `metrics.jsonl`, optional TensorBoard
  events, `checkpoints/step-*/`. A non-empty folder is refused unless `--resume` is given.
- Resume is exact: the data stream is a pure function of (seed, sample index), the torch generator is re-seeded from
  (seed, step, rank) before every step, the LR is a pure function of the step, and the optimizer state is restored.
  So N steps in one go equal k steps + resume + N−k steps.
- DDP: each process takes its slice of every global batch (faceturn.data); gradients are averaged by DDP and synced
  only on the last micro-step. The loss of a step is the mean over its micro-batches of each micro-batch's loss, so
  one process with world_size × grad_accum micro-steps computes the same update as the DDP run.
- bf16 autocast and `torch.compile` only on CUDA; on CPU everything is fp32. Only rank 0 logs and writes.
"""

from __future__ import annotations

import math
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from faceturn import checkpoint as ckpt_io
from faceturn import dist
from faceturn.config import ConfigError, load_toml, named_or_path, to_dict
from faceturn.data import (
    DataConfig,
    WindowDataset,
    WindowLoader,
    face_statistics,
    validation_batches,
    validation_windows,
)
from faceturn.io import append_jsonl, atomic_write_json
from faceturn.labels import EventConfig
from faceturn.lora import LoraConfig
from faceturn.model import LossConfig, ModelConfig, compute_loss, from_config, load_model_config

CONFIG_DIR = Path(__file__).parent / "configs" / "train"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class ModelChoice:
    """Which model: a named config (faceturn/configs/model/) or a TOML path, plus `key=value` overrides."""

    name: str = "tiny"
    overrides: tuple[str, ...] = ()


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
    grad_accum: int = 1  # micro-steps per step (global batch = data.batch_size × world size × grad_accum)

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

    model: ModelChoice = field(default_factory=ModelChoice)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    labels: EventConfig = field(default_factory=EventConfig)
    seed: int = 0  # model initialisation and the per-step torch generator
    eval_every_steps: int = 100  # validation loss and yield AUC; 0 = only at the end
    eval_face_zeroed: bool = True  # also the validation AUC with the face zeroed (the study's comparison)
    checkpoint_every_steps: int = 100  # 0 = only at the end
    keep_last: int = 2  # complete checkpoints kept (the newest)
    log_every_steps: int = 10  # metrics.jsonl / TensorBoard train records
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile (CUDA only)
    tensorboard: bool = False  # needs the `tensorboard` package
    progress: bool = True  # tqdm bar on rank 0
    max_minutes: float = 0.0  # wall-clock budget of the loop over all sessions (then stop and checkpoint); 0 = none
    stop_at_step: int = 0  # stop this session at this step (with a checkpoint); 0 = run to optim.max_steps
    init_from: str = ""  # a run or checkpoint folder (e.g. `faceturn import-moshi`'s) whose weights start this run
    lora: LoraConfig = field(default_factory=LoraConfig)  # rank > 0: fine-tune adapters (faceturn.lora)
    activation_checkpointing: bool = False  # recompute each layer in the backward pass: memory for time

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


# Fields that may change when a run is resumed: they steer this session, not what the run computes.
RESUMABLE_CHANGES = (
    "train.eval_every_steps",
    "train.eval_face_zeroed",
    "train.checkpoint_every_steps",
    "train.keep_last",
    "train.log_every_steps",
    "train.device",
    "train.precision",
    "train.compile",
    "train.tensorboard",
    "train.progress",
    "train.max_minutes",
    "train.stop_at_step",
    "train.optim.grad_accum",  # the loader state checks that the global batch is unchanged
    "train.data.val_max_windows",
    "train.activation_checkpointing",
)


def load_train_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset (`vanilla`, `aux`), a TOML file, or a JSON file as `faceturn.config.save_json` writes it (the
    attribution plan's per-run configs), with `--set key=value` overrides."""
    path = named_or_path(name_or_path, CONFIG_DIR, "train config")
    return load_toml(TrainConfig, path, overrides)


def resolve_model_config(cfg: TrainConfig) -> ModelConfig:
    return load_model_config(cfg.model.name, cfg.model.overrides)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def resolved_config(cfg: TrainConfig, model_cfg: ModelConfig) -> dict[str, Any]:
    """The JSON saved in the run folder and every checkpoint: enough to rebuild the model and check a resume."""
    from faceturn import __version__
    from faceturn.schema import FACE_CHANNELS, SCHEMA_VERSION

    return {
        "train": to_dict(cfg),
        "model": to_dict(model_cfg),
        "schema": {"version": SCHEMA_VERSION, "face_channels": list(FACE_CHANNELS)},
        "faceturn_version": __version__,
        "git_sha": _git_sha(),
    }


_PROVENANCE = ("faceturn_version", "git_sha")  # recorded, never compared


class RunDirError(RuntimeError):
    """The run folder cannot be used as asked (e.g. not empty without --resume)."""


def lr_at(step: int, optim: OptimConfig) -> float:
    """Linear warmup over warmup_steps (step 0 gets lr/warmup), then cosine decay to min_lr_ratio·lr at max_steps."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = min(1.0, (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps))
    low = optim.lr * optim.min_lr_ratio
    return low + (optim.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (RMSNorm `alpha` is [1, 1, D] but is a gain)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not name.endswith(".alpha") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused kernels on CUDA and CPU: on a tiny CPU model the update of the embedding tables was half of a step, and
    # the fused CPU kernel updates the tiny model's 8.4 M parameters 3× faster than the multi-tensor one.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, fused=fused, foreach=not fused)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class _NullWriter:
    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError(
            "tensorboard = true needs the `tensorboard` package, which is not installed: `pip install tensorboard`, "
            "or run with --set tensorboard=false (metrics.jsonl has the same numbers)"
        ) from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a folder")
    if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunDirError(
            f"{run_dir}: run folder is not empty; pass --resume to continue that run, or choose a new --out folder"
        )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: WindowDataset,
    windows: list,
    batch_size: int,
    loss_cfg: LossConfig,
    device: torch.device,
    autocast,
    face_zeroed: bool,
) -> dict[str, float | None]:
    """Validation loss terms (window-weighted means) and per-frame yield AUC on scored frames; optionally again with
    the face zeroed (same windows, same frames)."""
    from faceturn.eval.stats import roc_auc

    audio = loss_cfg.audio_weight > 0  # the depformer only runs when its loss counts

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n_windows = 0
    logits, logits_zeroed, targets = [], [], []
    for batch in validation_batches(dataset, windows, batch_size):
        batch = batch.to(device)
        with autocast():
            out = model(batch.text, batch.self_codes, batch.other_codes, batch.face, batch.face_present, audio=audio)
            parts = compute_loss(out, loss_cfg, batch.y, batch.m)
        b = batch.text.shape[0]
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n_windows += b
        scored = batch.m & batch.valid
        logits.append(out.yield_logits.float()[scored].cpu())
        targets.append(batch.y[scored].cpu())
        if face_zeroed:
            z = batch.without_face()
            with autocast():
                out_z = model(z.text, z.self_codes, z.other_codes, z.face, z.face_present, audio=False)
            logits_zeroed.append(out_z.yield_logits.float()[scored].cpu())
    model.train(was_training)
    result: dict[str, float | None] = {f"val_{k}": v / max(n_windows, 1) for k, v in sums.items()}
    y = torch.cat(targets).numpy() if targets else np.zeros(0)
    result["val_scored_frames"] = float(y.size)
    result["val_positive_rate"] = float(y.mean()) if y.size else None

    def auc(scores: list[torch.Tensor]) -> float | None:
        if not y.size or y.min() == y.max():
            return None  # AUC undefined without both classes
        return roc_auc(y > 0.5, torch.cat(scores).numpy())

    result["val_yield_auc"] = auc(logits)
    if face_zeroed:
        result["val_yield_auc_face_zeroed"] = auc(logits_zeroed)
    return result


def _check_init(init_from: str, model_dict: dict[str, Any]) -> Path:
    """The checkpoint whose weights start this run (`init_from`); its model config must be this run's, field for
    field. Checked before the model is built, so a wrong 7B-sized config fails at once instead of filling memory."""
    ckpt = ckpt_io.resolve_checkpoint(init_from)
    diffs = ckpt_io.config_differences(ckpt_io.read_json(ckpt, ckpt_io.CONFIG_FILE).get("model", {}), model_dict)
    if diffs:
        raise ckpt_io.CheckpointError(f"{ckpt}: init_from has another model config: " + "; ".join(diffs))
    return ckpt


def _checkpoint_layers(model: torch.nn.Module) -> None:
    """Activation checkpointing: every temporal and depformer layer keeps only its input and is recomputed in the
    backward pass (torch's non-reentrant wrapper; state-dict names are unchanged)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for stack in (model.transformer.layers, model.depformer.layers):
        for i in range(len(stack)):
            stack[i] = checkpoint_wrapper(stack[i])


@dataclass
class TrainResult:
    step: int
    stop_reason: str  # "max_steps", "max_minutes" or "stop_at_step"
    last_train: dict[str, float] = field(default_factory=dict)
    last_val: dict[str, float | None] = field(default_factory=dict)
    checkpoint: Path | None = None
    is_main: bool = True  # rank 0 (the process that logs and writes)


def train(cfg: TrainConfig, corpus_dir: str | Path, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train (or, with `resume`, continue) a run in `run_dir` on `corpus_dir`; returns where and why it stopped."""
    joined_here = not torch.distributed.is_initialized()
    info = dist.init_distributed(cfg.device)
    try:
        return _train(cfg, Path(corpus_dir), Path(run_dir), resume, info)
    finally:
        if joined_here:
            dist.cleanup()


def _train(cfg: TrainConfig, corpus_dir: Path, run_dir: Path, resume: bool, info: dist.DistInfo) -> TrainResult:
    device = info.device
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError("precision = 'bf16' needs CUDA; on CPU use 'auto' or 'fp32'")
    use_bf16 = device.type == "cuda" and cfg.precision in ("auto", "bf16")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    model_cfg = resolve_model_config(cfg)
    resolved = resolved_config(cfg, model_cfg)
    compare_ignore = (*RESUMABLE_CHANGES, *_PROVENANCE)
    _check_run_dir(run_dir, resume)
    start_ckpt = ckpt_io.latest_checkpoint(run_dir) if resume else None
    if start_ckpt is not None:
        ckpt_io.check_config(start_ckpt, resolved, ignore=compare_ignore)
    elif resume and (run_dir / ckpt_io.CONFIG_FILE).exists():
        ckpt_io.check_config(run_dir, resolved, ignore=compare_ignore)
    dist.barrier(info)  # every process has seen the folder as it was before rank 0 writes into it

    writer: Any = _NullWriter()
    if info.is_main and cfg.tensorboard:
        writer = _tensorboard_writer(run_dir)  # fail before any work if it is missing

    window_frames = cfg.data.window_frames
    train_ds = WindowDataset(corpus_dir, cfg.data.train_split, window_frames, cfg.labels)
    loader = WindowLoader(
        train_ds, cfg.data.batch_size, cfg.data.seed, cfg.data.face_dropout, cfg.optim.grad_accum,
        info.world_size, info.rank,
    )  # fmt: skip
    val_ds = val_windows = None
    if info.is_main:
        val_ds = WindowDataset(corpus_dir, cfg.data.val_split, window_frames, cfg.labels)
        val_windows = validation_windows(val_ds, cfg.data.val_max_windows)

    if cfg.lora.rank and not (cfg.init_from or start_ckpt):
        raise ConfigError("lora.rank > 0 fine-tunes a trained backbone: set init_from (a faceturn import-moshi run)")
    init_ckpt = _check_init(cfg.init_from, resolved["model"]) if start_ckpt is None and cfg.init_from else None
    torch.manual_seed(cfg.seed)
    model = from_config(model_cfg, device=device)
    if init_ckpt is not None:
        ckpt_io.load_weights(init_ckpt, model)
    if cfg.lora.rank:
        from faceturn.lora import apply_lora

        apply_lora(model, cfg.lora, frozen_dtype=torch.bfloat16 if use_bf16 else None)
    if cfg.activation_checkpointing:
        _checkpoint_layers(model)
    optimizer = build_optimizer(model, cfg.optim, device)
    loop: dict[str, Any] = {"elapsed_s": 0.0, "frames_seen": 0}
    step = 0
    if start_ckpt is not None:
        ckpt_io.load_weights(start_ckpt, model)
        ckpt_io.load_optimizer(start_ckpt, optimizer, device)
        state = ckpt_io.read_json(start_ckpt, ckpt_io.STATE_FILE)
        loader.load_state_dict(state["data"])
        loop.update(state.get("loop", {}))
        step = int(state["step"])
        if loader.next_step != step:
            raise ckpt_io.CheckpointError(f"{start_ckpt}: data state is at step {loader.next_step}, the run at {step}")
    else:
        mean, std = face_statistics(train_ds)
        model.set_face_statistics(torch.from_numpy(mean), torch.from_numpy(std))
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / ckpt_io.CONFIG_FILE, resolved)
    dist.barrier(info)

    audio = cfg.loss.audio_weight > 0  # audio_weight = 0 skips the depformer (87 % of a tiny CPU step)
    train_model: torch.nn.Module = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=not audio
        )
    if cfg.compile and device.type == "cuda":
        train_model = torch.compile(train_model)

    metrics_path = run_dir / METRICS_FILE
    log = append_jsonl if info.is_main else (lambda *a, **k: None)
    log(metrics_path, {
        "event": "resume" if start_ckpt is not None else "start", "step": step, "world_size": info.world_size,
        "device": str(device), "bf16": use_bf16, "parameters": model.num_parameters(),
        "global_batch_windows": loader.global_batch_size, "window_frames": window_frames,
        "checkpoint": str(start_ckpt) if start_ckpt else None,
    })  # fmt: skip

    from tqdm import tqdm

    bar = tqdm(
        total=cfg.optim.max_steps, initial=step, unit="step", dynamic_ncols=True,
        disable=not (info.is_main and cfg.progress), desc=run_dir.name,
    )  # fmt: skip
    result = TrainResult(step=step, stop_reason="max_steps", is_main=info.is_main)
    elapsed_before = float(loop["elapsed_s"])
    session_start = time.perf_counter()
    step_seconds, window_frames_seen = 0.0, 0  # frames/s counts step time only (not validation or saving)
    sums: dict[str, torch.Tensor] = {}
    n_sum = 0
    last_saved = step if start_ckpt is not None else -1
    model.train()

    def save(at_step: int) -> Path | None:
        path = None
        if info.is_main:
            loop["elapsed_s"] = elapsed_before + time.perf_counter() - session_start
            state = {"data": loader.state_dict(), "loop": dict(loop), "world_size": info.world_size}
            path = ckpt_io.save_checkpoint(run_dir, at_step, model, optimizer, state, resolved, cfg.keep_last)
        dist.barrier(info)
        return path

    def validate(at_step: int) -> None:
        if info.is_main and val_ds is not None:
            t0 = time.perf_counter()
            res = evaluate(model, val_ds, val_windows, cfg.data.batch_size, cfg.loss, device, autocast,
                           cfg.eval_face_zeroed)  # fmt: skip
            res["val_seconds"] = time.perf_counter() - t0
            log(metrics_path, {"event": "val", "step": at_step, **res})
            for k, v in res.items():
                if v is not None:
                    writer.add_scalar(f"val/{k.removeprefix('val_')}", v, at_step)
            auc = res.get("val_yield_auc")
            bar.write(
                f"step {at_step}: val loss {res['val_loss']:.4f}, yield AUC "
                + (f"{auc:.3f}" if auc is not None else "n/a")
                + (f" (face zeroed {res['val_yield_auc_face_zeroed']:.3f})"
                   if res.get("val_yield_auc_face_zeroed") is not None else "")
            )  # fmt: skip
            result.last_val = res
        dist.barrier(info)

    while step < cfg.optim.max_steps:
        if cfg.stop_at_step and step >= cfg.stop_at_step:
            result.stop_reason = "stop_at_step"
            break
        step_start = time.perf_counter()
        torch.manual_seed(_step_seed(cfg.seed, step, info.rank))
        lr = lr_at(step, cfg.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = loader.next_batches()
        parts_sum: dict[str, Any] = {}
        frames = 0
        for i, batch in enumerate(batches):
            batch = batch.to(device)
            last = i == len(batches) - 1
            sync = train_model.no_sync() if info.distributed and not last else nullcontext()
            with sync:
                with autocast():
                    out = train_model(
                        batch.text, batch.self_codes, batch.other_codes, batch.face, batch.face_present, audio=audio
                    )
                    parts = compute_loss(out, cfg.loss, batch.y, batch.m)
                (parts["loss"] / len(batches)).backward()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v.detach().float() / len(batches)
            frames += batch.n_valid_frames
        clip = cfg.optim.clip_norm if cfg.optim.clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        frames *= info.world_size
        loop["frames_seen"] = int(loop["frames_seen"]) + frames
        window_frames_seen += frames
        for k, v in parts_sum.items():
            sums[k] = sums.get(k, 0.0) + v  # tensors: no device sync until the next log line
        n_sum += 1
        step_seconds += time.perf_counter() - step_start
        if step % cfg.log_every_steps == 0 or step == cfg.optim.max_steps:
            keys = sorted(sums)
            means = dist.all_reduce_mean(torch.stack([sums[k] / n_sum for k in keys]).to(device), info)
            record = {k: float(v) for k, v in zip(keys, means, strict=True)}
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"non-finite training loss {record['loss']} by step {step} (lr {lr:.3g})")
            record.update(
                lr=lr, grad_norm=float(grad_norm), frames_per_s=window_frames_seen / max(step_seconds, 1e-9),
                frames_seen=loop["frames_seen"], elapsed_s=elapsed_before + time.perf_counter() - session_start,
            )  # fmt: skip
            log(metrics_path, {"event": "train", "step": step, **record})
            for k, v in record.items():
                writer.add_scalar(f"train/{k}", v, step)
            bar.set_postfix(loss=f"{record['loss']:.3f}", fps=f"{record['frames_per_s']:.0f}")
            result.last_train = record
            sums, n_sum = {}, 0
            step_seconds, window_frames_seen = 0.0, 0
        bar.update(1)
        if cfg.eval_every_steps and step % cfg.eval_every_steps == 0 and step < cfg.optim.max_steps:
            validate(step)
        if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0:
            result.checkpoint = save(step)
            last_saved = step
        if cfg.max_minutes > 0:
            over = elapsed_before + time.perf_counter() - session_start >= cfg.max_minutes * 60
            if dist.any_process(over, info):
                result.stop_reason = "max_minutes"
                break
    bar.close()
    result.step = step
    validate(step)
    if last_saved != step:
        result.checkpoint = save(step)
    if cfg.lora.rank and info.is_main:  # adapters alone, and merged into a plain model (in place: the run is over)
        from faceturn.lora import export

        export(model, cfg.lora, run_dir / "lora", {"step": step, "config": resolved})
    log(metrics_path, {"event": "end", "step": step, "reason": result.stop_reason})
    writer.close()
    return result
