"""Training and validation windows: both perspectives of every conversation, with turn labels and masks.

A sample is (conversation, self speaker s, start frame). The model speaks as s: it gets s's text and audio codes,
the interlocutor's audio codes and the *interlocutor's* face (never its own), and the turn labels as seen from s.
Labels are computed once per conversation on its whole length (so a window's targets may look past its end, as the
label definition does) and then cut.

Why the sampler is a pure function: epoch e's plan (which windows, in which order, where they start, which lose
their face) is drawn from a generator seeded by (seed, e) alone. Sample i of the infinite stream is therefore fixed
by (seed, i), the loader's whole state is the index of the next global batch, a resumed run sees exactly the batches
it would have seen, and DDP ranks need no communication: rank r takes its slice of every global batch.

Global batch layout: a step consumes G = batch_size × world_size × grad_accum samples; micro-step a of rank r gets
samples [(a·world_size + r)·batch_size, +batch_size) of the step. One process with grad_accum × world_size
micro-steps therefore sees the same micro-batches, in the same order, as the DDP run.

Reading: every conversation of a split is read once before training (`WindowDataset.validate`: structure, content
checksum, value ranges, so a damaged file fails before any work) and its labels computed; nothing else is kept. A
window is then cut from the memory-mapped file (at most 512 stay mapped, fewer under a low file-descriptor limit),
so a corpus of thousands of hours is never held in memory: only its labels, 4 bytes a frame. With `data.workers` >
0, background processes cut the next steps' batches into shared buffers while the current step runs (`_Workers`;
`benchmarks/loader_throughput.py` measures how fast).

"Face zeroed" (face dropout here, the face-zeroed condition at evaluation) means the model gets no face at all:
values 0 *and* face_present = 0, so it sees its learned "missing face" input. Raw zeros with face_present = 1 would
not be neutral: the standardize encoder maps them to -mean/std, a face nobody ever showed it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import mmap
import multiprocessing
import queue
import resource
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceturn.errors import CheckpointError, ConfigError, CorpusError, FaceturnError
from faceturn.labels import EventConfig, turn_labels
from faceturn.schema import N_CODEBOOKS, N_FACE
from faceturn.store import Conversation, Corpus
from faceturn.timebase import duration_to_frames


@dataclass(frozen=True)
class DataConfig:
    """How training windows are drawn (saved with every run and checkpoint)."""

    window_s: float = 20.0  # window length; converted to frames with the one timebase rule (ceil)
    batch_size: int = 8  # windows per micro-batch per process
    face_dropout: float = 0.0  # probability that a training window gets no face at all (see module docstring)
    seed: int = 0  # the whole sample stream is a function of this seed
    train_split: str = "train"
    val_split: str = "val"
    val_max_windows: int = field(default=256, metadata={"resumable": True})  # validation uses at most this many
    #                                                 fixed windows (evenly spaced over the tiling)
    # background processes cutting the next steps' batches (0 = in the training process; 2 keep a GPU fed)
    workers: int = field(default=0, metadata={"resumable": True})

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ConfigError(f"data.window_s must be > 0 seconds, got {self.window_s}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.face_dropout <= 1.0:
            raise ConfigError(f"data.face_dropout must be a probability in [0, 1], got {self.face_dropout}")
        if self.val_max_windows < 1:
            raise ConfigError(f"data.val_max_windows must be >= 1, got {self.val_max_windows}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.workers}")

    @property
    def window_frames(self) -> int:
        return duration_to_frames(self.window_s)


def zero_face(face: torch.Tensor, face_present: torch.Tensor, rows: torch.Tensor | None = None):
    """The "face zeroed" input: values 0 and face_present 0, for all samples or only the boolean `rows` [B]."""
    if rows is None:
        return torch.zeros_like(face), torch.zeros_like(face_present)
    keep = ~rows.to(torch.bool)
    return face * keep[:, None, None].to(face.dtype), face_present & keep[:, None]


@dataclass
class Batch:
    """One micro-batch of windows, each from one perspective. T = window frames; padding past a conversation's end."""

    text: torch.Tensor  # [B, T] long, self's text tokens, -1 absent or padding
    self_codes: torch.Tensor  # [B, 8, T] long, self's audio codes, -1 padding
    other_codes: torch.Tensor  # [B, 8, T] long, interlocutor's audio codes, -1 padding
    face: torch.Tensor  # [B, T, 61] float32, interlocutor's A61 face
    face_present: torch.Tensor  # [B, T] bool
    y: torch.Tensor  # [B, T] float32, 1 = a floor hand-over within the horizon
    m: torch.Tensor  # [B, T] bool, frame is scored (label defined and not padding)
    holder: torch.Tensor  # [B, T] int8, 1 self holds the floor, 0 interlocutor holds, -1 nobody
    valid: torch.Tensor  # [B, T] bool, False on padding
    self_speaker: torch.Tensor  # [B] long, which participant is self
    start_frame: torch.Tensor  # [B] long, window start in the conversation
    conversation: list[str]  # [B] conversation ids

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def model_inputs(self) -> tuple[torch.Tensor, ...]:
        """The five tensors `Model.forward` takes, in its order: `model(*batch.model_inputs(), audio=...)` works the
        same on a plain, DDP-wrapped or compiled model, and no caller spells the order out."""
        return self.text, self.self_codes, self.other_codes, self.face, self.face_present

    def without_face(self) -> Batch:
        """The same windows with the face zeroed (see module docstring)."""
        face, present = zero_face(self.face, self.face_present)
        return dataclasses.replace(self, face=face, face_present=present)

    @property
    def n_valid_frames(self) -> int:
        return int(self.valid.sum())


