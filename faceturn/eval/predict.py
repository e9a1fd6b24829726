"""Per-frame predictions, written once; every metric and figure is a pure function of this file.

For every conversation of a split and both perspectives, the model reads the conversation in windows of its
training length with half-window overlap (each frame but the first half-window of a conversation is predicted with
at least half a window of context), once with the face as given and once with the whole face zeroed (values 0,
face_present 0 — the learned missing vector, as in training's face dropout). The checkpoint's own `zero_groups`
apply in both; groups zeroed post hoc are an argument of the model's forward pass, so the loaded model is never
altered. The file is an `.npz` of plain arrays (read with `allow_pickle=False`) plus a JSON header naming the corpus,
split, checkpoint and configs, so `evaluate` can refuse a file that does not match what it is asked about; its zero
sets (`zero_groups` as trained, `eval_zero_groups` as evaluated) are sorted lists of face group names.

Provenance and integrity: the header records the corpus' content fingerprint (`corpus_fingerprint`, the sha256 of
its manifest: `faceturn.store.fingerprint`), and whatever pairs the file with a corpus (`Predictions.corpus_root`)
refuses another corpus, or the same folder changed since. It also holds a `checksum`, the sha256 of the rest of the
header and of every array, verified on load, so a damaged or edited file is refused instead of read as other data.
Files of the older format (`faceturn-predictions/1`, without either) are refused with a request to re-run predict.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from faceturn.checkpoint import CONFIG_FILE, load_model, read_json, resolve_checkpoint
from faceturn.config import to_dict
from faceturn.data import WindowDataset
from faceturn.errors import FaceturnError
from faceturn.io import PREDICTION_FILE, atomic_write_bytes, file_kind
from faceturn.schema import group_indices
from faceturn.store import fingerprint

FORMAT = "faceturn-predictions/2"
OLD_FORMATS = ("faceturn-predictions/1",)  # no corpus fingerprint, no checksum: refused, re-run predict
CHECKSUM_KEY = "checksum"


@dataclass
class Predictions:
    """Per-frame rows; one row per (conversation, perspective, frame)."""

    p_face: np.ndarray  # [N] float32 P(yield) with the face as given
    p_zeroed: np.ndarray | None  # [N] float32 P(yield) with the whole face zeroed (None: `predict --no-zeroed`)
    y: np.ndarray  # [N] uint8 turn-yield target
    m: np.ndarray  # [N] bool scored frame
    holder: np.ndarray  # [N] int8 1 self holds the floor, 0 the interlocutor, -1 nobody
    conversation: np.ndarray  # [N] int32 index into meta["conversations"]
    perspective: np.ndarray  # [N] int8 which participant is self
    frame: np.ndarray  # [N] int32 frame index in the conversation
    meta: dict[str, Any]
    hidden_face: np.ndarray | None = None  # [N, D] float16 temporal output (for probes), on request
    hidden_zeroed: np.ndarray | None = None
    source: str | None = None  # the file these were loaded from (for messages)

    @property
    def label(self) -> str:
        """How messages name these predictions: the file, else the checkpoint that made them."""
        return self.source or f"predictions of {self.meta.get('checkpoint')}"

    def save(self, path: str | Path) -> None:
        """Write the file atomically, with the header's `checksum`. Predictions built by hand whose header names a
        corpus but no `corpus_fingerprint` get the fingerprint of that corpus as it is now."""
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        for k in _OPTIONAL:
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        meta = json.loads(json.dumps({k: v for k, v in self.meta.items() if k != CHECKSUM_KEY}))  # as read back
        if "corpus_fingerprint" not in meta and isinstance(meta.get("corpus"), str):
            meta["corpus_fingerprint"] = fingerprint(meta["corpus"])
        meta[CHECKSUM_KEY] = array_checksum(meta, arrays)
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        """Read a prediction file; anything but an intact file of this format is a FaceturnError naming the file."""
        path = Path(path)
        data = read_npz(path)
        if "meta" not in data:
            raise FaceturnError(f"{path}: not a faceturn prediction file (an .npz without its header, `meta`)")
        meta = _read_meta(path, data.pop("meta"))
        _check_arrays(path, data, meta)
        if meta.get("zeroed", True) != ("p_zeroed" in data):
            raise FaceturnError(f"{path}: the header and the arrays disagree on whether p_zeroed was written")
        if array_checksum(meta, data) != meta[CHECKSUM_KEY]:
            raise FaceturnError(
                f"{path}: damaged prediction file: its checksum does not match the header and arrays (changed or "
                "corrupted since `faceturn predict` wrote it); re-run `faceturn predict`"
            )
        return cls(meta=meta, source=str(path), **{"p_zeroed": None, **data})

    @staticmethod
    def peek_meta(path: str | Path) -> dict[str, Any] | None:
        """The header of a prediction file without reading or checking its arrays, or None when it has none."""
        return peek_npz_meta(path)

    def corpus_root(self, corpus: str | Path | None = None) -> Path:
        """The corpus folder these predictions pair with, `corpus` or (None) the one the header names, after checking
        that it is the corpus they were made from: its manifest fingerprint must be the recorded one (the folder may
        have moved). Another corpus, or the same folder changed since, is refused naming both."""
        return made_from_corpus(self.meta, self.label, corpus)

    def require_zeroed(self, what: str) -> np.ndarray:
        """P(yield) with the face zeroed, or a clear error for a file written without it."""
        if self.p_zeroed is None:
            raise FaceturnError(
                f"predictions of {self.meta.get('checkpoint')} were written with --no-zeroed (face as given only); "
                f"{what} needs P(yield) with the face zeroed: run `faceturn predict` without --no-zeroed"
            )
        return self.p_zeroed


_ARRAYS = ("p_face", "y", "m", "holder", "conversation", "perspective", "frame")  # p_zeroed: unless --no-zeroed
_OPTIONAL = ("p_zeroed", "hidden_face", "hidden_zeroed")
# array -> (numpy dtype kinds allowed, dimensions): what consumers may rely on once a file loads
_SPECS: dict[str, tuple[str, int]] = {
    "p_face": ("f", 1), "p_zeroed": ("f", 1), "y": ("biu", 1), "m": ("b", 1), "holder": ("iu", 1),
    "conversation": ("iu", 1), "perspective": ("iu", 1), "frame": ("iu", 1), "hidden_face": ("f", 2),
    "hidden_zeroed": ("f", 2),
}  # fmt: skip
# every way numpy and zipfile report a damaged archive
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, struct.error,
                KeyError, OverflowError, RecursionError, TypeError, RuntimeError)  # fmt: skip


def _short(fp: str) -> str:
    return fp[:19] + "…" if len(fp) > 20 else fp


def made_from_corpus(
    meta: Mapping[str, Any],
    label: str,
    corpus: str | Path | None = None,
    command: str = "faceturn predict",
    noun: str = "predictions",
) -> Path:
    """The corpus folder a file made by `command` pairs with (its header's `corpus` and `corpus_fingerprint`):
    `corpus`, or (None) the folder the header names, once its manifest fingerprint is the recorded one. Another
    corpus, or the same folder changed since, is refused naming both (`label` names the file, `noun` what it holds:
    "predictions", "talk")."""
    made_from = meta.get("corpus")
    recorded = meta.get("corpus_fingerprint")
    if not isinstance(made_from, str) or not isinstance(recorded, str):
        raise FaceturnError(
            f"{label}: the header records no corpus fingerprint (written by an older faceturn); re-run `{command}`"
        )
    if corpus is None and not Path(made_from).is_dir():
        raise FaceturnError(
            f"{label}: made from corpus {made_from}, which is not there any more; pass --corpus with the folder's "
            "new place"
        )
    root = Path(made_from if corpus is None else corpus)
    now = fingerprint(root)
    these = f"these {noun} were" if noun.endswith("s") else f"this {noun} was"
    if now != recorded:
        if root.resolve() == Path(made_from).resolve():
            raise FaceturnError(
                f"{label}: the corpus {root} changed since {these} made from it (manifest {_short(recorded)} then, "
                f"{_short(now)} now); re-run `{command}`"
            )
        raise FaceturnError(
            f"{label}: {noun} made from corpus {made_from} (manifest {_short(recorded)}), not from {root} (manifest "
            f"{_short(now)}): a different corpus"
        )
    return root


def peek_npz_meta(path: str | Path) -> dict[str, Any] | None:
    """The JSON header (`meta`) of a faceturn .npz file (predictions, talk) without reading or checking its arrays, or
    None when it has none."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
    except Exception:  # anything unreadable simply has no header to show
        return None
    return meta if isinstance(meta, dict) else None


def array_checksum(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """The sha256 ("sha256:<hex>") of the header (canonical JSON, without the checksum) and of every array's name,
    dtype, shape and bytes, in name order."""
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != CHECKSUM_KEY}, sort_keys=True).encode())
    for name in sorted(k for k in arrays if k != "meta"):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return f"sha256:{h.hexdigest()}"


