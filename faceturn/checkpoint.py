"""Atomic, self-describing training checkpoints and the one way to load a trained model.

Layout: `RUN/checkpoints/step-0000100/` holds
  - `model.safetensors`  the unwrapped, uncompiled module's state dict (face statistics included);
  - `optimizer.pt`       the optimizer's state dict (tensors and numbers only: loaded with `weights_only=True`);
  - `sharded/`           instead of `optimizer.pt` in a `parallel = "fsdp"` run: model and optimizer state as
                         torch.distributed.checkpoint writes them, one file per process (faceturn.fsdp); resume reads
                         this at any world size, everything else reads the consolidated `model.safetensors`;
  - `state.json`         step, data-loader state and loop state (everything else resume needs);
  - `config.json`        the resolved run config (train config with its model, schema), so the model rebuilds from
                         this folder alone;
  - `COMPLETE`           written last: the size and sha256 of every other file.
Everything is written into `.tmp-step-0000100/` and the folder is renamed only when complete, so a write killed
half-way leaves a `.tmp-*` folder that nothing reads (and the next save removes) and the previous checkpoint intact.
A folder is intact when `COMPLETE` exists and every file has its recorded size; the weights are checked against their
sha256 before they are loaded (the optimizer state before a resume) and must be finite. The newest checkpoint of a
run must be intact: a damaged one is an error naming what is wrong, never a silent fall-back to an older one
(`--allow-older` takes the newest intact one and says which).

No RNG state is stored: nothing in training draws from a global generator's history. The data stream is a function of
(seed, sample index) (faceturn.data) and the torch generator is re-seeded from (seed, step, rank) before each step.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_file, save_model

from faceturn.config import ConfigError, from_dict
from faceturn.dist import resolve_device
from faceturn.errors import CheckpointError
from faceturn.io import atomic_write_json, default_file_mode
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
SHARDED_DIR = "sharded"  # a parallel = "fsdp" run's model and optimizer state (faceturn.fsdp)
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


def file_sha256(path: Path) -> str:
    """The file's sha256; remembered per (path, size, mtime), so finding a run's newest checkpoint and then loading
    it does not read a 15 GB weight file twice."""
    st = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def damage(ckpt: Path, *, content: tuple[str, ...] = (), part: tuple[int, int] = (0, 1)) -> str | None:
    """What is wrong with checkpoint folder `ckpt` (None when intact): no readable COMPLETE marker, a listed file
    missing or of another size, or (for the files or folders named in `content`) bytes that do not hash to the
    recorded sha256. `part` = (i, n) hashes only every n-th of those files from the i-th, so that n processes can
    share the hashing of a sharded checkpoint (faceturn.fsdp)."""
    try:
        marker = json.loads((ckpt / COMPLETE).read_text())
        sizes, hashes = marker["files"], marker["sha256"]
    except FileNotFoundError:
        return f"no {COMPLETE} marker (the write did not finish, or the marker was removed)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {COMPLETE} marker ({type(e).__name__})"
    for name, size in sizes.items():
        try:
            actual = (ckpt / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} has {actual} bytes, {size} were written (truncated or replaced)"
    named = sorted(n for n in hashes if any(n == c or n.startswith(f"{c}/") for c in content))
    first, step = part
    for name in named[first::step]:
        if file_sha256(ckpt / name) != hashes[name]:
            return f"{name} does not match its sha256 in {COMPLETE} (the file was altered or corrupted)"
    return None


def is_complete(ckpt: Path) -> bool:
    """True when `ckpt` is a finished checkpoint: COMPLETE exists and every listed file has its recorded size."""
    return damage(ckpt) is None


def checkpoint_step(ckpt: Path) -> int:
    match = _STEP_RE.fullmatch(Path(ckpt).name)
    if match is None:
        raise CheckpointError(f"{ckpt}: not a checkpoint folder name (expected step-NNNNNNN)")
    return int(match.group(1))


def step_folders(run_dir: str | Path) -> list[Path]:
    """Every checkpoint folder of a run (complete or not; never the `.tmp-*` of a write in progress), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _STEP_RE.fullmatch(p.name) and p.is_dir()), key=checkpoint_step)


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first."""
    return [p for p in step_folders(run_dir) if is_complete(p)]


def latest_checkpoint(
    run_dir: str | Path,
    *,
    allow_older: bool = False,
    content: tuple[str, ...] = (MODEL_FILE,),
    check: Callable[[Path], str | None] | None = None,
) -> Path | None:
    """The newest checkpoint of a run (what `--resume` and evaluation use), or None when the run has none.

    The newest folder must be intact (marker, sizes, and the sha256 of the files in `content`; or whatever `check`
    finds wrong, when given): a damaged one is an error naming what is wrong, unless `allow_older`, which takes the
    newest intact one and says so on stderr."""
    folders = step_folders(run_dir)
    damaged: list[tuple[Path, str]] = []
    for ckpt in reversed(folders):
        problem = check(ckpt) if check is not None else damage(ckpt, content=content)
        if problem is None:
            if damaged and not allow_older:
                newest, why = damaged[0]
                raise CheckpointError(
                    f"{newest}: damaged checkpoint: {why}; the newest intact one is {ckpt.name} "
                    "(pass --allow-older to use it)"
                )
            if damaged:
                print(f"faceturn: using {ckpt} (newer damaged: {', '.join(p.name for p, _ in damaged)})",
                      file=sys.stderr)  # fmt: skip
            return ckpt
        damaged.append((ckpt, problem))
    if damaged:
        newest, why = damaged[0]
        raise CheckpointError(f"{newest}: damaged checkpoint: {why}; {run_dir} has no intact checkpoint")
    return None


def temporary_folder(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint `step` is written before it is renamed to its final name."""
    return Path(run_dir) / CHECKPOINTS / f".tmp-{step_dir_name(step)}"