@dataclass(frozen=True)
class _Mapped:
    """Where a validated conversation's tensors lie in its file, and the file as validated (size, mtime)."""

    path: Path
    size: int
    mtime_ns: int
    tensors: dict[str, tuple[np.dtype, tuple[int, ...], int]]  # name → (dtype, shape, byte offset)


@dataclass(frozen=True)
class _Labels:
    y: np.ndarray  # [T] uint8
    m: np.ndarray  # [T] bool
    holder: np.ndarray  # [2, T] int8, holder relative to self speaker 0 and 1


def _descriptor_budget() -> int:
    """How many files one process may keep mapped: each map holds a file descriptor, and a process (the trainer and
    each loader worker) should leave most of its descriptor limit to everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(1, soft // 8)


def _layout(conv: Conversation) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
    """The dtype, shape and byte offset in the file of every tensor of a conversation faceturn.store memory-mapped
    (its arrays are views of one map of the whole file)."""
    arrays = conv.arrays()
    base = conv.codes.base
    if not isinstance(base, np.memmap) or any(a.base is not base for a in arrays.values()):
        raise TypeError("expected the arrays of one memory-mapped conversation file")
    origin = base.__array_interface__["data"][0]
    return {name: (a.dtype, a.shape, a.__array_interface__["data"][0] - origin) for name, a in arrays.items()}


class WindowDataset:
    """Windows of one split of a corpus, cut from memory-mapped files; labels are computed once and kept."""

    def __init__(
        self,
        corpus_root: str | Path,
        split: str,
        window_frames: int,
        event_config: EventConfig | None = None,
        max_mapped_conversations: int = 512,
    ) -> None:
        self.corpus = Corpus(corpus_root)
        self.split = split
        self.window_frames = int(window_frames)
        if self.window_frames < 1:
            raise ConfigError(f"window_frames must be >= 1, got {window_frames}")
        self.event_config = EventConfig() if event_config is None else event_config
        self.ids: list[str] = list(self.corpus.ids(split))
        if not self.ids:
            raise CorpusError(f"{self.corpus.root}: no conversations in split {split!r}")
        by_id = {e.id: e for e in self.corpus.entries}
        self.n_frames = np.array([int(by_id[i].n_frames) for i in self.ids], dtype=np.int64)
        self._layouts: dict[int, _Mapped] = {}  # validated conversations
        self._labels: dict[int, _Labels] = {}
        self._maps: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()  # open maps (each holds a descriptor)
        self._max_mapped = max(1, min(int(max_mapped_conversations), _descriptor_budget()))

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self) -> None:
        """Read and check every conversation of the split now (structure, content checksum, value ranges) and compute
        its labels, so a damaged file is found before any work rather than at the first window that touches it.
        Nothing but the labels is kept: windows are cut from the files, memory-mapped."""
        for index in range(len(self.ids)):
            self._validated(index)

    def fingerprint(self) -> str:
        """Identifies the split's content layout (ids and lengths): a resumed run must see the same corpus."""
        blob = json.dumps([self.split, self.ids, self.n_frames.tolist(), self.window_frames]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def conversation(self, index: int) -> Conversation:
        """Conversation `index`, validated (fully, the first time) and memory-mapped."""
        conv = self.corpus.load(self.ids[index], validate=index not in self._layouts)
        t = conv.n_frames
        if t != self.n_frames[index]:
            raise CorpusError(
                f"{self.corpus.root}: conversation {self.ids[index]!r} has {t} frames but the manifest says "
                f"{self.n_frames[index]}"
            )
        if index not in self._layouts:
            path = self.corpus.root / self.corpus.entry(self.ids[index]).file
            st = path.stat()
            self._layouts[index] = _Mapped(path, st.st_size, st.st_mtime_ns, _layout(conv))
            self._labels[index] = self._compute_labels(conv.va)
        return conv

    def _validated(self, index: int) -> _Mapped:
        if index not in self._layouts:
            self.conversation(index)
        return self._layouts[index]

    def _tensors(self, index: int) -> dict[str, Any]:
        """Conversation `index`'s tensors as views of its memory-mapped file (a structure check the first time; then
        only a check that the file is the one validated)."""
        tensors = self._maps.get(index)
        if tensors is not None:
            self._maps.move_to_end(index)
            return tensors
        mapped = self._validated(index)
        try:
            st = mapped.path.stat()
            if (st.st_size, st.st_mtime_ns) != (mapped.size, mapped.mtime_ns):
                raise CorpusError(f"{mapped.path}: changed since it was validated (size or modification time)")
            with open(mapped.path, "rb") as fh:  # private and copy-on-write: nothing ever reaches the file
                buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        except OSError as e:
            raise CorpusError(f"{mapped.path}: cannot be read ({e.strerror or e})") from None
        tensors: dict[str, Any] = {
            name: np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset)
            for name, (dtype, shape, offset) in mapped.tensors.items()
            if name != "va"  # labels are computed
        }
        tensors["face"] = torch.from_numpy(tensors["face"])  # torch widens float16 with SIMD, numpy 12× slower
        self._maps[index] = tensors
        while len(self._maps) > self._max_mapped:
            self._maps.popitem(last=False)
        return tensors

    def _compute_labels(self, va: np.ndarray) -> _Labels:
        lab = turn_labels(np.asarray(va), self.event_config)
        holder = np.stack([np.asarray(lab.floor_relative(s), dtype=np.int8) for s in (0, 1)])
        return _Labels(y=np.asarray(lab.y, dtype=np.uint8), m=np.asarray(lab.m, dtype=bool), holder=holder)

    def max_start(self, index: int) -> int:
        """Last start frame of a full window (0 when the conversation is shorter than a window)."""
        return max(0, int(self.n_frames[index]) - self.window_frames)

    def windows_per_epoch(self) -> np.ndarray:
        """Windows per perspective and epoch, so that an epoch covers each conversation about once."""
        return np.maximum(1, np.rint(self.n_frames / self.window_frames)).astype(np.int64)

    def batch(self, samples: Sequence[tuple[int, int, int, bool]], out: torch.Tensor | None = None) -> Batch:
        """Cut windows (conversation index, self speaker, start frame, face dropped) and stack them. Every tensor
        of the batch is a view of one byte buffer: a new one, or `out` (batch_nbytes long; loader workers cut into
        shared memory)."""
        b, w = len(samples), self.window_frames
        t = _batch_tensors(b, w, out)
        a = {name: v.numpy() for name, v in t.items()}  # the same memory, filled with numpy
        for j, (ci, s, start, drop) in enumerate(samples):
            conv = self._tensors(ci)
            lab = self._labels[ci]
            stop = min(start + w, int(self.n_frames[ci]))
            n = stop - start
            if n <= 0 or start < 0:
                raise ValueError(f"window start {start} outside conversation {self.ids[ci]!r}")
            o = 1 - s
            a["text"][j, :n] = conv["text"][s, start:stop]  # the stored dtypes widen on assignment
            a["self_codes"][j, :, :n] = conv["codes"][s, :, start:stop]
            a["other_codes"][j, :, :n] = conv["codes"][o, :, start:stop]
            if not drop:  # a dropped face stays zero and absent (zero_face)
                t["face"][j, :n] = conv["face"][o, start:stop]
                a["face_present"][j, :n] = conv["face_present"][o, start:stop]
            a["y"][j, :n] = lab.y[start:stop]
            a["m"][j, :n] = lab.m[start:stop]
            a["holder"][j, :n] = lab.holder[s, start:stop]
            a["valid"][j, :n] = True
            a["self_speaker"][j], a["start_frame"][j] = s, start
        return Batch(**t, conversation=[self.ids[ci] for ci, _, _, _ in samples])


