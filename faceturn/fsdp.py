"""FSDP2 training (`parallel = "fsdp"`): parameters, gradients and AdamW state sharded over the processes, and the
sharded checkpoints that let such a run continue at any world size.

Why: DDP keeps the whole model, its gradients and both AdamW moments on every GPU, 16 bytes per parameter (123 GB for
moshi-7b), so a full fine-tune of the 7B shape cannot fit an 80 GB GPU. PyTorch's `fully_shard` splits every
parameter along its first dimension over the N processes: each keeps 1/N of the fp32 master weights, gradients and
moments, and a layer's whole weights exist only while it runs (`benchmarks/fsdp_memory.py` sizes a run).

- Units: every temporal and depformer layer is one unit (gathered before it runs, freed after it in the forward and
  backward passes); the root unit holds the rest (embeddings, heads, face encoder) and stays gathered from the forward
  to the end of the backward pass.
- Precision: on CUDA the gathered weights are bf16 and gradients are reduced in fp32 into fp32 shards (the master
  weights AdamW updates); on the CPU everything is fp32, so two gloo processes compute what one process computes.
- Gradient accumulation reduce-scatters after every micro-batch, so no unsharded gradient outlives its layer.
- Checkpoints: torch.distributed.checkpoint (DCP) writes `sharded/`, every process its own file (the run folder must
  be on a filesystem every process sees), the model and optimizer state keyed by parameter name, so they load at any
  world size: DCP reshards on load. Rank 0 also writes the consolidated `model.safetensors`, which evaluation,
  streaming and `init_from` read as in any run. The folder is written and sealed like every checkpoint
  (faceturn.checkpoint: temporary folder, COMPLETE with sizes and sha256, rename); the processes share the hashing.
- Safety: DCP's own reader unpickles its `.metadata` file and its few non-tensor items (optimizer hyperparameters).
  Here the metadata goes through an unpickler that admits only DCP's metadata classes and torch dtypes, every
  non-tensor item must load with `weights_only=True` first, and shards are read only from inside the folder.
- One process: `parallel = "fsdp"` with world size 1 trains the plain model (there is nothing to shard) and keeps
  the sharded checkpoint format, so a run written by N processes resumes on one and vice versa.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from faceturn import checkpoint as ckpt_io
from faceturn import dist
from faceturn.errors import CheckpointError
from faceturn.model import Model

_METADATA_FILE = ".metadata"  # DCP's index of a sharded folder (a pickle)
_METADATA_CLASSES = {
    *(("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING",
    )),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("collections", "OrderedDict"),
}  # fmt: skip


def shard(model: Model, info: dist.DistInfo, bf16: bool, compile_layers: bool = False) -> None:
    """Shard `model` in place over all processes: one unit per temporal and depformer layer (activation-checkpoint
    wrappers included), the root for the rest; bf16 compute with fp32 gradient reduction when `bf16`. With
    `compile_layers` each layer is compiled on its own first (compiling the sharded whole would trace FSDP's hooks)."""
    mesh = dist.device_mesh(info)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    policy = policy or MixedPrecisionPolicy()
    for stack in (model.transformer.layers, model.depformer.layers):
        for layer in stack:
            if compile_layers:
                layer.compile()
            fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # The root returns views (ModelOutput's slices of the hidden states); FSDP warns that an in-place op on one would
    # skip its backward hook. compute_loss and evaluation only read them.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor, or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole value of a sharded or replicated tensor (a collective when sharded), or the tensor itself."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Model and optimizer state keyed by parameter name (sharded where the model is): what DCP saves and loads."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    keep_last: int,
    info: dist.DistInfo,
) -> Path | None:
    """Write sharded checkpoint `step` (every process must call this); returns its folder on rank 0, else None."""
    tmp = ckpt_io.temporary_folder(run_dir, step)
    if info.is_main:
        ckpt_io.begin_checkpoint(run_dir, step)
    dist.barrier(info)
    state_now = _training_state(model, optimizer)
    with _one_process_quietly():
        dcp.save(state_now, checkpoint_id=tmp / ckpt_io.SHARDED_DIR, no_dist=not info.distributed)
    del state_now
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if info.is_main:
        ckpt_io.save_weights(full, tmp / ckpt_io.MODEL_FILE, step)
    del full
    dist.barrier(info)  # every shard and the metadata are written
    names = dist.from_rank0(
        sorted(p.relative_to(tmp).as_posix() for p in (tmp / ckpt_io.SHARDED_DIR).rglob("*") if p.is_file()), info
    )
    hashes, problem = {}, None
    for name in names[info.rank :: info.world_size]:
        if not (tmp / name).is_file():
            problem = (
                f"{tmp / name}: written by the processes but not visible from rank {info.rank}; the run folder "
                "must be on a filesystem every process shares"
            )
            break
        hashes[name] = ckpt_io.file_sha256(tmp / name)
    problem = dist.first_problem(problem, info)
    if problem is not None:
        raise CheckpointError(problem)
    hashes = dist.gather_dicts(hashes, info)
    path = ckpt_io.finish_checkpoint(tmp, step, state, config, keep_last, hashes) if info.is_main else None
    dist.barrier(info)
    return path


