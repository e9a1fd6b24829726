"""The training loop: one loop for CPU, one GPU, torchrun DDP and torchrun FSDP2.

    faceturn train --config aux --corpus CORPUS --out runs/aux                      # CPU or one GPU
    torchrun --standalone --nproc_per_node 8 -m faceturn train --config aux --corpus CORPUS --out runs/aux
    torchrun --standalone --nproc_per_node 8 -m faceturn train --config aux --set parallel=fsdp ...  # sharded
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
- FSDP (`parallel = "fsdp"`, faceturn.fsdp): the same loop on a sharded model; every process takes part in
  checkpoints (each writes its shard) and in validation (the same windows on every process; rank 0 logs).
- bf16 autocast and `torch.compile` only on CUDA; on CPU everything is fp32. Only rank 0 logs and writes.
"""

from __future__ import annotations

import functools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from faceturn import checkpoint as ckpt_io
from faceturn import dist, fsdp
from faceturn.config import to_dict
from faceturn.data import WindowDataset, WindowLoader, face_statistics, validation_batches, validation_windows
from faceturn.errors import CheckpointError, ConfigError, RunDirError, TrainingDiverged
from faceturn.io import append_jsonl, atomic_write_json
from faceturn.lora import apply_lora
from faceturn.lora import export as export_lora
from faceturn.model import LossConfig, compute_loss, from_config
from faceturn.recipe import PROVENANCE, OptimConfig, TrainConfig, resolved_config, resumable_fields
from faceturn.stats import roc_auc
from faceturn.store import provenance

METRICS_FILE = "metrics.jsonl"


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