_PADDING = {"text": -1, "self_codes": -1, "other_codes": -1, "holder": -1}  # the rest pads with 0 / False


def _batch_layout(b: int, w: int) -> tuple[dict[str, tuple[torch.dtype, tuple[int, ...], int]], int]:
    """Where each tensor of a batch of b windows of w frames lies in its buffer: name → (dtype, shape, byte offset),
    and the buffer's length. Every tensor starts 8-byte aligned."""
    shapes = {
        "text": (torch.int64, (b, w)), "self_codes": (torch.int64, (b, N_CODEBOOKS, w)),
        "other_codes": (torch.int64, (b, N_CODEBOOKS, w)), "face": (torch.float32, (b, w, N_FACE)),
        "face_present": (torch.bool, (b, w)), "y": (torch.float32, (b, w)), "m": (torch.bool, (b, w)),
        "holder": (torch.int8, (b, w)), "valid": (torch.bool, (b, w)), "self_speaker": (torch.int64, (b,)),
        "start_frame": (torch.int64, (b,)),
    }  # fmt: skip
    layout, end = {}, 0
    for name, (dtype, shape) in shapes.items():
        layout[name] = (dtype, shape, end)
        end += -(-math.prod(shape) * dtype.itemsize // 8) * 8
    return layout, end


def batch_nbytes(b: int, w: int) -> int:
    """Bytes of the buffer that holds a batch of b windows of w frames."""
    return _batch_layout(b, w)[1]


def _batch_tensors(b: int, w: int, buffer: torch.Tensor | None = None, fill: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a batch of b windows of w frames as views of one byte buffer (a new one, or `buffer`), filled
    with their padding (unless not `fill`: views of a batch already cut into `buffer`)."""
    layout, end = _batch_layout(b, w)
    if buffer is None:
        buffer = torch.zeros(end, dtype=torch.uint8)
    elif fill:
        buffer.zero_()
    out = {}
    for name, (dtype, shape, offset) in layout.items():
        out[name] = buffer[offset : offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
        if fill and name in _PADDING:
            out[name].fill_(_PADDING[name])
    return out


class WindowLoader:
    """The infinite, seeded stream of training micro-batches for one process (see module docstring).

    State: the index of the next global step. `state_dict()` also records what the stream depends on (seed, global
    and per-process batch, corpus fingerprint), and `load_state_dict` refuses a state from a different stream.
    """

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        seed: int,
        face_dropout: float = 0.0,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        workers: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        if batch_size < 1 or grad_accum < 1:
            raise ValueError(f"batch_size and grad_accum must be >= 1, got {batch_size} and {grad_accum}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = int(seed)
        self.face_dropout = float(face_dropout)
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.next_step = 0
        self.workers = int(workers)
        self._ahead: _Workers | None = None  # the workers cutting from next_step on
        reps = dataset.windows_per_epoch()
        # One epoch = every (conversation, perspective) pair, repeated so the epoch covers each conversation once.
        conv = np.repeat(np.arange(len(dataset)), reps)
        self._items_conv = np.concatenate([conv, conv])
        self._items_self = np.concatenate([np.zeros(len(conv), np.int64), np.ones(len(conv), np.int64)])
        self._n_starts = np.array([dataset.max_start(c) + 1 for c in range(len(dataset))], dtype=np.int64)
        self._plans: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def samples_per_epoch(self) -> int:
        return len(self._items_conv)

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Epoch plan (conversation, self, start, face dropped) in stream order; a function of (seed, epoch) only."""
        plan = self._plans.get(epoch)
        if plan is None:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.samples_per_epoch)
            conv = self._items_conv[order]
            n_starts = self._n_starts[conv]
            starts = np.minimum((rng.random(len(order)) * n_starts).astype(np.int64), n_starts - 1)
            dropped = rng.random(len(order)) < self.face_dropout
            plan = (conv, self._items_self[order], starts, dropped)
            self._plans[epoch] = plan
            while len(self._plans) > 2:
                self._plans.popitem(last=False)
        return plan

    def sample(self, index: int) -> tuple[int, int, int, bool]:
        """Sample `index` of the infinite stream: (conversation index, self speaker, start frame, face dropped)."""
        epoch, pos = divmod(index, self.samples_per_epoch)
        conv, self_, starts, dropped = self._plan(epoch)
        return int(conv[pos]), int(self_[pos]), int(starts[pos]), bool(dropped[pos])

    def step_samples(self, step: int) -> list[list[tuple[int, int, int, bool]]]:
        """This process's micro-batches of global step `step` (grad_accum lists of batch_size samples)."""
        base = step * self.global_batch_size
        out = []
        for a in range(self.grad_accum):
            first = base + (a * self.world_size + self.rank) * self.batch_size
            out.append([self.sample(first + j) for j in range(self.batch_size)])
        return out

    def step_batches(self, step: int, out: torch.Tensor | None = None) -> list[Batch]:
        """This process's micro-batches of global step `step`, cut now (into `out`, step_nbytes long, if given)."""
        size = batch_nbytes(self.batch_size, self.dataset.window_frames)
        return [
            self.dataset.batch(samples, None if out is None else out[i * size : (i + 1) * size])
            for i, samples in enumerate(self.step_samples(step))
        ]

    @property
    def step_nbytes(self) -> int:
        """Bytes of the buffer that holds one step's micro-batches."""
        return self.grad_accum * batch_nbytes(self.batch_size, self.dataset.window_frames)

    def step_views(self, buffer: torch.Tensor, conversations: list[list[str]]) -> list[Batch]:
        """The micro-batches of a step already cut into `buffer` (step_batches' `out`), as views of it."""
        size = batch_nbytes(self.batch_size, self.dataset.window_frames)
        return [
            Batch(**_batch_tensors(self.batch_size, self.dataset.window_frames, buffer[i * size : (i + 1) * size],
                                   fill=False), conversation=ids)
            for i, ids in enumerate(conversations)
        ]  # fmt: skip

    def next_batches(self) -> list[Batch]:
        """The micro-batches of the next global step for this process; advances the state. With workers, they were
        cut ahead by background processes (the same batches: each is a function of its step)."""
        if self.workers == 0:
            batches = self.step_batches(self.next_step)
        else:
            if self._ahead is None:
                self._ahead = _Workers(self, self.next_step, self.workers)
            batches = self._ahead.next()
        self.next_step += 1
        return batches

    def __iter__(self) -> Iterator[list[Batch]]:
        while True:
            yield self.next_batches()

    def close(self) -> None:
        """Stop the workers now. Left to the garbage collector, forked workers outlive the run holding copies of every
        file and pipe the process had open (a browser's, a server's), and whoever waits for those to close hangs."""
        if self._ahead is not None:
            self._ahead.close()
        self._ahead = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "next_step": self.next_step,
            "seed": self.seed,
            "face_dropout": self.face_dropout,
            "global_batch_size": self.global_batch_size,
            "batch_size": self.batch_size,
            "corpus_fingerprint": self.dataset.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "face_dropout", "global_batch_size", "batch_size", "corpus_fingerprint"):
            if state.get(key) != mine[key]:
                raise CheckpointError(
                    f"data loader state does not fit this run: {key} is {state.get(key)!r} in the checkpoint but "
                    f"{mine[key]!r} now"
                )
        step = state.get("next_step")
        if not isinstance(step, int) or step < 0:
            raise CheckpointError(f"data loader state: next_step must be an integer >= 0, got {step!r}")
        self.next_step = step
        self.close()  # workers restart from the new step