def damage(ckpt: Path, info: dist.DistInfo) -> str | None:
    """`checkpoint.damage` of a sharded checkpoint with the sha256 of every shard, each process hashing its share;
    the same answer on every process."""
    problem = ckpt_io.damage(ckpt, content=(ckpt_io.SHARDED_DIR,), part=(info.rank, info.world_size))
    return dist.first_problem(problem, info)


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: dist.DistInfo) -> None:
    """Restore model and optimizer state from sharded checkpoint `ckpt` into this run's sharding (any world size;
    every process must call this). Call `damage` first: this assumes the files are the ones written."""
    folder = Path(ckpt) / ckpt_io.SHARDED_DIR
    state = _training_state(model, optimizer)
    try:
        with _one_process_quietly():
            dcp.load(state, storage_reader=_Reader(folder), planner=_Planner(), no_dist=not info.distributed)
    except CheckpointException as e:
        raise CheckpointError(f"{folder}: cannot be loaded into this run ({_first_failure(e)})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    problem = None
    for name, tensor in state["model"].items():
        local = local_tensor(tensor)
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            problem = f"{folder}: tensor {name} holds non-finite values (NaN or inf)"
            break
    problem = dist.first_problem(problem, info)
    if problem is not None:
        raise CheckpointError(problem)


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """DCP warns that it assumes one process whenever no process group exists, even when told so (no_dist)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _first_failure(error: CheckpointException) -> str:
    """One line from DCP's per-rank report: the first rank's exception, without its traceback."""
    failures = getattr(error, "failures", None) or {}
    for failure in failures.values():
        cause = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(cause, CheckpointError):
            return str(cause)
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    return str(error).strip().splitlines()[0]


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's metadata: its own dataclasses, torch sizes, dtypes and layouts, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) in _METADATA_CLASSES or dtype:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint's metadata")


class _Reader(FileSystemReader):
    """DCP's file reader with the metadata read by `_MetadataUnpickler` and every shard inside the folder."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self.path) / _METADATA_FILE
        try:
            with open(path, "rb") as fh:
                metadata = _MetadataUnpickler(fh).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: not readable as checkpoint metadata ({e})") from None
        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{path}: not checkpoint metadata (a {type(metadata).__name__})")
        for item in (metadata.storage_data or {}).values():
            name = str(getattr(item, "relative_path", ""))
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise CheckpointError(f"{path}: names a data file outside its folder ({name!r})")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _Planner(DefaultLoadPlanner):
    """DCP's load planner; a non-tensor item (a number, a tuple of betas, ...) must load with weights_only=True before
    DCP's own loader reads it."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        try:
            torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(f"item {read_item.dest_index.fqn}: not plain data ({e})") from None
        value.seek(0)
        super().load_bytes(read_item, value)
