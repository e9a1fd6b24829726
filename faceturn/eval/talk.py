"""Step 4, the talking half: the model talks as self against every conversation of a split while the interlocutor's
recorded audio codes and face are replayed (open loop, as Full-Duplex-Bench replays its user), with the face as
given and with it zeroed, greedy and with Moshi's default sampling under several seeds, optionally with floor
control from its yield head (`gate`). The talk file holds what a turn-timing evaluation needs, so `faceturn timing`
is a pure function of it (docs/design.md, "Step 4: turn timing").

**Pairing.** Every (run, conversation, perspective) is talked with the face and with it zeroed in the same batch,
and the two rows draw their tokens with the same random numbers (`faceturn.stream.generate`'s `uniforms`): they
differ only where the model's distributions differ, so a face that changes nothing gives identical talk. The gated
rows of an aux model share those numbers too. The numbers of a (seed, conversation, perspective) come from their own
generator, so a seed's talk does not depend on batching or on which other runs the file holds.

**Floor control** (`gate`): the model may start talking while the interlocutor holds the floor only when its
P(yield) reached θ (`faceturn.stream.FloorGate`). θ is chosen on the validation split, per condition, by Youden's J of
the listening P(yield) (as `faceturn predict` computes it) on scored frames where the interlocutor holds the floor:
the threshold that best separates "the floor is about to come to me" from "it is not".

**The file** (`.npz` of plain arrays, format `faceturn-talk/1`, read with `allow_pickle=False`; a JSON header
`meta` with the corpus fingerprint, split, checkpoint, configs, runs, gate thresholds and the voice reader's scores,
and a checksum of everything). Rows are (run, condition, gated, conversation, perspective), padded to the longest
conversation: `codes` [R, 8, T] int16 (−1 past a row's end), `text` [R, T] int32 (−1 without text), `voice` [R, T]
float32 (the reader's P(self active)), `p_yield` [R, T] float32, `held` [R, T] bool (frames the gate held silent),
`row_*` [R] (conversation index, self, face, gated, run, frames). Per conversation, the recorded voice activity of
both participants `corpus_active` [C, 2, T] bool and the floor holder `corpus_floor` [C, T] int8 (−1 nobody);
per (conversation, perspective) the interlocutor's floor events `event_*` [E]: holds (its within-turn pauses),
shifts (its turn ends, answered by self in the recording), both as VAP silences [start, stop), and onsets (it
starts a turn: [first, last + 1) frames of its floor-taking IPU).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceturn.checkpoint import CONFIG_FILE, load_model, read_json, resolve_checkpoint
from faceturn.config import to_dict
from faceturn.errors import ConfigError, CorpusError, FaceturnError
from faceturn.eval.predict import CHECKSUM_KEY, array_checksum, made_from_corpus, peek_npz_meta, predict, read_npz
from faceturn.eval.voice import VoiceConfig, fit_reader, score_reader
from faceturn.io import TALK_FILE, atomic_write_bytes
from faceturn.labels import TurnLabels, turn_labels
from faceturn.schema import N_CODEBOOKS, N_FACE
from faceturn.stats import best_threshold
from faceturn.store import Corpus, fingerprint
from faceturn.stream import GREEDY, MOSHI_SAMPLING, FloorGate, generate
from faceturn.timebase import duration_to_frames

FORMAT = "faceturn-talk/1"
EVENT_KINDS = ("hold", "shift", "onset")  # event_kind 0, 1, 2
HOLD, SHIFT, ONSET = range(3)


@dataclass(frozen=True)
class TalkConfig:
    """What `faceturn talk` generates; saved in the talk file."""

    seeds: tuple[int, ...] = (0, 1, 2)  # Moshi-sampling runs, one per seed (each paired face vs zeroed)
    greedy: bool = True  # also one greedy run
    max_seconds: float = 0.0  # talk over only the first max_seconds of each conversation (0 = all of it)
    gate_split: str = "val"  # where --gate chooses θ
    batch_size: int = 32  # (conversation, perspective) pairs per generation batch (× conditions rows)
    resamples: int = 2000  # bootstrap resamples of the voice reader's CIs
    seed: int = 0  # their seed
    voice: VoiceConfig = field(default_factory=VoiceConfig)

    def __post_init__(self) -> None:
        if not self.seeds and not self.greedy:
            raise ConfigError("talk: no run to make (seeds is empty and greedy is false)")
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ConfigError(f"talk.seeds must be distinct integers >= 0, got {list(self.seeds)}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds >= 0):
            raise ConfigError(f"talk.max_seconds must be >= 0 (0 = whole conversations), got {self.max_seconds}")
        if self.batch_size < 1:
            raise ConfigError(f"talk.batch_size must be >= 1, got {self.batch_size}")


# ------------------------------------------------------------------------------------------------------- the file
_ARRAYS: dict[str, tuple[str, int]] = {
    "codes": ("i", 3), "text": ("i", 2), "voice": ("f", 2), "p_yield": ("f", 2), "held": ("b", 2),
    "row_conversation": ("i", 1), "row_self": ("i", 1), "row_face": ("b", 1), "row_gated": ("b", 1),
    "row_run": ("i", 1), "row_frames": ("i", 1), "corpus_active": ("b", 3), "corpus_floor": ("i", 2),
    "conversation_frames": ("i", 1), "event_conversation": ("i", 1), "event_self": ("i", 1), "event_kind": ("i", 1),
    "event_start": ("i", 1), "event_stop": ("i", 1),
}  # fmt: skip


@dataclass
class Talk:
    """A talk file's arrays (see the module docstring) and header."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    source: str | None = None  # the file these were loaded from (for messages)

    @property
    def label(self) -> str:
        return self.source or f"talk of {self.meta.get('checkpoint')}"

    def save(self, path: str | Path) -> None:
        """Write the file atomically with its checksum."""
        meta = json.loads(json.dumps({k: v for k, v in self.meta.items() if k != CHECKSUM_KEY}))
        meta[CHECKSUM_KEY] = array_checksum(meta, self.arrays)
        buf = _npz({**self.arrays, "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)})
        atomic_write_bytes(Path(path), buf)

    @classmethod
    def load(cls, path: str | Path) -> Talk:
        """Read a talk file; anything but an intact file of this format is a FaceturnError naming the file."""
        path = Path(path)
        data = read_npz(path, TALK_FILE, "faceturn talk")
        if "meta" not in data:
            raise FaceturnError(f"{path}: not a faceturn talk file (an .npz without its header, `meta`)")
        try:
            meta = json.loads(data.pop("meta").tobytes().decode())
        except (ValueError, RecursionError):
            raise FaceturnError(f"{path}: damaged talk file: its header is not JSON") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise FaceturnError(f"{path}: format {found!r}, expected {FORMAT!r}")
        _check(path, data, meta)
        if array_checksum(meta, data) != meta.get(CHECKSUM_KEY):
            raise FaceturnError(
                f"{path}: damaged talk file: its checksum does not match the header and arrays (changed or corrupted "
                "since `faceturn talk` wrote it); re-run `faceturn talk`"
            )
        return cls(arrays=data, meta=meta, source=str(path))

    @staticmethod
    def peek_meta(path: str | Path) -> dict[str, Any] | None:
        """The header of a talk file without checking its arrays, or None when it has none."""
        return peek_npz_meta(path)

    def check_source(self, corpus: str | Path | None = None, split: str | None = None) -> None:
        """Refuse a talk file made from another corpus than `corpus` (by content: the same corpus moved is fine) or
        for another split than `split`."""
        if corpus is not None:
            made_from_corpus(self.meta, self.label, corpus, "faceturn talk", "talk")
        if split is not None and self.meta["split"] != split:
            raise FaceturnError(f"{self.label}: made for split {self.meta['split']!r}, not {split!r}")


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _check(path: Path, data: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Names, dtypes, shapes and index ranges: what `timing` relies on."""
    missing, unknown = sorted(set(_ARRAYS) - set(data)), sorted(set(data) - set(_ARRAYS))
    if missing or unknown:
        raise FaceturnError(f"{path}: not a faceturn talk file (missing {missing}, unknown {unknown})")
    for k, (kinds, ndim) in _ARRAYS.items():
        if data[k].dtype.kind not in kinds or data[k].ndim != ndim:
            raise FaceturnError(f"{path}: array {k} is {data[k].dtype} with {data[k].ndim} dimensions")
    r, t = data["voice"].shape
    c = data["conversation_frames"].shape[0]
    shapes = {"codes": (r, N_CODEBOOKS, t), "text": (r, t), "p_yield": (r, t), "held": (r, t),
              "corpus_active": (c, 2, t), "corpus_floor": (c, t)}  # fmt: skip
    shapes.update({k: (r,) for k in _ARRAYS if k.startswith("row_")})
    e = data["event_kind"].shape[0]
    shapes.update({k: (e,) for k in _ARRAYS if k.startswith("event_")})
    for k, shape in shapes.items():
        if data[k].shape != shape:
            raise FaceturnError(f"{path}: array {k} has shape {data[k].shape}, expected {shape}")
    for key, kind in (("corpus", str), ("corpus_fingerprint", str), ("split", str), ("labels", dict),
                      ("reader", dict), (CHECKSUM_KEY, str)):  # fmt: skip
        if not isinstance(meta.get(key), kind):
            raise FaceturnError(f"{path}: damaged talk file: header {key} must be a {kind.__name__}")
    runs, ids = meta.get("runs"), meta.get("conversations")
    if not (isinstance(runs, list) and runs and isinstance(ids, list) and len(ids) == c):
        raise FaceturnError(f"{path}: damaged talk file: header runs or conversations do not match the arrays")
    ranges = {"row_conversation": c - 1, "row_self": 1, "row_run": len(runs) - 1, "row_frames": t,
              "conversation_frames": t, "event_conversation": c - 1, "event_self": 1, "event_kind": 2,
              "event_start": t, "event_stop": t}  # fmt: skip
    for k, hi in ranges.items():
        if data[k].size and not (int(data[k].min()) >= 0 and int(data[k].max()) <= hi):
            raise FaceturnError(f"{path}: array {k} holds values outside [0, {hi}]")
    for k in ("voice", "p_yield"):
        if not (np.isfinite(data[k]).all() and data[k].min(initial=0) >= 0 and data[k].max(initial=0) <= 1):
            raise FaceturnError(f"{path}: {k} holds values outside [0, 1] or non-finite values")
    if (data["event_stop"] < data["event_start"]).any():
        raise FaceturnError(f"{path}: an event ends before it starts")


# ------------------------------------------------------------------------------------------------------ the events
def interlocutor_events(labels: TurnLabels, self_speaker: int) -> list[tuple[int, int, int]]:
    """The interlocutor's floor events seen from `self_speaker`, as (kind, start, stop) frames: its within-turn pauses
    (VAP holds it resumes) and turn ends (VAP shifts to self) as [silence start, next onset), and the turns it takes
    (every hand-over to it) as [first, stop) of its floor-taking IPU."""
    other = 1 - self_speaker
    ev = labels.events
    out = [
        (SHIFT if bool(ev.is_shift[j]) else HOLD, int(ev.silence_start[j]), int(ev.silence_stop[j]))
        for j in range(ev.is_shift.size)
        if int(ev.prev_speaker[j]) == other
    ]
    for frame, to in zip(labels.shift_frames.tolist(), labels.shift_to.tolist(), strict=True):
        if to == other:
            ipu = next(((a, b) for a, b in labels.ipus[other] if a <= frame < b), None)
            if ipu is not None:
                out.append((ONSET, ipu[0], ipu[1]))
    return out


# ------------------------------------------------------------------------------------------------------ talking
def gate_thresholds(
    run: str | Path, corpus: str | Path, split: str, *, device: str = "cpu", progress: bool = False
) -> dict[str, Any]:
    """θ per condition for `--gate`: Youden's J of the listening P(yield) on `split`'s scored frames where the
    interlocutor holds the floor (target: a hand-over, i.e. the floor coming to self, within the horizon)."""
    pred = predict(run, corpus, split, device=device, progress=progress)
    sel = pred.m & (pred.holder == 0)
    y = pred.y[sel]
    if y.size == 0 or y.min() == y.max():
        raise FaceturnError(
            f"{corpus}: split {split!r} has no scored frames of both classes where the interlocutor holds the floor: "
            "θ for --gate cannot be chosen there"
        )
    return {
        "face": best_threshold(y, pred.p_face[sel]),
        "zeroed": best_threshold(y, pred.require_zeroed("--gate")[sel]),
        "split": split,
        "n_frames": int(y.size),
        "rule": "Youden's J of the listening P(yield) on scored frames where the interlocutor holds the floor",
    }


def talk(
    run: str | Path,
    corpus: str | Path,
    split: str = "test",
    config: TalkConfig = TalkConfig(),
    *,
    gate: bool = False,
    device: str = "cpu",
    progress: bool = True,
    allow_older: bool = False,
) -> Talk:
    """Let a trained model talk against every conversation of `split` (see the module docstring) → Talk."""
    ckpt = resolve_checkpoint(run, allow_older=allow_older)
    model, train_cfg = load_model(ckpt, device=device)
    if train_cfg.loss.audio_weight == 0:
        raise FaceturnError(
            f"{ckpt}: trained with loss.audio_weight = 0, so its audio heads (the depth transformer) never learned "
            "to talk; step 4 needs a run trained with the audio loss"
        )
    if gate and train_cfg.loss.yield_weight == 0:
        raise FaceturnError(
            f"{ckpt}: --gate needs a trained yield head, but this run was trained with loss.yield_weight = 0 (a "
            "vanilla model); gate an aux model"
        )
    corpus_fingerprint = fingerprint(corpus)
    store = Corpus(corpus)
    ids = store.ids(split)
    if not ids:
        raise CorpusError(f"{store.root}: no conversations in split {split!r}")
    labels_cfg = train_cfg.labels
    reader = fit_reader(store, config.voice, labels_cfg.voiced_min_fraction)
    reader_scores = score_reader(reader, store, split, n_resamples=config.resamples, seed=config.seed)
    thresholds = gate_thresholds(ckpt, corpus, config.gate_split, device=device, progress=progress) if gate else None

    limit = duration_to_frames(config.max_seconds) if config.max_seconds > 0 else None
    convs = []  # per conversation: its arrays cut to the talked frames
    for conv_id in ids:
        conv = store.load(conv_id)
        n = conv.codes.shape[2] if limit is None else min(conv.codes.shape[2], limit)
        va = np.asarray(conv.va[:, :n], np.float32)
        convs.append({"codes": np.asarray(conv.codes[:, :, :n], np.int64), "face": np.asarray(conv.face[:, :n],
                      np.float32), "present": np.asarray(conv.face_present[:, :n]) > 0, "va": va,
                      "labels": turn_labels(va, labels_cfg), "n": n})  # fmt: skip
    t_max = max(c["n"] for c in convs)
    pairs = [(i, s) for i in range(len(convs)) for s in (0, 1)]
    runs = ([{"sampling": "greedy", "seed": None, **asdict(GREEDY)}] if config.greedy else []) + [
        {"sampling": "moshi", "seed": s, **asdict(MOSHI_SAMPLING)} for s in config.seeds
    ]
    conditions = [(face, gated) for gated in ([False, True] if gate else [False]) for face in (True, False)]
    text = reader.has_text
    rows: dict[str, list[np.ndarray]] = {k: [] for k in _ARRAYS if not k.startswith(("corpus_", "event_"))}
    rows.pop("conversation_frames")
    batches = [(r, pairs[i : i + config.batch_size]) for r in range(len(runs))
               for i in range(0, len(pairs), config.batch_size)]  # fmt: skip
    for r, chunk in tqdm(batches, desc=f"talk {split}", unit="batch", disable=not progress):
        spec = runs[r]
        sampling = GREEDY if spec["sampling"] == "greedy" else MOSHI_SAMPLING
        b = len(chunk)
        uniforms = None
        if spec["seed"] is not None:  # one stream per (seed, conversation, perspective), shared by its conditions
            streams = [np.random.default_rng([int(spec["seed"]), i, s]).random((t_max + 1, 1 + N_CODEBOOKS))
                       for i, s in chunk]  # fmt: skip
            uniforms = torch.from_numpy(np.stack(streams).astype(np.float32))
        other = torch.full((b, N_CODEBOOKS, t_max), -1, dtype=torch.long)
        face = torch.zeros(b, t_max, N_FACE)
        present = torch.zeros(b, t_max)
        other_active = torch.zeros(b, t_max, dtype=torch.bool)
        for j, (i, s) in enumerate(chunk):
            c = convs[i]
            n = c["n"]
            other[j, :, :n] = torch.from_numpy(c["codes"][1 - s])
            face[j, :n] = torch.from_numpy(c["face"][1 - s])
            present[j, :n] = torch.from_numpy(c["present"][1 - s].astype(np.float32))
            other_active[j, :n] = torch.from_numpy(c["va"][1 - s] >= labels_cfg.voiced_min_fraction)
        k = len(conditions)
        shown = torch.tensor([f for f, _ in conditions]).repeat_interleave(b)  # [k·b] face as given
        gated = torch.tensor([g for _, g in conditions]).repeat_interleave(b)
        floor_gate = None
        if gate:
            theta = torch.tensor([thresholds["face" if f else "zeroed"] if g else math.nan for f, g in conditions])
            floor_gate = FloorGate(theta.repeat_interleave(b), other_active.repeat(k, 1),
                                   torch.from_numpy(reader.silence_tokens), train_cfg.loss.text_pad_id)  # fmt: skip
        gen = generate(
            model, other.repeat(k, 1, 1).to(device), (face.repeat(k, 1, 1) * shown[:, None, None]).to(device),
            (present.repeat(k, 1) * shown[:, None]).to(device), sampling, text=text,
            uniforms=None if uniforms is None else uniforms.repeat(k, 1, 1).to(device), gate=floor_gate,
        )  # fmt: skip
        for q in range(k * b):
            i, s = chunk[q % b]
            n = convs[i]["n"]
            codes = gen.codes[q].numpy().astype(np.int16)
            codes[:, n:] = -1
            row_text = gen.text[q].numpy().astype(np.int32)
            row_text[n:] = -1
            voice = np.zeros(t_max, np.float32)
            voice[:n] = reader.read(codes[:, :n], row_text[:n] if text else None)
            p_yield = np.zeros(t_max, np.float32)
            p_yield[:n] = gen.p_yield[q, :n].numpy()
            held = np.zeros(t_max, bool)
            if floor_gate is not None:
                held[:n] = floor_gate.held[q, :n].numpy()
            for key, value in (("codes", codes), ("text", row_text), ("voice", voice), ("p_yield", p_yield),
                               ("held", held), ("row_conversation", i), ("row_self", s), ("row_face", bool(shown[q])),
                               ("row_gated", bool(gated[q])), ("row_run", r), ("row_frames", n)):  # fmt: skip
                rows[key].append(np.asarray(value))
    arrays = {k: np.stack(v).astype(_dtype(k)) for k, v in rows.items()}
    arrays.update(_corpus_arrays(convs, t_max))
    meta = {
        "format": FORMAT,
        "corpus": str(Path(corpus).resolve()),
        "corpus_fingerprint": corpus_fingerprint,
        "train_corpus": read_json(ckpt, CONFIG_FILE).get("corpus"),
        "split": split,
        "checkpoint": str(ckpt.resolve()),
        "conversations": list(ids),
        "yield_weight": train_cfg.loss.yield_weight,
        "audio_weight": train_cfg.loss.audio_weight,
        "zero_groups": sorted(model.cfg.zero_groups),
        "train_config": to_dict(train_cfg),
        "labels": to_dict(labels_cfg),
        "config": to_dict(config),
        "runs": runs,
        "text": text,
        "gate": thresholds,
        "reader": reader_scores,
        "talked_frames": limit,
    }
    return Talk(arrays=arrays, meta=meta)


_DTYPES = {
    "codes": np.int16,
    "voice": np.float32,
    "p_yield": np.float32,
    "held": bool,
    "row_face": bool,
    "row_gated": bool,
    "row_self": np.int8,
    "row_run": np.int16,
}  # fmt: skip  (others: int32)


def _dtype(key: str) -> type:
    return _DTYPES.get(key, np.int32)


def _corpus_arrays(convs: list[dict[str, Any]], t_max: int) -> dict[str, np.ndarray]:
    """The recording's voice activity and floor per conversation, and the interlocutor's events per perspective."""
    c = len(convs)
    active = np.zeros((c, 2, t_max), bool)
    floor = np.full((c, t_max), -1, np.int8)
    events: list[tuple[int, int, int, int, int]] = []
    for i, conv in enumerate(convs):
        n, lab = conv["n"], conv["labels"]
        active[i, :, :n] = conv["va"] >= lab.config.voiced_min_fraction
        floor[i, :n] = lab.floor
        events += [(i, s, kind, a, b) for s in (0, 1) for kind, a, b in interlocutor_events(lab, s)]
    ev = np.asarray(events, np.int64).reshape(-1, 5)
    return {
        "corpus_active": active,
        "corpus_floor": floor,
        "conversation_frames": np.asarray([conv["n"] for conv in convs], np.int32),
        "event_conversation": ev[:, 0].astype(np.int32),
        "event_self": ev[:, 1].astype(np.int8),
        "event_kind": ev[:, 2].astype(np.int8),
        "event_start": ev[:, 3].astype(np.int32),
        "event_stop": ev[:, 4].astype(np.int32),
    }