def read_npz(path: Path, kind: str = PREDICTION_FILE, command: str = "faceturn predict") -> dict[str, np.ndarray]:
    """The arrays of an .npz of `kind` that `command` writes, after making sure it is one: any other file is named
    for what it is; pickled objects are never read."""
    found = file_kind(path)  # OSError (missing, a folder, unreadable) goes to the CLI, which names the path
    expected = f"expected the .npz that `{command}` writes"
    if found != kind and not found.startswith(("damaged zip", "NumPy archive", "zip archive")):
        what = "its content is not an .npz archive" if found == "file" else f"it is a {found}"
        raise FaceturnError(f"{path}: not a readable {kind}: {what} ({expected})")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except _READ_ERRORS as e:
        if "allow_pickle" in str(e):
            raise FaceturnError(
                f"{path}: not a readable {kind}: it holds pickled Python objects, which faceturn never reads "
                f"({expected})"
            ) from None
        why = " ".join(str(e).split())[:300]
        raise FaceturnError(f"{path}: not a readable {kind}: damaged ({type(e).__name__}: {why})") from None


def _read_meta(path: Path, raw: np.ndarray) -> dict[str, Any]:
    try:
        meta = json.loads(raw.tobytes().decode())
    except (ValueError, RecursionError) as e:
        raise FaceturnError(f"{path}: damaged prediction file: its header is not JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise FaceturnError(f"{path}: damaged prediction file: its header is not a JSON object")
    fmt = meta.get("format")
    if fmt in OLD_FORMATS:
        raise FaceturnError(
            f"{path}: written by an older faceturn (format {fmt}: no corpus fingerprint, no checksum); re-run "
            "`faceturn predict` to make it again"
        )
    if fmt != FORMAT:
        raise FaceturnError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
    for key in ("corpus", "corpus_fingerprint", "split", CHECKSUM_KEY):
        if not isinstance(meta.get(key), str):
            raise FaceturnError(f"{path}: damaged prediction file: header {key} must be text, got {meta.get(key)!r}")
    ids = meta.get("conversations")
    if not (isinstance(ids, list) and all(isinstance(c, str) for c in ids)):
        raise FaceturnError(f"{path}: damaged prediction file: header conversations must be a list of ids")
    for k in ("zero_groups", "eval_zero_groups"):
        groups = meta.get(k, [])
        if not (isinstance(groups, list) and all(isinstance(g, str) for g in groups)):
            raise FaceturnError(f"{path}: header {k} must be a list of face group names, got {groups!r}")
    if not isinstance(meta.get("train_config", {}), dict):
        raise FaceturnError(f"{path}: damaged prediction file: header train_config must be an object")
    return meta


def _check_arrays(path: Path, data: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Names, dtypes, shapes and value ranges: what every consumer relies on."""
    missing = [k for k in _ARRAYS if k not in data]
    if missing:
        raise FaceturnError(f"{path}: not a faceturn prediction file (missing {missing})")
    unknown = sorted(set(data) - set(_ARRAYS) - set(_OPTIONAL))
    if unknown:
        raise FaceturnError(f"{path}: not a faceturn prediction file (unknown arrays {unknown})")
    n = data["p_face"].shape[0] if data["p_face"].ndim else -1
    for k, a in data.items():
        kinds, ndim = _SPECS[k]
        if a.dtype.kind not in kinds or a.ndim != ndim:
            raise FaceturnError(f"{path}: array {k} is {a.dtype} with {a.ndim} dimensions, not what predict writes")
        if a.shape[0] != n:
            raise FaceturnError(f"{path}: {k} has {a.shape[0]} rows, p_face {n}")
    if data.get("hidden_face") is not None and data.get("hidden_zeroed") is not None:
        if data["hidden_face"].shape != data["hidden_zeroed"].shape:
            raise FaceturnError(f"{path}: hidden_face and hidden_zeroed differ in shape")
    for k in ("p_face", "p_zeroed"):
        if k in data and not np.isfinite(data[k]).all():
            raise FaceturnError(f"{path}: {int((~np.isfinite(data[k])).sum())} non-finite values in {k}")
        if k in data and data[k].size and not (data[k].min() >= 0 and data[k].max() <= 1):
            raise FaceturnError(f"{path}: {k} holds values outside [0, 1]")
    ranges = {"y": (0, 1), "holder": (-1, 1), "perspective": (0, 1), "frame": (0, np.iinfo(np.int64).max),
              "conversation": (0, len(meta["conversations"]) - 1)}  # fmt: skip
    for k, (lo, hi) in ranges.items():
        a = data[k]
        if a.size and not (int(a.min()) >= lo and int(a.max()) <= hi):
            raise FaceturnError(f"{path}: array {k} holds values outside [{lo}, {hi}]")


def prediction_meta(
    corpus: str | Path,
    split: str,
    ckpt: Path,
    train_cfg: Any,
    conversations: Sequence[str],
    *,
    zeroed: bool,
    corpus_fingerprint: str | None = None,
) -> dict[str, Any]:
    """The header of a prediction file (without the evaluated zero set): what made it, from what, and how."""
    return {
        "format": FORMAT,
        "corpus": str(Path(corpus).resolve()),
        "corpus_fingerprint": corpus_fingerprint or fingerprint(corpus),
        "train_corpus": read_json(ckpt, CONFIG_FILE).get("corpus"),  # what the model was trained on (recorded only)
        "split": split,
        "checkpoint": str(Path(ckpt).resolve()),
        "conversations": list(conversations),
        "window_frames": train_cfg.data.window_frames,
        "zero_groups": sorted(set(train_cfg.model.zero_groups)),  # as trained
        "face_dropout": train_cfg.data.face_dropout,
        "yield_weight": train_cfg.loss.yield_weight,
        "train_config": to_dict(train_cfg),
        "zeroed": zeroed,  # whether p_zeroed was computed
    }


def window_starts(n_frames: int, window_frames: int) -> list[tuple[int, int]]:
    """(start, first frame kept) pairs tiling a conversation with half-window overlap; every frame kept once."""
    if n_frames <= window_frames:
        return [(0, 0)]
    hop = max(1, window_frames // 2)
    out = [(0, 0)]
    start = hop
    while start + window_frames < n_frames:
        out.append((start, start + window_frames - hop))
        start += hop
    last = n_frames - window_frames
    out.append((last, out[-1][0] + window_frames))  # the final window keeps whatever the previous ones did not
    return out


def predict(
    run: str | Path, corpus: str | Path, split: str, *, posthoc_zero_groups: Iterable[str] = (), **options: Any
) -> Predictions:
    """Run a trained model over every conversation of a split, both perspectives, face as given and zeroed
    (`options`: those of `predict_zero_sets`).

    `posthoc_zero_groups` zeroes more face groups at evaluation only, inside the face encoder exactly as training's
    `zero_groups` would (before the normalization). Such predictions carry `meta["valid"] = False` unless the
    checkpoint was trained with exactly that zero set: the model never saw those inputs, so a drop in AUC mixes the
    group's information with the distribution shift (with `layernorm`, zeroing large channels rescales all others).
    """
    return predict_zero_sets(run, corpus, split, [posthoc_zero_groups], **options)[0]


@torch.no_grad()
def predict_zero_sets(
    run: str | Path,
    corpus: str | Path,
    split: str,
    zero_sets: Sequence[Iterable[str]],
    *,
    batch_size: int = 16,
    hidden: bool = False,
    device: str = "cpu",
    progress: bool = True,
    zeroed: bool = True,
    allow_older: bool = False,
) -> list[Predictions]:
    """`predict` for several post-hoc zero sets (face group names) in one pass over the data: one Predictions per
    set, sharing the face-zeroed forward pass (with the whole face absent, which groups are zeroed makes no
    difference). `zeroed=False` skips that pass (p_zeroed None): what the attribution's left-out models need, at half
    the cost."""
    if any(isinstance(z, str) for z in zero_sets):
        raise TypeError(f"each zero set is a collection of face group names, not one string: {list(zero_sets)}")
    ckpt = resolve_checkpoint(run, allow_older=allow_older)
    corpus_fingerprint = fingerprint(corpus)  # the corpus as read now, before the pass over it
    model, train_cfg = load_model(ckpt, device=device)
    trained_zero = sorted(set(model.cfg.zero_groups))
    eval_zero = [sorted(set(trained_zero).union(z)) for z in zero_sets]  # as evaluated: trained plus post hoc
    for z in eval_zero:
        group_indices(z)  # unknown names fail before the pass over the data
    window = train_cfg.data.window_frames
    ds = WindowDataset(corpus, split, window, event_config=train_cfg.labels)
    jobs = []  # (conversation index, self speaker, start, first kept frame)
    for ci in range(len(ds)):
        for s in (0, 1):
            jobs += [(ci, s, start, keep) for start, keep in window_starts(int(ds.n_frames[ci]), window)]
    shared: dict[str, list[np.ndarray]] = {k: [] for k in (*_ARRAYS, "p_zeroed", "hidden_zeroed")}
    per_set: list[dict[str, list[np.ndarray]]] = [{"p_face": [], "hidden_face": []} for _ in zero_sets]
    for i in tqdm(range(0, len(jobs), batch_size), desc=f"predict {split}", disable=not progress, unit="batch"):
        chunk = jobs[i : i + batch_size]
        batch = ds.batch([(ci, s, start, False) for ci, s, start, _ in chunk]).to(device)
        outs = [model(*batch.model_inputs(), audio=False, zero_groups=z) for z in eval_zero]
        if zeroed:
            out_z = model(*batch.without_face().model_inputs(), audio=False)
            p_zero = torch.sigmoid(out_z.yield_logits.float()).cpu().numpy()
        p_faces = [torch.sigmoid(o.yield_logits.float()).cpu().numpy() for o in outs]
        for j, (ci, s, start, keep) in enumerate(chunk):
            n = int(batch.valid[j].sum())
            sel = slice(keep - start, n)
            frames = np.arange(keep, start + n, dtype=np.int32)
            if zeroed:
                shared["p_zeroed"].append(p_zero[j, sel])
            shared["y"].append(batch.y[j, sel].cpu().numpy().astype(np.uint8))
            shared["m"].append(batch.m[j, sel].cpu().numpy().astype(bool))
            shared["holder"].append(batch.holder[j, sel].cpu().numpy().astype(np.int8))
            shared["conversation"].append(np.full(frames.size, ci, np.int32))
            shared["perspective"].append(np.full(frames.size, s, np.int8))
            shared["frame"].append(frames)
            for k, out in enumerate(outs):
                per_set[k]["p_face"].append(p_faces[k][j, sel])
                if hidden:
                    per_set[k]["hidden_face"].append(out.hidden[j, sel].float().cpu().numpy().astype(np.float16))
            if hidden and zeroed:
                shared["hidden_zeroed"].append(out_z.hidden[j, sel].float().cpu().numpy().astype(np.float16))
    meta = prediction_meta(corpus, split, ckpt, train_cfg, ds.ids, zeroed=zeroed,
                           corpus_fingerprint=corpus_fingerprint)  # fmt: skip
    arrays = {k: np.concatenate(v) for k, v in shared.items() if v}
    results = []
    for z, cols in zip(eval_zero, per_set, strict=True):
        own = {k: np.concatenate(v) for k, v in cols.items() if v}
        # eval_zero_groups: as evaluated (trained plus post hoc); valid: the model was trained with exactly that set
        m = {**meta, "eval_zero_groups": z, "valid": z == trained_zero}
        fields = {k: own.get(k, arrays.get(k)) for k in (*_ARRAYS, "p_zeroed", "hidden_face", "hidden_zeroed")}
        results.append(Predictions(meta=m, **fields))
    return results
