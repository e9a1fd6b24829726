"""Atomic, self-describing training checkpoints and the one way to load a trained model.

Layout: `RUN/checkpoints/step-0000100/` holds
  - `model.safetensors`  the unwrapped, uncompiled module's state dict (face statistics included);
  - `optimizer.pt`       the optimizer's state dict (tensors and numbers only: loaded with `weights_only=True`);
  - `state.json`         step, data-loader state and loop state (everything else resume needs);
  - `config.json`        the resolved run config (train, model, schema), so the model rebuilds from this folder alone;
  - `COMPLETE`           written last: the size of every other file.
Everything is written into `.tmp-step-0000100/` and the folder is renamed only when complete, so a write killed
half-way leaves a `.tmp-*` folder that nothing reads (and the next save removes) and the previous checkpoint intact.
A folder counts only when its name parses, `COMPLETE` exists and every file has the size recorded there.

No RNG state is stored: nothing in training draws from a global generator's history. The data stream is a function of
(seed, sample index) (faceturn.data) and the torch generator is re-seeded from (seed, step, rank) before each step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model

from faceturn.config import ConfigError, from_dict
from faceturn.errors import CheckpointError
from faceturn.io import atomic_write_json
from faceturn.lora import apply_lora, merge_lora
from faceturn.model import Model, from_config
from faceturn.recipe import TrainConfig
from faceturn.schema import FACE_CHANNELS, SCHEMA_VERSION

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
_STEP_RE = re.compile(r"step-(\d{7,})")


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def is_complete(ckpt: Path) -> bool:
    """True when `ckpt` is a finished checkpoint: COMPLETE exists and every listed file has its recorded size."""
    try:
        sizes = json.loads((ckpt / COMPLETE).read_text())["files"]
        return all((ckpt / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def checkpoint_step(ckpt: Path) -> int:
    match = _STEP_RE.fullmatch(Path(ckpt).name)
    if match is None:
        raise CheckpointError(f"{ckpt}: not a checkpoint folder name (expected step-NNNNNNN)")
    return int(match.group(1))


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_RE.fullmatch(p.name) and p.is_dir() and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (what `--resume` continues from), or None."""
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last` complete ones.

    `model` must be the unwrapped, uncompiled module (no `module.` / `_orig_mod.` prefixes are ever stored).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    name = step_dir_name(step)
    tmp = root / f".tmp-{name}"
    tmp.mkdir()
    save_model(model, str(tmp / MODEL_FILE), metadata={"format": "pt", "step": str(step)})
    _fsync_file(tmp / MODEL_FILE)
    with open(tmp / OPTIMIZER_FILE, "wb") as fh:
        torch.save(optimizer.state_dict(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    atomic_write_json(tmp / STATE_FILE, {**state, "step": step})
    atomic_write_json(tmp / CONFIG_FILE, dict(config))
    sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
    atomic_write_json(tmp / COMPLETE, {"step": step, "files": sizes})
    _fsync_dir(tmp)
    final = root / name
    if final.exists():  # the same step saved again (e.g. a resumed run that stops where it started)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest complete checkpoint of a run folder."""
    path = Path(path)
    if _STEP_RE.fullmatch(path.name):
        if not is_complete(path):
            raise CheckpointError(f"{path}: incomplete checkpoint (no valid {COMPLETE} marker); it cannot be loaded")
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path}: no complete checkpoint in {path / CHECKPOINTS}")
    return latest


def read_json(ckpt: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((Path(ckpt) / name).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt}: {name} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{ckpt}: {name} is not valid JSON ({e})") from None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Dotted fields whose values differ (or exist on one side only), minus `ignore` (fields or their prefixes)."""
    a, b = _flatten(saved), _flatten(current)
    ignored = tuple(ignore)

    def skipped(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in ignored)

    out = []
    for key in sorted(set(a) | set(b)):
        if skipped(key):
            continue
        if key not in a:
            out.append(f"{key} (not in the checkpoint; {b[key]!r} now)")
        elif key not in b:
            out.append(f"{key} (checkpoint has {a[key]!r}; unknown now)")
        elif a[key] != b[key]:
            out.append(f"{key} (checkpoint has {a[key]!r}, now {b[key]!r})")
    return out


def check_config(ckpt: Path, current: Mapping[str, Any], ignore: Iterable[str] = ()) -> None:
    """Refuse a checkpoint whose config differs from `current` in any field not ignored; name every such field."""
    diffs = config_differences(read_json(ckpt, CONFIG_FILE), current, ignore)
    if diffs:
        raise CheckpointError(f"{ckpt}: config does not match this run; differing fields: " + "; ".join(diffs))


def check_schema(ckpt: Path, saved_schema: Mapping[str, Any]) -> None:
    """The face schema the checkpoint was trained with must be the one this faceturn reads."""
    if saved_schema.get("version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{ckpt}: schema.version is {saved_schema.get('version')!r}, this faceturn reads {SCHEMA_VERSION}"
        )
    names = list(saved_schema.get("face_channels") or [])
    if names != list(FACE_CHANNELS):
        diff = next((i for i, (a, b) in enumerate(zip(names, FACE_CHANNELS, strict=False)) if a != b), None)
        where = f"first at index {diff}: {names[diff]!r} vs {FACE_CHANNELS[diff]!r}" if diff is not None else ""
        raise CheckpointError(
            f"{ckpt}: schema.face_channels differ from this faceturn's A61 channels "
            f"({len(names)} vs {len(FACE_CHANNELS)} channels{'; ' + where if where else ''})"
        )


def load_weights(ckpt: Path, model: torch.nn.Module) -> None:
    """Load model.safetensors into `model`; a missing or unexpected tensor is an error naming it."""
    device = next(model.parameters()).device
    missing, unexpected = st_load_model(model, str(Path(ckpt) / MODEL_FILE), strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt}: {MODEL_FILE} does not fit the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )


def load_optimizer(ckpt: Path, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Restore optimizer state without unpickling arbitrary objects (`weights_only=True`)."""
    state = torch.load(Path(ckpt) / OPTIMIZER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(state)


def load_model(run_or_checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[Model, TrainConfig]:
    """Rebuild a trained model from a checkpoint folder (or a run's newest one) → (model in eval mode, TrainConfig).

    Everything comes from the checkpoint: the model config (`config.model`, `zero_groups` included), the face
    statistics (buffers in the weights) and the training config (`config.data.face_dropout`, `config.labels`, ...).
    Evaluation code must use this.
    """
    ckpt = resolve_checkpoint(run_or_checkpoint)
    saved = read_json(ckpt, CONFIG_FILE)
    for key in ("train", "schema"):
        if key not in saved:
            raise CheckpointError(f"{ckpt}: {CONFIG_FILE} lacks its {key!r} section")
    if "model" in saved:
        raise CheckpointError(f"{ckpt}: written by an older faceturn (separate model section); retrain the run")
    check_schema(ckpt, saved["schema"])
    try:
        train_cfg = from_dict(TrainConfig, saved["train"], prefix="train.")
    except ConfigError as e:
        raise CheckpointError(f"{ckpt}: {CONFIG_FILE}: {e}") from None
    model = from_config(train_cfg.model, device=device)
    if train_cfg.lora.rank:  # a LoRA run stores base weights and adapters: evaluation gets them merged
        apply_lora(model, train_cfg.lora)
        load_weights(ckpt, model)
        merge_lora(model)
    else:
        load_weights(ckpt, model)
    model.eval()
    return model, train_cfg