class _Workers:
    """Background processes cutting a loader's next steps. Worker i of n cuts steps first + i, first + i + n, ...
    each into one of its `depth` buffers of shared memory, allocated once (no memory is mapped or faulted per step);
    the training process copies a step out of its buffer (the batches it returns are its own) and hands the buffer
    back. A worker's error is raised in the training process."""

    def __init__(self, loader: WindowLoader, first: int, n: int, depth: int = 2) -> None:
        ctx = multiprocessing.get_context("fork")  # the workers inherit the dataset, its labels and the buffers
        self.loader, self.first, self.next_step, self.n = loader, first, first, n
        self.buffers = [torch.empty(loader.step_nbytes, dtype=torch.uint8).share_memory_() for _ in range(n * depth)]
        self.free = [ctx.SimpleQueue() for _ in range(n)]
        self.done = [ctx.Queue() for _ in range(n)]
        for i in range(n):
            for slot in range(i * depth, (i + 1) * depth):
                self.free[i].put(slot)
        self.processes = [
            ctx.Process(target=_cut_ahead, args=(loader, first + i, n, self.buffers, self.free[i], self.done[i]),
                        daemon=True, name=f"faceturn-loader-{i}")
            for i in range(n)
        ]  # fmt: skip
        for process in self.processes:
            process.start()
        self._stop = weakref.finalize(self, _stop_workers, self.processes)

    def next(self) -> list[Batch]:
        i = (self.next_step - self.first) % self.n
        while True:
            try:
                step, slot, payload = self.done[i].get(timeout=1.0)
                break
            except queue.Empty:
                if not self.processes[i].is_alive():
                    raise RuntimeError(
                        f"data loader worker {i} exited (code {self.processes[i].exitcode}) before step "
                        f"{self.next_step}"
                    ) from None
        if slot is None:
            raise payload
        if step != self.next_step:
            raise RuntimeError(f"data loader worker {i} sent step {step}, expected {self.next_step}")
        own = self.buffers[slot].clone()
        self.free[i].put(slot)
        self.next_step += 1
        return self.loader.step_views(own, payload)

    def close(self) -> None:
        self._stop()