def begin_checkpoint(run_dir: str | Path, step: int) -> Path:
    """The empty temporary folder checkpoint `step` is written into (stale ones of killed writes removed)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # left by a write that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = temporary_folder(run_dir, step)
    tmp.mkdir()
    return tmp


def save_weights(tensors: Mapping[str, torch.Tensor] | torch.nn.Module, path: Path, step: int) -> None:
    """model.safetensors from a module or a full state dict, fsynced, readable as the umask says."""
    metadata = {"format": "pt", "step": str(step)}
    if isinstance(tensors, torch.nn.Module):
        save_model(tensors, str(path), metadata=metadata)
    else:
        save_file(dict(tensors), str(path), metadata=metadata)
    os.chmod(path, default_file_mode())  # safetensors writes 0600 whatever the umask
    _fsync_file(path)


def finish_checkpoint(
    tmp: Path,
    step: int,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    keep_last: int,
    sha256: Mapping[str, str] | None = None,
) -> Path:
    """Write state.json and config.json into `tmp`, then COMPLETE (the size and sha256 of every file, those already
    hashed given in `sha256`), rename it to its final name and delete all but the newest `keep_last` complete
    checkpoints."""
    atomic_write_json(tmp / STATE_FILE, {**state, "step": step})
    atomic_write_json(tmp / CONFIG_FILE, dict(config))
    known = dict(sha256 or {})
    names = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    sizes = {name: (tmp / name).stat().st_size for name in names}
    hashes = {name: known.get(name) or file_sha256(tmp / name) for name in names}
    atomic_write_json(tmp / COMPLETE, {"step": step, "files": sizes, "sha256": hashes})
    for folder in sorted({(tmp / name).parent for name in names}, reverse=True):
        _fsync_dir(folder)
    root = tmp.parent
    final = root / step_dir_name(step)
    if final.exists():  # the same step saved again (e.g. a resumed run that stops where it started)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in complete_checkpoints(root.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    tmp = begin_checkpoint(run_dir, step)
    save_weights(model, tmp / MODEL_FILE, step)
    with open(tmp / OPTIMIZER_FILE, "wb") as fh:
        torch.save(optimizer.state_dict(), fh)
        fh.flush()
        os.fsync(fh.fileno())
    return finish_checkpoint(tmp, step, state, config, keep_last)


def resolve_checkpoint(path: str | Path, *, allow_older: bool = False) -> Path:
    """A checkpoint folder (which must be intact), or the newest checkpoint of a run folder (`latest_checkpoint`)."""
    path = Path(path)
    if _STEP_RE.fullmatch(path.name):
        problem = damage(path, content=(MODEL_FILE,))
        if problem is not None:
            raise CheckpointError(f"{path}: incomplete or damaged checkpoint: {problem}; it cannot be loaded")
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a run or checkpoint folder")
    latest = latest_checkpoint(path, allow_older=allow_older)
    if latest is None:
        raise CheckpointError(f"{path}: no checkpoint in {path / CHECKPOINTS} (is it a run folder?)")
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
    try:
        missing, unexpected = st_load_model(model, str(Path(ckpt) / MODEL_FILE), strict=False, device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{Path(ckpt) / MODEL_FILE}: cannot be read as safetensors ({e})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt}: {MODEL_FILE} does not fit the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{Path(ckpt) / MODEL_FILE}: tensor {name} holds non-finite values (NaN or inf)")


def load_optimizer(ckpt: Path, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Restore optimizer state without unpickling arbitrary objects (`weights_only=True`)."""
    problem = damage(Path(ckpt), content=(OPTIMIZER_FILE,))
    if problem is not None:
        raise CheckpointError(f"{ckpt}: damaged checkpoint: {problem}")
    state = torch.load(Path(ckpt) / OPTIMIZER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(state)


def load_model(
    run_or_checkpoint: str | Path, device: str | torch.device = "cpu", *, allow_older: bool = False
) -> tuple[Model, TrainConfig]:
    """Rebuild a trained model from a checkpoint folder (or a run's newest one) → (model in eval mode, TrainConfig).

    Everything comes from the checkpoint: the model config (`config.model`, `zero_groups` included), the face
    statistics (buffers in the weights) and the training config (`config.data.face_dropout`, `config.labels`, ...).
    Evaluation code must use this.
    """
    device = resolve_device(device) if isinstance(device, str) else device  # "cuda" without CUDA: a clear error
    ckpt = resolve_checkpoint(run_or_checkpoint, allow_older=allow_older)
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