def _tensorboard_writer_class() -> type:
    """torch's SummaryWriter, or a clear error when the `tensorboard` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "tensorboard = true needs the `tensorboard` package, which is not installed: `pip install tensorboard`, "
            "or run with --set tensorboard=false (metrics.jsonl has the same numbers)"
        ) from None
    return SummaryWriter


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
    audio = loss_cfg.audio_weight > 0  # the depformer only runs when its loss counts

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    n_windows = 0
    logits, logits_zeroed, targets = [], [], []
    for batch in validation_batches(dataset, windows, batch_size):
        batch = batch.to(device)
        with autocast():
            out = model(*batch.model_inputs(), audio=audio)
            parts = compute_loss(out, loss_cfg, batch.y, batch.m)
        b = batch.text.shape[0]
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n_windows += b
        scored = batch.m & batch.valid
        logits.append(out.yield_logits.float()[scored].cpu())
        targets.append(batch.y[scored].cpu())
        if face_zeroed:
            with autocast():
                out_z = model(*batch.without_face().model_inputs(), audio=False)
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
    saved = ckpt_io.read_json(ckpt, ckpt_io.CONFIG_FILE).get("train", {}).get("model", {})
    diffs = ckpt_io.config_differences(saved, model_dict)
    if diffs:
        raise CheckpointError(f"{ckpt}: init_from has another model config: " + "; ".join(diffs))
    return ckpt


def _checkpoint_layers(model: torch.nn.Module) -> None:
    """Activation checkpointing: every temporal and depformer layer keeps only its input and is recomputed in the
    backward pass (torch's non-reentrant wrapper; state-dict names are unchanged)."""
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


def train(
    cfg: TrainConfig, corpus_dir: str | Path, run_dir: str | Path, resume: bool = False, *, allow_older: bool = False
) -> TrainResult:
    """Train (or, with `resume`, continue) a run in `run_dir` on `corpus_dir`; returns where and why it stopped.
    `allow_older`: resume from the newest intact checkpoint when the newest one is damaged (else an error)."""
    joined_here = not torch.distributed.is_initialized()
    info = dist.init_distributed(cfg.device)
    try:
        with _Session(cfg, Path(corpus_dir), Path(run_dir), resume, info, allow_older) as session:
            return session.run()
    finally:
        if joined_here:
            dist.cleanup()


def _start_checkpoint(
    cfg: TrainConfig, run_dir: Path, resume: bool, resolved: dict[str, Any], allow_older: bool, info: dist.DistInfo
) -> Path | None:
    """The checkpoint this session continues (None for a new run), after checking the folder and the config."""
    _check_run_dir(run_dir, resume)
    compare_ignore = (*resumable_fields(), *PROVENANCE, "corpus")  # the corpus is compared by content, below
    content = (ckpt_io.MODEL_FILE, ckpt_io.OPTIMIZER_FILE)
    check = functools.partial(fsdp.damage, info=info) if cfg.parallel == "fsdp" else None  # hashing shared
    start = None
    if resume:
        start = ckpt_io.latest_checkpoint(run_dir, allow_older=allow_older, content=content, check=check)
    if start is not None:
        ckpt_io.check_config(start, resolved, ignore=compare_ignore)
    elif resume and (run_dir / ckpt_io.CONFIG_FILE).exists():
        ckpt_io.check_config(run_dir, resolved, ignore=compare_ignore)
    saved_at = start if start is not None else run_dir
    if resume and (saved_at / ckpt_io.CONFIG_FILE).exists():
        _check_corpus(run_dir, saved_at, resolved["corpus"])
    return start


def _check_corpus(run_dir: Path, saved_at: Path, corpus: dict[str, str]) -> None:
    """A resumed run continues on the corpus it started on: the same manifest fingerprint (the folder may have
    moved). A run that recorded no corpus (an older faceturn) is not checked."""
    saved = ckpt_io.read_json(saved_at, ckpt_io.CONFIG_FILE).get("corpus")
    if isinstance(saved, dict) and saved.get("fingerprint") != corpus["fingerprint"]:
        raise CheckpointError(
            f"{run_dir}: the run was trained on corpus {saved.get('path')} (manifest {saved.get('fingerprint')}), "
            f"not on {corpus['path']} (manifest {corpus['fingerprint']}); resume it on its own corpus, or start a "
            "new run"
        )


class _Session:
    """One session of a run: built in `__init__` (folder, data, model, optimizer, resumed state), trained by `run`,
    and its progress bar and TensorBoard writer closed on exit, whatever happened."""

    def __init__(
        self, cfg: TrainConfig, corpus_dir: Path, run_dir: Path, resume: bool, info: dist.DistInfo, allow_older: bool
    ):
        self.cfg, self.run_dir, self.info = cfg, run_dir, info
        self.device = device = info.device
        if cfg.precision == "bf16" and device.type != "cuda":
            raise ConfigError("precision = 'bf16' needs CUDA; on CPU use 'auto' or 'fp32'")
        self.use_bf16 = device.type == "cuda" and cfg.precision in ("auto", "bf16")
        self.resolved = {**resolved_config(cfg), "corpus": provenance(corpus_dir)}  # checked on resume
        self.start_ckpt = start = _start_checkpoint(cfg, run_dir, resume, self.resolved, allow_older, info)
        self.fsdp = cfg.parallel == "fsdp"
        self.sharded = self.fsdp and info.distributed  # one process has nothing to shard (faceturn.fsdp)
        dist.barrier(info)  # every process has seen the folder as it was before rank 0 writes into it
        writer_class = _tensorboard_writer_class() if info.is_main and cfg.tensorboard else None  # fail before work
        self.writer: Any = _NullWriter()
        self.bar: Any = None

        window_frames = cfg.data.window_frames
        train_ds = WindowDataset(corpus_dir, cfg.data.train_split, window_frames, cfg.labels)
        self.loader = WindowLoader(
            train_ds, cfg.data.batch_size, cfg.data.seed, cfg.data.face_dropout, cfg.optim.grad_accum,
            info.world_size, info.rank, cfg.data.workers,
        )  # fmt: skip
        self.val_ds = self.val_windows = None
        if info.is_main or self.sharded:  # a sharded model validates on every process
            self.val_ds = WindowDataset(corpus_dir, cfg.data.val_split, window_frames, cfg.labels)
            self.val_windows = validation_windows(self.val_ds, cfg.data.val_max_windows)
        for ds in (train_ds, self.val_ds):  # a damaged file fails now, not after hours of training
            if ds is not None:
                ds.validate()

        if cfg.lora.rank and not (cfg.init_from or start):
            raise ConfigError(
                "lora.rank > 0 fine-tunes a trained backbone: set init_from (a faceturn import-moshi run)"
            )
        init_ckpt = _check_init(cfg.init_from, to_dict(cfg.model)) if start is None and cfg.init_from else None
        torch.manual_seed(cfg.seed)
        self.model = model = from_config(cfg.model, device=device)
        if init_ckpt is not None:
            ckpt_io.load_weights(init_ckpt, model)
        if cfg.lora.rank:
            apply_lora(model, cfg.lora, frozen_dtype=torch.bfloat16 if self.use_bf16 else None)
        if cfg.activation_checkpointing:
            _checkpoint_layers(model)
        compile_model = cfg.compile and device.type == "cuda"
        if self.sharded:
            fsdp.shard(model, info, self.use_bf16, compile_layers=compile_model)
        self.optimizer = build_optimizer(model, cfg.optim, device)
        self.loop: dict[str, Any] = {"elapsed_s": 0.0, "frames_seen": 0}
        self.step = 0
        if start is not None and self.fsdp:
            fsdp.load_checkpoint(start, model, self.optimizer, info)
        elif start is not None:
            ckpt_io.load_weights(start, model)
            ckpt_io.load_optimizer(start, self.optimizer, device)
        if start is not None:
            state = ckpt_io.read_json(start, ckpt_io.STATE_FILE)
            self.loader.load_state_dict(state["data"])
            self.loop.update(state.get("loop", {}))
            self.step = int(state["step"])
            if self.loader.next_step != self.step:
                raise CheckpointError(f"{start}: data state is at step {self.loader.next_step}, the run at {self.step}")
        else:
            mean, std = face_statistics(train_ds)
            model.set_face_statistics(torch.from_numpy(mean), torch.from_numpy(std))
            if info.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(run_dir / ckpt_io.CONFIG_FILE, self.resolved)
        dist.barrier(info)

        self.audio = cfg.loss.audio_weight > 0  # audio_weight = 0 skips the depformer (87 % of a tiny CPU step)
        self.train_model: torch.nn.Module = model
        if info.distributed and not self.fsdp:
            self.train_model = DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=not self.audio,
            )
        if compile_model and not self.sharded:
            self.train_model = torch.compile(self.train_model)
        self.metrics_path = run_dir / METRICS_FILE
        self.writer_class = writer_class
        self.log({
            "event": "resume" if start is not None else "start", "step": self.step, "world_size": info.world_size,
            "parallel": cfg.parallel, "device": str(device), "bf16": self.use_bf16,
            "parameters": model.num_parameters(),
            "global_batch_windows": self.loader.global_batch_size, "window_frames": window_frames,
            "checkpoint": str(start) if start else None,
        })  # fmt: skip

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.loader.close()
        if self.bar is not None:
            self.bar.close()
        self.writer.close()

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else nullcontext()

    def log(self, record: dict[str, Any]) -> None:
        if self.info.is_main:
            append_jsonl(self.metrics_path, record)

    def save(self, at_step: int) -> Path | None:
        self.loop["elapsed_s"] = self.elapsed_s()
        state = {"data": self.loader.state_dict(), "loop": dict(self.loop), "world_size": self.info.world_size}
        args = (self.run_dir, at_step, self.model, self.optimizer, state, self.resolved, self.cfg.keep_last)
        if self.fsdp:  # every process writes its shard
            return fsdp.save_checkpoint(*args, self.info)
        path = ckpt_io.save_checkpoint(*args) if self.info.is_main else None
        dist.barrier(self.info)
        return path

    def elapsed_s(self) -> float:
        """Loop time over all sessions of the run."""
        return self.elapsed_before + time.perf_counter() - self.session_start

    def validate(self, at_step: int, result: TrainResult) -> None:
        cfg = self.cfg
        if self.val_ds is not None:
            t0 = time.perf_counter()
            res = evaluate(self.model, self.val_ds, self.val_windows, cfg.data.batch_size, cfg.loss, self.device,
                           self.autocast, cfg.eval_face_zeroed)  # fmt: skip
            res["val_seconds"] = time.perf_counter() - t0
        if self.info.is_main and self.val_ds is not None:
            self.log({"event": "val", "step": at_step, **res})
            for k, v in res.items():
                if v is not None:
                    self.writer.add_scalar(f"val/{k.removeprefix('val_')}", v, at_step)
            auc = res.get("val_yield_auc")
            self.bar.write(
                f"step {at_step}: val loss {res['val_loss']:.4f}, yield AUC "
                + (f"{auc:.3f}" if auc is not None else "n/a")
                + (f" (face zeroed {res['val_yield_auc_face_zeroed']:.3f})"
                   if res.get("val_yield_auc_face_zeroed") is not None else "")
            )  # fmt: skip
            result.last_val = res
        dist.barrier(self.info)

    def train_step(self) -> tuple[dict[str, torch.Tensor], int, torch.Tensor, float]:
        """One optimizer step over `grad_accum` micro-batches → (mean loss parts, frames, grad norm, lr)."""
        cfg, info = self.cfg, self.info
        torch.manual_seed(_step_seed(cfg.seed, self.step, info.rank))
        lr = lr_at(self.step, cfg.optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = self.loader.next_batches()
        parts_sum: dict[str, Any] = {}
        frames = 0
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            last = i == len(batches) - 1
            ddp = info.distributed and not self.fsdp  # FSDP reduce-scatters every micro-batch (faceturn.fsdp)
            sync = self.train_model.no_sync() if ddp and not last else nullcontext()
            with sync:
                with self.autocast():
                    out = self.train_model(*batch.model_inputs(), audio=self.audio)
                    parts = compute_loss(out, cfg.loss, batch.y, batch.m)
                (parts["loss"] / len(batches)).backward()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v.detach().float() / len(batches)
            frames += batch.n_valid_frames
        clip = cfg.optim.clip_norm if cfg.optim.clip_norm > 0 else float("inf")
        grad_norm = fsdp.full_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return parts_sum, frames * info.world_size, grad_norm, lr

    def run(self) -> TrainResult:
        cfg, info, step = self.cfg, self.info, self.step
        if self.writer_class is not None:
            self.writer = self.writer_class(log_dir=str(self.run_dir / "tensorboard"))
        self.bar = tqdm(
            total=cfg.optim.max_steps, initial=step, unit="step", dynamic_ncols=True,
            disable=not (info.is_main and cfg.progress), desc=self.run_dir.name,
        )  # fmt: skip
        result = TrainResult(step=step, stop_reason="max_steps", is_main=info.is_main)
        self.elapsed_before = float(self.loop["elapsed_s"])
        self.session_start = time.perf_counter()
        step_seconds, window_frames_seen = 0.0, 0  # frames/s counts step time only (not validation or saving)
        sums: dict[str, torch.Tensor] = {}
        n_sum = 0
        last_saved = step if self.start_ckpt is not None else -1
        self.model.train()
        while self.step < cfg.optim.max_steps:
            if cfg.stop_at_step and self.step >= cfg.stop_at_step:
                result.stop_reason = "stop_at_step"
                break
            step_start = time.perf_counter()
            parts, frames, grad_norm, lr = self.train_step()
            step = self.step
            self.loop["frames_seen"] = int(self.loop["frames_seen"]) + frames
            window_frames_seen += frames
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v  # tensors: no device sync until the next log line
            n_sum += 1
            step_seconds += time.perf_counter() - step_start
            if step % cfg.log_every_steps == 0 or step == cfg.optim.max_steps:
                keys = sorted(sums)
                means = dist.all_reduce_mean(torch.stack([sums[k] / n_sum for k in keys]).to(self.device), info)
                record = {k: float(v) for k, v in zip(keys, means, strict=True)}
                if not math.isfinite(record["loss"]):
                    raise TrainingDiverged(
                        f"{self.run_dir}: the training loss became {record['loss']} by step {step} (lr {lr:.3g}); "
                        f"lower optim.lr or check the corpus (the last checkpoint is step {last_saved})"
                    )
                record.update(
                    lr=lr, grad_norm=float(grad_norm), frames_per_s=window_frames_seen / max(step_seconds, 1e-9),
                    frames_seen=self.loop["frames_seen"], elapsed_s=self.elapsed_s(),
                )  # fmt: skip
                self.log({"event": "train", "step": step, **record})
                for k, v in record.items():
                    self.writer.add_scalar(f"train/{k}", v, step)
                self.bar.set_postfix(loss=f"{record['loss']:.3f}", fps=f"{record['frames_per_s']:.0f}")
                result.last_train = record
                sums, n_sum = {}, 0
                step_seconds, window_frames_seen = 0.0, 0
            self.bar.update(1)
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0:  # saved before anything else
                result.checkpoint = self.save(step)
                last_saved = step
            if cfg.eval_every_steps and step % cfg.eval_every_steps == 0 and step < cfg.optim.max_steps:
                self.validate(step, result)
            if cfg.max_minutes > 0:
                over = self.elapsed_s() >= cfg.max_minutes * 60
                if dist.any_process(over, info):
                    result.stop_reason = "max_minutes"
                    break
        self.bar.close()
        result.step = step = self.step
        if last_saved != step:
            result.checkpoint = self.save(step)
        self.validate(step, result)
        if cfg.lora.rank and info.is_main:  # adapters alone, and merged into a plain model (in place: the run is over)
            export_lora(self.model, cfg.lora, self.run_dir / "lora", {"step": step, "config": self.resolved})
        self.log({"event": "end", "step": step, "reason": result.stop_reason})
        return result