def _cut_ahead(loader: WindowLoader, step: int, stride: int, buffers, free, done) -> None:
    """A worker: cut steps step, step + stride, ... into the free buffers, announcing each (step, buffer, ids)."""
    torch.set_num_threads(1)  # a forked process must not use the parent's intra-op thread pool (it would hang)
    try:
        while True:
            slot = free.get()
            batches = loader.step_batches(step, out=buffers[slot])
            done.put((step, slot, [b.conversation for b in batches]))
            step += stride
    except Exception as e:
        error = e if isinstance(e, FaceturnError) else RuntimeError(f"data loader worker: {type(e).__name__}: {e}")
        done.put((step, None, error))


def _stop_workers(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)


def validation_windows(dataset: WindowDataset, max_windows: int) -> list[tuple[int, int, int, bool]]:
    """Fixed windows tiling every conversation from both perspectives; evenly thinned to at most `max_windows`."""
    all_windows = [
        (ci, s, start, False)
        for ci in range(len(dataset))
        for s in (0, 1)
        for start in range(0, int(dataset.n_frames[ci]), dataset.window_frames)
    ]
    if len(all_windows) <= max_windows:
        return all_windows
    keep = np.unique(np.linspace(0, len(all_windows) - 1, max_windows).round().astype(np.int64))
    return [all_windows[i] for i in keep]


def validation_batches(dataset: WindowDataset, windows: Sequence[tuple[int, int, int, bool]], batch_size: int):
    """Deterministic validation micro-batches over fixed windows."""
    for i in range(0, len(windows), batch_size):
        yield dataset.batch(windows[i : i + batch_size])


def face_statistics(dataset: WindowDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the face over face-present frames of a split (both participants).

    For the `standardize` encoder: fixed corpus statistics, so a channel's meaning never depends on the others.
    The std is returned as measured; `Model.set_face_statistics` replaces a near-zero one (a constant channel) by 1.
    """
    total = np.zeros(N_FACE, np.float64)
    total_sq = np.zeros(N_FACE, np.float64)
    count = 0
    for index in range(len(dataset)):
        conv = dataset.conversation(index)
        present = np.asarray(conv.face_present).astype(bool)
        x = np.asarray(conv.face, dtype=np.float64)[present]  # [n, 61]
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += x.shape[0]
    if count == 0:
        raise CorpusError(f"{dataset.corpus.root}: split {dataset.split!r} has no face-present frames")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)
